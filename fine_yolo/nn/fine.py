"""FINE: Feature Interaction NEtwork (Lee, Lee & Kang, arXiv 2606.14005, §4 and Appendix C).

FINE refines the low-level map of a top-down fusion stage with the context of the high-level map before fusion.
C = ``c_low``, d = ``head_dim`` (16, :func:`head_dim_for`), h = C / d heads, rk = r * k, N = (H / rk)(W / rk) tokens::

    F_high  = Conv1x1(S_high)                          eq. 10  (B, C, H/r, W/r), only when c_high != C
    F^_high = AvgPool(F_high, k)                       eq. 4   (B, C, H/rk, W/rk)
    F^_low  = AvgPool(F_low, rk)                       eq. 4   (B, C, H/rk, W/rk)
    Q = F^_low W_Q + b_Q,  K = F^_high W_K,  V = F^_high W_V         eq. 5   tokens (B, N, C)
    head_i = softmax(Q_i K_i^T / sqrt(d)) V_i                          eq. 6   (B, N, d), i = 1..h
    M^ = Reshape(Concat(head_1..head_h) W_O + b_O)                     eq. 7   (B, C, H/rk, W/rk)
    M  = Up_nearest(M^, rk)                                            eq. 8   (B, C, H, W)
    F_low_aligned = F_low * M + F_low                                  eq. 9   (B, C, H, W)

Choices where the paper is silent (one line each):

* Pool, then project: average pooling and eq. 10 are linear on different axes, so they commute; eq. 10 runs on k^2
  fewer pixels. ``pool="max"``/``"dwconv"`` do not commute: there the high map is projected first (the paper's order).
* W_Q, W_K, W_V, W_O are 1x1 convolutions (the C x C matrices of eq. 5/7); K and V share one with 2C outputs.
* Biases: b_Q and b_O only. A K bias shifts every logit of a query equally (softmax ignores it); V's and eq. 10's
  reach the output as the constant W_O b_v, which b_O already spans.
* The residual is folded into b_O: F*M + F = F*(1 + M), nearest Up commutes with +1, so the block computes the gain
  ``1 + M^ = W_O x + (b_O + 1)`` and multiplies once.
* Identity start (``zero_init=True``): W_O = 0, b_O = 0, so M = 0 and the output is ``low`` bit for bit.
* Floor-mode pooling without padding (what TensorRT runs identically): rows/columns beyond the last whole token get
  M = 0 and pass through unchanged.
* Attention is ``F.scaled_dot_product_attention``: torch's fused CPU/GPU kernels eager; TorchScript's ONNX exporter
  writes MatMul/Softmax/MatMul with 1/sqrt(d) split over Q and K, the pattern TensorRT fuses.
* The authors' code (HyungseopLee/FINE-FPN) differs from the paper, which is followed here: it uses linear attention
  without softmax, LayerNorm + a feed-forward network after the attention, bilinear upsampling, and no ``+ F_low``.

Forms. :attr:`FINE.form` chooses how eq. 5-7 are laid out; both give the same values up to float summation order
(tested). Exporters set it: :mod:`fine_yolo.glue.export_form` for ultralytics' ``Exporter``, :func:`block_form`
elsewhere. Measurements behind both forms: docs/block_forms.md.

* ``"tokens"`` (default; eager and OpenVINO): GEMMs on token-major (B, N, C) views, so the heads reach SDPA as
  (B, h, N, d) with unit stride on d (its fused kernels), then W_O and one transpose back to NCHW. Recorded, it is
  the Transpose-MatMul-Softmax-MatMul-Transpose pattern that OpenVINO's CPU plugin fuses into one attention kernel.
* ``"conv"`` (ONNX: ONNX Runtime, TensorRT): 1x1 ``Conv`` for Q, for K/V (with eq. 10 folded in: one weight
  W_kv W_p) and for W_O, heads channel-major; ONNX Runtime keeps Conv -> Resize -> Mul in its blocked layout.

Variants for the paper's ablations (``attention=``, Table 3; ``pool=``, Table 6); the defaults are the method above:

* ``"vanilla"``: the same softmax attention over every low x every high pixel (no pooling; AATS with k = r = 1).
* ``"window"`` (Swin, 7 x 7 on the high map), ``"area"`` (YOLO12, 4 strips), ``"linear"`` (Katharopoulos et al.):
  :mod:`fine_yolo.nn.attention`, on the unpooled maps, as 1x1 convolutions in every form.
* ``pool="max"`` (``nn.MaxPool2d``) or ``"dwconv"`` (depthwise, kernel = stride, starting as the average).
  Token-free variants keep k = 1, r = 2, pool = "avg" and have :attr:`FINE.token_stride` 1 (eq. 8 is the identity).

Taps for analysis: forward hooks on the block see ``(low, high)`` and F_low_aligned; forward hooks on
``gain_tap`` (an ``nn.Identity``: one module call when nothing hooks it) see ``1 + M^`` on the token grid.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from fine_yolo.nn.attention import area_attention, linear_attention, window_attention

__all__ = ["FINE", "FORMS", "block_form", "form_for", "head_dim_for"]

ATTENTIONS = ("aats", "vanilla", "window", "area", "linear")  # paper Table 3 rows; the first is the default
POOLS = ("avg", "max", "dwconv")  # paper Table 6: Down() of eq. 4; the first is the default
FORMS = ("tokens", "conv")  # layouts of eq. 5-7 (module doc, "Forms"); the first is the eager default
ONNX_FORMATS = frozenset({"onnx", "engine", "tensorrt", "trt"})  # ultralytics formats recorded in the "conv" form
# attention types that compute something other than softmax attention over all token pairs
_LOCAL_ATTENTION = {"window": window_attention, "area": area_attention, "linear": linear_attention}
HEAD_DIM = 16  # paper §5.3.2 / Table 4: d = 16 channels per head


def head_dim_for(c_low: int) -> int:
    """The head dim d for C = ``c_low`` channels when none is given: the paper's 16 where it divides C, else the
    smallest multiple of 8 above 16 that does (yolov9m's 360 channels: 24, 15 heads; TensorRT's attention kernels
    want d a multiple of 8). ValueError when none does (C = 8, or C not a multiple of 8): give head_dim."""
    for d in range(HEAD_DIM, c_low + 1, 8):
        if c_low % d == 0:
            return d
    raise ValueError(f"FINE c_low={c_low}: neither 16 nor a larger multiple of 8 divides it; give head_dim")


class FINE(nn.Module):
    """Alignment-aware cross-level attention that modulates ``low`` with the context of ``high`` (see module doc).

    Args:
        c_low: channels C of the low-level map (queries; the output has the same channels).
        c_high: channels of the high-level map; projected to ``c_low`` by a 1x1 convolution when different (eq. 10).
        k: AATS base kernel on the high-level map (paper: 1 at P4<-P5, 2 at P3<-P4).
        r: alignment ratio; the low-level kernel is ``r*k`` (paper: 2, the stride ratio of adjacent levels).
        head_dim: channels per attention head d; ``h = c_low / head_dim`` heads (paper: 16; None:
            :func:`head_dim_for`, which is 16 wherever 16 divides C).
        attention: ``"aats"`` (the paper's method) or one of Table 3's ``"vanilla"``, ``"window"``, ``"area"``,
            ``"linear"``; those sample no tokens, so k, r and pool keep their defaults.
        pool: AATS's Down() (eq. 4, Table 6): ``"avg"`` (the paper's), ``"max"`` or ``"dwconv"``.
        zero_init: start W_O at zero so that FINE is the identity (exact warm start from a baseline).

    Attributes:
        form: ``"tokens"`` (default) or ``"conv"``, the layout of eq. 5-7 (module doc, "Forms").
        gain_tap: ``nn.Identity`` applied to the gain map ``1 + M^`` (B, C, H // rk, W // rk); hook it to read M.
    """

    def __init__(
        self, c_low: int, c_high: int, k: int = 1, r: int = 2, head_dim: int | None = None, attention: str = "aats",
        pool: str = "avg", zero_init: bool = True,
    ) -> None:
        super().__init__()
        if head_dim is None and isinstance(c_low, int) and c_low >= 1:
            head_dim = head_dim_for(c_low)
        for name, value in (("c_low", c_low), ("c_high", c_high), ("k", k), ("r", r), ("head_dim", head_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"FINE {name} must be a positive integer, got {value!r}")
        if c_low % head_dim:
            raise ValueError(f"FINE c_low={c_low} is not divisible by head_dim={head_dim}")
        for name, value, allowed in (("attention", attention, ATTENTIONS), ("pool", pool, POOLS)):
            if value not in allowed:
                raise ValueError(f"FINE {name}={value!r} is not one of {', '.join(allowed)}")
        if attention != "aats" and (k, r, pool) != (1, 2, "avg"):
            raise ValueError(
                f"FINE attention={attention!r} samples no tokens (paper Table 3: it replaces AATS and runs on the "
                f"unpooled maps), so AATS's k, r and pool must keep their defaults k=1, r=2, pool='avg'; got k={k}, "
                f"r={r}, pool={pool!r}"
            )
        self.c_low, self.c_high, self.k, self.r, self.head_dim = c_low, c_high, k, r, head_dim
        self.heads = c_low // head_dim
        self.attention, self.pool = attention, pool
        self.form = FORMS[0]
        self.proj_high = nn.Conv2d(c_high, c_low, 1, bias=False) if c_high != c_low else nn.Identity()  # eq. 10
        sampled = attention == "aats"  # token-free variants keep empty pools: every FINE has the same module tree
        self.pool_high = _down(pool, c_low, k) if sampled and k > 1 else nn.Identity()  # eq. 4
        self.pool_low = _down(pool, c_low, r * k) if sampled else nn.Identity()
        self.q = nn.Conv2d(c_low, c_low, 1)  # eq. 5
        self.kv = nn.Conv2d(c_low, 2 * c_low, 1, bias=False)
        self.out = nn.Conv2d(c_low, c_low, 1)  # eq. 7
        self.gain_tap = nn.Identity()
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def extra_repr(self) -> str:
        text = f"c_low={self.c_low}, c_high={self.c_high}, k={self.k}, r={self.r}, heads={self.heads}"
        for name, default in (("attention", "aats"), ("pool", "avg"), ("form", FORMS[0])):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        return text

    @property
    def token_stride(self) -> int:
        """Side of the ``low`` pixels one token covers: r*k for AATS; 1 for the variants that sample no tokens."""
        return self.r * self.k if self.attention == "aats" else 1

    def _gain(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """The gain map ``1 + M^`` (eq. 4-7, residual folded in): (B, C, H // rk, W // rk), rk = token_stride."""
        if self.form not in FORMS:
            raise ValueError(f"FINE form={self.form!r} is not one of {', '.join(FORMS)}")
        if self.attention in _LOCAL_ATTENTION:
            q, kv = self.q(low), self.kv(self.proj_high(high))  # eq. 5 on the full maps
            heads = _LOCAL_ATTENTION[self.attention](q, *kv.chunk(2, dim=1), self.heads)  # (B, C, H, W)
            return F.conv2d(heads, self.out.weight, self.out.bias + 1.0)  # eq. 7 + residual
        rk = self.token_stride
        if min(low.shape[-2:]) < rk or min(high.shape[-2:]) < self.k:
            raise ValueError(
                f"FINE needs at least one token: low {tuple(low.shape[-2:])} pooled by r*k={rk}, "
                f"high {tuple(high.shape[-2:])} pooled by k={self.k}"
            )
        low_t = self.pool_low(low)  # (B, C, h, w)
        if self.pool == "avg":  # pool, then project (eq. 10 inside the K/V projection below)
            high_t, projected = self.pool_high(high), False
        else:  # max / dwconv do not commute with eq. 10: project, then pool
            high_t, projected = self.pool_high(self.proj_high(high)), True
        if self.form == "conv":
            return self._gain_conv(low_t, high_t, projected)
        return self._gain_tokens(low_t, high_t, projected)

    def _gain_conv(self, low_t: torch.Tensor, high_t: torch.Tensor, projected: bool) -> torch.Tensor:
        """The ``"conv"`` form: 1x1 convolutions on the token maps, heads channel-major."""
        b, c, h, w = low_t.shape
        n_high = high_t.shape[-2] * high_t.shape[-1]
        if isinstance(self.proj_high, nn.Conv2d) and not projected:  # eq. 10 folded into K/V: weight W_kv W_p
            weight = self.kv.weight.flatten(1) @ self.proj_high.weight.flatten(1)
            kv = F.conv2d(high_t, weight[..., None, None])
        else:
            kv = self.kv(high_t)
        # A 1x1 conv output viewed as (B, heads, d, N) is Q_i^T / K_i^T / V_i^T per head. K and V are split before
        # transposing, so the exporter's Transpose(K) inside SDPA cancels ours: K^T is read in the conv's layout.
        q = self.q(low_t).view(b, self.heads, self.head_dim, h * w).transpose(-1, -2)
        k, v = kv.view(b, 2, self.heads, self.head_dim, n_high).unbind(1)
        attn = F.scaled_dot_product_attention(q, k.transpose(-1, -2), v.transpose(-1, -2))  # eq. 6
        heads = attn.transpose(-1, -2).reshape(b, c, h, w)
        return F.conv2d(heads, self.out.weight, self.out.bias + 1.0)  # eq. 7 + residual

    def _gain_tokens(self, low_t: torch.Tensor, high_t: torch.Tensor, projected: bool) -> torch.Tensor:
        """The ``"tokens"`` form: GEMMs on token-major views, SDPA on unit-stride heads, one transpose at the end."""
        b, c, h, w = low_t.shape
        x_low = low_t.flatten(2).transpose(1, 2)  # (B, N, C): a transposed view, read by BLAS as such
        x_high = high_t.flatten(2).transpose(1, 2)
        if isinstance(self.proj_high, nn.Conv2d) and not projected:
            x_high = F.linear(x_high, self.proj_high.weight.flatten(1))  # eq. 10
        n, n_high = h * w, x_high.shape[1]
        q = F.linear(x_low, self.q.weight.flatten(1), self.q.bias).view(b, n, self.heads, self.head_dim)
        kv = F.linear(x_high, self.kv.weight.flatten(1)).view(b, n_high, 2, self.heads, self.head_dim)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2), kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        )  # eq. 6: (B, heads, N, d)
        heads = attn.transpose(1, 2).reshape(b, n, c)  # Concat(head_1..head_h)
        gain = F.linear(heads, self.out.weight.flatten(1), self.out.bias + 1.0)  # eq. 7 + residual, (B, N, C)
        return gain.transpose(1, 2).reshape(b, c, h, w)

    def forward(self, low: torch.Tensor | list[torch.Tensor], high: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``low * M + low`` (eq. 9) with M the upsampled modulation map (eq. 8); same shape as ``low``.

        Also callable as ``forward([low, high])``: ultralytics passes a multi-input layer its inputs as one list.
        """
        if high is None:
            low, high = low
        gain = self.gain_tap(self._gain(low, high))  # 1 + M^
        rk = self.token_stride
        if rk > 1:
            gain = F.interpolate(gain, scale_factor=rk, mode="nearest")  # eq. 8
            pad_h, pad_w = low.shape[-2] - gain.shape[-2], low.shape[-1] - gain.shape[-1]
            if pad_h or pad_w:  # rows/columns in no token: gain 1 (M = 0)
                gain = F.pad(gain, (0, pad_w, 0, pad_h), value=1.0)
        return low * gain


@contextlib.contextmanager
def block_form(model: nn.Module, form: str) -> Iterator[list[FINE]]:
    """Set every FINE block in ``model`` to ``form`` for the ``with`` body; each gets its own form back after.

    Yields the blocks (empty for a model without FINE, which is left untouched).
    """
    if form not in FORMS:
        raise ValueError(f"FINE form={form!r} is not one of {', '.join(FORMS)}")
    blocks = [m for m in model.modules() if isinstance(m, FINE)]
    saved = [m.form for m in blocks]
    for m in blocks:
        m.form = form
    try:
        yield blocks
    finally:
        for m, old in zip(blocks, saved):
            m.form = old


def form_for(fmt: str) -> str:
    """The form FINE is recorded in for ultralytics export format ``fmt``: ``"conv"`` for ONNX and TensorRT, the
    eager default ``"tokens"`` for every other format (OpenVINO among them)."""
    return "conv" if fmt.lower() in ONNX_FORMATS else FORMS[0]


def _down(pool: str, channels: int, factor: int) -> nn.Module:
    """AATS's Down() by ``factor`` (eq. 4): average (the paper's), max, or a depthwise strided convolution that
    starts as the average. Kernel = stride, floor mode, no padding: ONNX pooling as TensorRT runs it."""
    if pool == "avg":
        return nn.AvgPool2d(factor)
    if pool == "max":
        return nn.MaxPool2d(factor)
    conv = nn.Conv2d(channels, channels, factor, stride=factor, groups=channels, bias=False)
    nn.init.constant_(conv.weight, 1.0 / (factor * factor))
    return conv
