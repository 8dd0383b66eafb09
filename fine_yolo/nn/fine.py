"""FINE: Feature Interaction NEtwork (Lee, Lee & Kang, arXiv 2606.14005, §4 and Appendix 0.C).

FINE refines the low-level map of a top-down fusion stage with the context of the high-level map *before* fusion::

    F_high  = Conv1x1(S_high)                      eq. 10 (only when c_high != c_low)
    F^_high = AvgPool(F_high, k)                   eq. 4  (AATS, non-overlapping)
    F^_low  = AvgPool(F_low, r*k)                  eq. 4
    Q = F^_low W_Q,  K = F^_high W_K,  V = F^_high W_V            eq. 5
    head_i = softmax(Q_i K_i^T / sqrt(d)) V_i,  d = 16            eq. 6
    M^ = Reshape(Concat(head_1..head_h) W_O)   (H/rk x W/rk x C)   eq. 7
    M  = Up_nearest(M^, rk)                                        eq. 8
    F_low_aligned = F_low * M + F_low                              eq. 9

Choices where the paper is silent, or where we compute the same maths more cheaply:

* **Pool, then project (eq. 10 and 4).** A 1x1 convolution and non-overlapping average pooling are both linear and
  act on different axes, so ``AvgPool(Conv1x1(x)) == Conv1x1(AvgPool(x))`` exactly (the bias included, since the
  average of a constant is that constant). We pool first: the projection then runs on k^2 fewer pixels.
* **W_Q, W_K, W_V, W_O are 1x1 convolutions with bias** on the pooled maps: the same C x C matrices as eq. 5/7,
  applied per token, without a flatten/transpose round trip before the projections. W_K and W_V share one
  convolution with 2C outputs (one GEMM instead of two; the weights are the two C x C blocks).
* **The residual is folded before upsampling (eq. 8-9).** ``F*M + F == F*(1 + M)`` and nearest upsampling commutes
  with adding 1, so we add 1 on the coarse map and do one full-resolution multiply. With the identity start below,
  ``1 + M`` is exactly 1.0, so the output equals ``low`` bit for bit.
* **Attention** uses ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels where torch has them). The
  TorchScript ONNX exporter decomposes it into MatMul/Softmax with the scale applied to Q and K before the first
  MatMul — the pattern TensorRT's fused-attention pass matches (head dim 16, a multiple of 8). No ONNX ``Attention``,
  ``Einsum``, sequence or control-flow ops are produced.
* **Identity start** (``zero_init=True``, the default): W_O and its bias start at zero, so M = 0 and FINE returns
  ``low`` exactly. A FINE model built from a baseline checkpoint therefore predicts exactly what the baseline
  predicts before training, and fine-tuning starts from the baseline's accuracy instead of from a perturbed network.
  The gradient still reaches every parameter after the first step (W_O receives it at once; the others once W_O is
  non-zero). ``zero_init=False`` keeps PyTorch's default initialisation of W_O instead.
* **Map sizes that r*k does not divide.** Pooling is floor-mode (``ceil_mode=False``, no padding: what TensorRT
  implements identically), so the trailing ``H mod rk`` rows and ``W mod rk`` columns of ``low`` (``H_high mod k`` of
  ``high``) do not fall in any token. Their modulation is zero: M is upsampled by exactly rk and zero-padded on the
  bottom/right, so those pixels pass through unchanged. (A Pad op appears in an exported graph only when the traced
  size needs it; YOLO feature maps at stride multiples never do.)

Shapes: ``low`` is (B, c_low, H, W); ``high`` is (B, c_high, H/r, W/r) (any size whose pooled token grid is
non-empty is accepted by the block; the ultralytics glue checks the r x relation at model build time); the output is
(B, c_low, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FINE"]


class FINE(nn.Module):
    """Alignment-aware cross-level attention that modulates ``low`` with the context of ``high`` (see module doc).

    Args:
        c_low: channels C of the low-level map (queries; the output has the same channels).
        c_high: channels of the high-level map; projected to ``c_low`` by a 1x1 convolution when different (eq. 10).
        k: AATS base kernel on the high-level map (paper: 1 at P4<-P5, 2 at P3<-P4).
        r: alignment ratio; the low-level kernel is ``r*k`` (paper: 2, the stride ratio of adjacent levels).
        head_dim: channels per attention head d; ``h = c_low / head_dim`` heads (paper: 16).
        zero_init: start W_O at zero so that FINE is the identity (exact warm start from a baseline).
    """

    def __init__(
        self, c_low: int, c_high: int, k: int = 1, r: int = 2, head_dim: int = 16, zero_init: bool = True
    ) -> None:
        super().__init__()
        for name, value in (("c_low", c_low), ("c_high", c_high), ("k", k), ("r", r), ("head_dim", head_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"FINE {name} must be a positive integer, got {value!r}")
        if c_low % head_dim:
            raise ValueError(f"FINE c_low={c_low} is not divisible by head_dim={head_dim}")
        self.c_low, self.c_high, self.k, self.r, self.head_dim = c_low, c_high, k, r, head_dim
        self.heads = c_low // head_dim
        # eq. 10: plain 1x1 projection of the high-level map into the low-level channel space (no BN, no activation).
        self.proj_high = nn.Conv2d(c_high, c_low, 1) if c_high != c_low else nn.Identity()
        # eq. 4: AATS, parameter-free non-overlapping average pooling (floor mode; TensorRT-exact).
        self.pool_high = nn.AvgPool2d(k) if k > 1 else nn.Identity()
        self.pool_low = nn.AvgPool2d(r * k)
        # eq. 5 / 7: C x C projections with bias, as 1x1 convolutions on the token maps. K and V share one conv.
        self.q = nn.Conv2d(c_low, c_low, 1)
        self.kv = nn.Conv2d(c_low, 2 * c_low, 1)
        self.out = nn.Conv2d(c_low, c_low, 1)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def extra_repr(self) -> str:
        return f"c_low={self.c_low}, c_high={self.c_high}, k={self.k}, r={self.r}, heads={self.heads}"

    def modulation(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Return the coarse modulation map M^ of eq. 7, shape (B, C, H // rk, W // rk)."""
        rk = self.r * self.k
        if min(low.shape[-2:]) < rk or min(high.shape[-2:]) < self.k:
            raise ValueError(
                f"FINE needs at least one token: low {tuple(low.shape[-2:])} pooled by r*k={rk}, "
                f"high {tuple(high.shape[-2:])} pooled by k={self.k}"
            )
        low_t = self.pool_low(low)  # (B, C, h, w), h = H // rk
        high_t = self.proj_high(self.pool_high(high))  # (B, C, hh, ww), hh = H_high // k
        b, c, h, w = low_t.shape
        n_high = high_t.shape[-2] * high_t.shape[-1]
        # (B, C, h, w) -> (B, heads, N, d): channel c belongs to head c // d, as in Concat(head_1..head_h).
        q = self.q(low_t).view(b, self.heads, self.head_dim, h * w).transpose(-1, -2)
        k, v = self.kv(high_t).view(b, 2, self.heads, self.head_dim, n_high).transpose(-1, -2).unbind(1)
        attn = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N_low, d), eq. 6 with scale 1/sqrt(d)
        return self.out(attn.transpose(-1, -2).reshape(b, c, h, w))  # eq. 7

    def forward(self, low: torch.Tensor | list[torch.Tensor], high: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``low * M + low`` (eq. 9) with M the upsampled modulation map (eq. 8); same shape as ``low``.

        Also callable as ``forward([low, high])``: ultralytics passes a multi-input layer its inputs as one list.
        """
        if high is None:
            low, high = low
        rk = self.r * self.k
        gain = self.modulation(low, high) + 1.0  # 1 + M^, folded before upsampling (see module doc)
        gain = F.interpolate(gain, scale_factor=rk, mode="nearest")  # eq. 8
        pad_h, pad_w = low.shape[-2] - gain.shape[-2], low.shape[-1] - gain.shape[-1]
        if pad_h or pad_w:  # trailing rows/cols outside every token: gain 1 (M = 0), see module doc
            gain = F.pad(gain, (0, pad_w, 0, pad_h), value=1.0)
        return low * gain
