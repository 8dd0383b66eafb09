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
  act on different axes, so ``AvgPool(Conv1x1(x)) == Conv1x1(AvgPool(x))`` exactly (a bias too, since the average
  of a constant is that constant). We pool first: the projection then runs on k^2 fewer pixels.
* **W_Q, W_K, W_V, W_O are stored as 1x1 convolutions**: the same C x C matrices as eq. 5/7, applied per token of
  the pooled maps (as convolutions in the ONNX graph, as GEMMs elsewhere; see "Speed" below). W_K and W_V
  share one convolution with 2C outputs (one GEMM instead of two; the weights are the two C x C blocks).
* **Biases** (eq. 5/7 have none; see "Biases" below): W_Q and W_O have one, W_K, W_V and eq. 10's projection none.
* **The residual is folded into W_O's bias (eq. 7-9).** ``F*M + F == F*(1 + M)``, nearest upsampling commutes
  with adding 1, and ``1 + M^ = W_O x + (b_O + 1)``: one convolution with the bias raised by 1 yields the gain map, and
  one full-resolution multiply applies it. With the identity start below the gain is exactly 1.0 (``0*x + 1``), so
  the output equals ``low`` bit for bit. Under autocast the gain is a bfloat16/float16 number near 1, so M is
  resolved to that format's spacing at 1 (2^-7 / 2^-10), about one rounding of ``low`` itself (tested for bfloat16).
* **Attention** uses ``torch.nn.functional.scaled_dot_product_attention``. The TorchScript ONNX exporter decomposes
  it into MatMul/Softmax/MatMul with the scale 1/sqrt(d) applied as d^-1/4 to Q and to K before the first MatMul —
  the pattern TensorRT's fused-attention pass matches (head dim 16, a multiple of 8). No ONNX ``Attention``,
  ``Einsum``, sequence or control-flow ops are produced (``fine_yolo.export.trt_check`` verifies all of this).
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

Biases. A bias on K adds ``q_i . b_k`` to every logit of query i, which softmax ignores, so it is dead (its gradient is
zero up to rounding). Softmax rows sum to 1, so a bias on V comes out of the attention unchanged and W_O maps it to
the constant ``W_O b_v``: the same function as b_O raised by that much. Eq. 10's bias reaches K (dead) and V (the same
constant). These three are therefore not stored: the block computes exactly the functions it could with them, with
3C parameters fewer. The two kept are not redundant: b_Q adds ``b_Q . k_j`` to every logit, a learned content prior
over the keys, and b_O is the per-channel offset of M, which also carries the residual's ``+1`` in the exported
graph; both start at zero (b_O) or PyTorch's default (b_Q), and cost nothing in the exported graph's layer count.

Modules built before that change keep working unchanged: a checkpoint pickles the whole module, so an unpickled
pre-change FINE has biased K/V (and projection) convolutions, and both code paths apply whatever bias each
convolution has (bit-identical outputs). ``load_state_dict`` of a pre-change state dict (keys ``kv.bias``,
``proj_high.bias``) into a new module folds those biases into b_O (``b_O + W_O (b_v + W_v b_p)``, exact in exact
arithmetic) instead of failing on unexpected keys. ultralytics' ``pretrained=`` transfer matches names and shapes and
never passes keys the new model lacks, so from a pre-change checkpoint it transfers everything except that V offset.

Speed (same maths, different kernels; see README "Speed" and docs/deployment_cpu.md). Two forms of eq. 5-7 compute
identical values up to float summation order, chosen by who records the block: the **ONNX form** while an ONNX
exporter runs (``torch.onnx.is_in_onnx_export()``: ``torch.onnx.export`` with ``dynamo=False``, every ultralytics
``format=onnx``/``engine`` export, and ``dynamo=True``), and the **token-major form** everywhere else: eager PyTorch,
``torch.compile``, TorchScript tracing or scripting (``torch.jit``; ultralytics' ``format=openvino`` and
``format=torchscript`` trace the model and OpenVINO's PyTorch frontend converts the trace) and ``torch.export``
(``torch.compiler.is_exporting()``). Eager-only CPU kernels (below) are skipped by every recorder
(:func:`_exporting`). ultralytics (>= 8.3.215) exports through TorchScript; the dynamo exporters are tested with
static shapes (with dynamic H, W inside a whole YOLO model, torch.export cannot solve the guards of the size checks
below).

* **ONNX form** (tuned for ONNX Runtime's CPU provider and TensorRT): ``AveragePool -> Conv`` (q; eq. 10 and
  K/V folded into one conv with weight ``W_kv W_p``, exact since both are linear, one layer less at the same
  multiply-adds) -> ``MatMul/Softmax/MatMul`` -> ``Conv`` (W_O with b_O + 1) -> ``Resize`` (nearest) -> ``Mul``.
  Splitting K and V *before* transposing lets SDPA's own ``Transpose(K)`` cancel ours, so K^T is read straight from
  the kv conv's layout; folding the residual into W_O's bias removes an ``Add`` that sat between the conv and the
  ``Resize``, so ONNX Runtime keeps conv -> resize -> multiply in its blocked NCHWc layout instead of converting the
  full-resolution map to plain NCHW and back. In ONNX Runtime this form measured faster than the token-major one.
* **Token-major form**: the projections are GEMMs (``F.linear``) on the pooled NCHW maps read as transposed (N x C)
  views, so Q, K and V come out token-major, (B, N, heads, d) transposed to (B, heads, N, d), with unit stride on the
  head dim. Eager, that is what SDPA's fused (flash) CPU/GPU kernel needs (its math fallback is ~6x slower on CPU),
  with no layout copies, and W_O is one batched GEMM whose output is already the NCHW gain map; on CPU this measured
  10-18% faster than 1x1 convolutions plus ``.contiguous()`` copies. Recorded (OpenVINO, TorchScript), W_O is a
  ``MatMul`` on the token-major heads followed by one transpose to NCHW instead: Transpose(0,2,1,3) -> MatMul ->
  Softmax -> MatMul -> Transpose is the pattern OpenVINO's CPU plugin compiles into one fused multi-head-attention
  kernel (a Snippets ``Subgraph``); the ONNX form's channel-major Q^T, K^T, V^T do not match it, and the plugin then
  runs MatMul, Softmax and MatMul as separate nodes with the full (N x N) logits in memory (it keeps its own
  ``ScaledDotProductAttention`` kernel for stateful LLM graphs only). In a same-session A/B at 640 this form cut the
  time of FINE's nodes by 15-20% at bf16 and 5-10% at f32 (docs/deployment_cpu.md).
* **CPU-only kernels, chosen by device** (:data:`_TUNED_DEVICES`): on CPU tensors, average pooling
  (:class:`AATSPool`) is k strided row sums and k column sums, and eq. 8-9 is one broadcast multiply of ``low``
  viewed as (rk rows x W) by the gain repeated along W only, instead of materialising the upsampled map: PyTorch's
  CPU ``avg_pool2d`` kernel measured 2-5x slower than the sums on FINE's maps, and CPU ``interpolate`` cost more than
  the multiply itself. On every other device (CUDA training above all) PyTorch's standard kernels run
  (``F.avg_pool2d``, ``F.interpolate`` + a multiply), as in the exported graph: the tuned forms were measured on CPU
  only, and on a GPU the sums are ~2k element-wise kernel launches where one pooling kernel suffices. Both forms
  give the same values up to float summation order (tested).

Shapes: ``low`` is (B, c_low, H, W); ``high`` is (B, c_high, H/r, W/r) (any size whose pooled token grid is
non-empty is accepted by the block; the ultralytics glue checks the r x relation at model build time); the output is
(B, c_low, H, W).

Variants for the paper's ablations (``attention=``, ``pool=``; the defaults are the paper's method and run exactly
the code above, bit for bit and at the same speed):

* ``attention="aats"`` (default): eq. 4-6 as above. The other values are Table 3's alternatives to AATS, each inside
  the same block (same W_Q, W_K, W_V, W_O, eq. 10 projection, modulation and residual, so the same parameters) and
  each on the *unpooled* maps: Q from every pixel of ``F_low``, K and V from every pixel of ``F_high``. They sample no
  tokens, so k, r and ``pool`` (AATS's) must stay at their defaults, and the token grid is ``low``'s own grid:
  :attr:`FINE.token_stride` is 1 (r*k for AATS) and eq. 8 upsamples by 1.

  - ``"vanilla"`` (Table 3 row 1, Vaswani et al. 2017): ``softmax(Q K^T / sqrt(d)) V`` over all H_low W_low x
    H_high W_high pairs; computed by the AATS code with no pooling (it *is* AATS with k = r = 1).
  - ``"window"`` (Swin, Liu et al. 2021): softmax attention inside 7 x 7 windows of the high map, each paired with
    the 14 x 14 (s x 7) window of the low map at the same place (:func:`fine_yolo.nn.attention.window_attention`).
  - ``"area"`` (YOLO12's area attention, A = 4): the same with 4 horizontal strips
    (:func:`fine_yolo.nn.attention.area_attention`).
  - ``"linear"`` (Katharopoulos et al. 2020): ``phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1)``, phi = elu + 1
    (:func:`fine_yolo.nn.attention.linear_attention`).

  These run one plain form (1x1 convolutions, attention, W_O as a convolution) in eager mode and in export: they are
  ablation baselines, not tuned.
* ``pool=`` chooses AATS's Down() of eq. 4 (Table 6): ``"avg"`` (default, :class:`AATSPool`), ``"max"``
  (``nn.MaxPool2d``, kernel = stride, floor mode: TensorRT-exact like the average) or ``"dwconv"`` (a depthwise
  ``nn.Conv2d`` with kernel = stride = the pooling factor, no bias: C (rk)^2 + C k^2 parameters, the high map's only
  when k > 1; the paper's +6.14K for C = 256, k = 1 and 2, is 256 x (2^2 + 4^2 + 2^2)). dwconv starts as the
  average (every weight 1/kernel^2), so it is learnable pooling that begins where ``avg`` is. Max pooling and a
  depthwise convolution do not commute with eq. 10's projection (average pooling does), so with them the high map is
  projected first and pooled second, the paper's order.

Checkpoints made before the variants existed unpickle without ``attention``/``pool`` in their ``__dict__``; the
class attributes :attr:`FINE.attention` = "aats" and :attr:`FINE.pool` = "avg" make them the paper's block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fine_yolo.nn.attention import area_attention, linear_attention, window_attention
from fine_yolo.nn.bias_fold import fold_pre_change_biases

__all__ = ["FINE", "AATSPool"]

ATTENTIONS = ("aats", "vanilla", "window", "area", "linear")  # paper Table 3 rows; the first is the default
POOLS = ("avg", "max", "dwconv")  # paper Table 6: Down() of eq. 4; the first is the default
# attention types that compute something other than softmax attention over all token pairs
_LOCAL_ATTENTION = {"window": window_attention, "area": area_attention, "linear": linear_attention}


_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch.export's flag, where torch has it

# Devices on which the CPU-tuned eager kernels run (see module doc); elsewhere PyTorch's standard kernels. A seam:
# tests empty it to run the standard path on CPU.
_TUNED_DEVICES = frozenset({"cpu"})


def _exporting() -> bool:
    """Whether an exporter is recording the block (TorchScript, either ONNX exporter, ``torch.export``): then the
    eager-only CPU kernels are skipped for plain, exportable ops."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export() or _is_exporting()


def _tuned(x: torch.Tensor) -> bool:
    """Whether the CPU-tuned eager kernels apply to ``x``: eager mode, on a device in :data:`_TUNED_DEVICES`."""
    return x.device.type in _TUNED_DEVICES and not _exporting()


class AATSPool(nn.AvgPool2d):
    """``nn.AvgPool2d(k)`` (non-overlapping, floor mode, no padding) with a faster eager path.

    Eager on CPU: the mean of each k x k window as k row-slice sums then k column-slice sums (contiguous, vectorized
    adds), 2-5x faster than PyTorch's CPU ``avg_pool2d`` kernel on FINE's maps; the same value up to float summation
    order. Exported, and on other devices: ``F.avg_pool2d``, i.e. ONNX ``AveragePool`` (ceil_mode=0, no pads), which
    TensorRT and ONNX Runtime implement well.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        b, c, big_h, big_w = x.shape
        h, w = big_h // k, big_w // k
        if not _tuned(x) or h == 0 or w == 0:
            return super().forward(x)
        rows = x[..., : h * k, : w * k].reshape(b, c, h, k, w * k)  # a view when the map is contiguous
        row_sums = _sum(rows.unbind(3))  # (B, C, h, W): the k rows of each window added
        return _sum(row_sums.view(b, c, h, w, k).unbind(4)) * (1.0 / (k * k))


def _sum(parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``parts[0] + parts[1] + ...`` as plain element-wise adds (no ``0 + `` start, no stacking copy)."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


class FINE(nn.Module):
    """Alignment-aware cross-level attention that modulates ``low`` with the context of ``high`` (see module doc).

    Args:
        c_low: channels C of the low-level map (queries; the output has the same channels).
        c_high: channels of the high-level map; projected to ``c_low`` by a 1x1 convolution when different (eq. 10).
        k: AATS base kernel on the high-level map (paper: 1 at P4<-P5, 2 at P3<-P4).
        r: alignment ratio; the low-level kernel is ``r*k`` (paper: 2, the stride ratio of adjacent levels).
        head_dim: channels per attention head d; ``h = c_low / head_dim`` heads (paper: 16).
        attention: ``"aats"`` (the paper's method) or one of Table 3's alternatives ``"vanilla"``, ``"window"``,
            ``"area"``, ``"linear"`` (module doc, "Variants"); those sample no tokens, so k, r and pool keep their
            defaults.
        pool: AATS's Down() (eq. 4, Table 6): ``"avg"`` (the paper's), ``"max"`` or ``"dwconv"``.
        zero_init: start W_O at zero so that FINE is the identity (exact warm start from a baseline).
    """

    # Class-level defaults: modules unpickled from checkpoints made before the variants existed lack these instance
    # attributes and read them here, i.e. they are the paper's block (aats attention, average pooling).
    attention = "aats"
    pool = "avg"

    def __init__(
        self, c_low: int, c_high: int, k: int = 1, r: int = 2, head_dim: int = 16, attention: str = "aats",
        pool: str = "avg", zero_init: bool = True,
    ) -> None:
        super().__init__()
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
        # eq. 10: plain 1x1 projection of the high-level map into the low-level channel space (no BN, no activation;
        # no bias: it would reach only K, where softmax ignores it, and V, where b_O subsumes it; see module doc).
        self.proj_high = nn.Conv2d(c_high, c_low, 1, bias=False) if c_high != c_low else nn.Identity()
        # eq. 4: AATS, parameter-free non-overlapping average pooling (floor mode; TensorRT-exact). The variants that
        # sample no tokens keep the (empty) attributes, so every FINE has the same module tree.
        sampled = attention == "aats"
        self.pool_high = _down(pool, c_low, k) if sampled and k > 1 else nn.Identity()
        self.pool_low = _down(pool, c_low, r * k) if sampled else nn.Identity()
        # eq. 5 / 7: C x C projections as 1x1 convolutions on the token maps. K and V share one conv, without bias
        # (K's is dead under softmax, V's is subsumed by b_O); Q and O keep theirs (module doc, "Biases").
        self.q = nn.Conv2d(c_low, c_low, 1)
        self.kv = nn.Conv2d(c_low, 2 * c_low, 1, bias=False)
        self.out = nn.Conv2d(c_low, c_low, 1)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def extra_repr(self) -> str:
        text = f"c_low={self.c_low}, c_high={self.c_high}, k={self.k}, r={self.r}, heads={self.heads}"
        if self.attention != "aats":
            text += f", attention={self.attention}"
        if self.pool != "avg":
            text += f", pool={self.pool}"
        return text

    @property
    def token_stride(self) -> int:
        """Side of the ``low`` pixels one token covers: r*k for AATS; 1 for the variants that sample no tokens.

        The gain map of :meth:`_gain` is on a grid this many times coarser than ``low`` and eq. 8 upsamples by it.
        """
        return self.r * self.k if self.attention == "aats" else 1

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """torch's per-module loading hook: a pre-change state dict's K/V/eq. 10 biases are folded into b_O first.

        torch calls this on the block before its children, with the dict the children then read, so the fold
        (:func:`fine_yolo.nn.bias_fold.fold_pre_change_biases`) is what they load.
        """
        has_proj = isinstance(self.proj_high, nn.Conv2d)
        problem = fold_pre_change_biases(
            state_dict, prefix, self.c_low, has_proj, kv_bias=self.kv.bias is not None,
            proj_bias=has_proj and self.proj_high.bias is not None,
        )
        if problem:
            error_msgs.append(problem)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _gain(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Return the gain map ``1 + M^`` (eq. 4-7, residual folded in) on the token grid: (B, C, H // rk, W // rk),
        rk = :attr:`token_stride` (1 for the attention variants that sample no tokens)."""
        attention = self.attention
        if attention != "aats":
            return self._gain_variant(low, high, attention)
        rk = self.r * self.k
        if min(low.shape[-2:]) < rk or min(high.shape[-2:]) < self.k:
            raise ValueError(
                f"FINE needs at least one token: low {tuple(low.shape[-2:])} pooled by r*k={rk}, "
                f"high {tuple(high.shape[-2:])} pooled by k={self.k}"
            )
        low_t = self.pool_low(low)  # (B, C, h, w), h = H // rk
        if self.pool == "avg":
            high_t, projected = self.pool_high(high), False  # (B, c_high, hh, ww), hh = H_high // k
        else:  # max / dwconv do not commute with eq. 10: project first, then pool (the paper's order)
            high_t, projected = self.pool_high(self.proj_high(high)), True  # (B, C, hh, ww)
        if torch.onnx.is_in_onnx_export():
            return self._gain_graph(low_t, high_t, projected)
        return self._gain_tokens(low_t, high_t, projected)

    def _gain_variant(self, low: torch.Tensor, high: torch.Tensor, attention: str) -> torch.Tensor:
        """Gain map of a Table-3 variant on ``low``'s own grid (B, C, H, W): no token sampling (module doc)."""
        if attention == "vanilla":  # AATS's attention with nothing pooled: every low pixel x every high pixel
            if torch.onnx.is_in_onnx_export():
                return self._gain_graph(low, high, False)
            return self._gain_tokens(low, high, False)
        q = self.q(low)  # eq. 5 as 1x1 convolutions on the full maps
        kv = self.kv(self.proj_high(high))
        k, v = kv.chunk(2, dim=1)
        heads = _LOCAL_ATTENTION[attention](q, k, v, self.heads)  # (B, C, H, W), Concat(head_1..head_h)
        return F.conv2d(heads, self.out.weight, self.out.bias + 1.0)  # W_O x + (b_O + 1), eq. 7 + residual

    def _gain_graph(self, low_t: torch.Tensor, high_t: torch.Tensor, projected: bool = False) -> torch.Tensor:
        """ONNX form: 1x1 convs on the token maps, SDPA decomposed by the exporter, W_O as a conv.

        ``projected``: ``high_t`` has already been through eq. 10 (max / dwconv pooling).
        """
        b, c, h, w = low_t.shape
        n_high = high_t.shape[-2] * high_t.shape[-1]
        if isinstance(self.proj_high, nn.Conv2d) and not projected:
            # eq. 10 folded into the K/V projection: W_kv W_p x is one conv with weight W_kv W_p (both linear, same
            # multiply-adds since c_high x 2C == c_high x C + C x 2C when c_high = 2C, one layer less). The product
            # of constants is folded at export. A pre-change module's biases b_p, b_kv fold to W_kv b_p + b_kv.
            w_kv = self.kv.weight.flatten(1)
            weight = (w_kv @ self.proj_high.weight.flatten(1))[..., None, None]
            bias = None if self.proj_high.bias is None else w_kv @ self.proj_high.bias
            if self.kv.bias is not None:
                bias = self.kv.bias if bias is None else bias + self.kv.bias
            kv = F.conv2d(high_t, weight, bias)
        else:
            kv = self.kv(high_t)
        # A 1x1 conv output viewed as (B, heads, d, N) is Q_i^T / K_i^T / V_i^T per head (channel c belongs to head
        # c // d, as in Concat(head_1..head_h)). K and V are split *before* the transposes: the exported graph then
        # holds K^T in the conv's own layout (SDPA's Transpose(K) cancels against ours) instead of a 5-D Transpose
        # plus a second Transpose, which ONNX Runtime executes as two full copies.
        q = self.q(low_t).view(b, self.heads, self.head_dim, h * w).transpose(-1, -2)
        k, v = kv.view(b, 2, self.heads, self.head_dim, n_high).unbind(1)
        attn = F.scaled_dot_product_attention(q, k.transpose(-1, -2), v.transpose(-1, -2))  # eq. 6
        heads = attn.transpose(-1, -2).reshape(b, c, h, w)  # (B, heads, N_low, d) -> (B, C, h, w)
        return F.conv2d(heads, self.out.weight, self.out.bias + 1.0)  # W_O x + (b_O + 1), eq. 7 + residual

    def _gain_tokens(self, low_t: torch.Tensor, high_t: torch.Tensor, projected: bool = False) -> torch.Tensor:
        """Token-major form: GEMMs straight on the NCHW token maps, SDPA's fused kernel, no layout copies in eager
        mode; recorded for OpenVINO / TorchScript, W_O as a MatMul plus one transpose (module doc, "Speed").

        ``projected``: ``high_t`` has already been through eq. 10 (max / dwconv pooling).
        """
        b, c, h, w = low_t.shape
        x_low = low_t.flatten(2).transpose(1, 2)  # (B, N, C): a transposed view, read by BLAS as such
        x_high = high_t.flatten(2).transpose(1, 2)
        if isinstance(self.proj_high, nn.Conv2d) and not projected:
            x_high = F.linear(x_high, self.proj_high.weight.flatten(1), self.proj_high.bias)
        n, n_high = h * w, x_high.shape[1]
        # Token-major Q (B, N, C) viewed as (B, heads, N, d) has unit stride on d, which is all torch's fused
        # (flash) CPU/GPU attention kernels need; channel c belongs to head c // d as in Concat(head_1..head_h).
        q = F.linear(x_low, self.q.weight.flatten(1), self.q.bias).view(b, n, self.heads, self.head_dim)
        kv = F.linear(x_high, self.kv.weight.flatten(1), self.kv.bias).view(b, n_high, 2, self.heads, self.head_dim)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2), kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        )  # eq. 6: (B, heads, N, d)
        heads = attn.transpose(1, 2).reshape(b, n, c)  # Concat(head_1..head_h), token-major (a view for flash)
        if _exporting():  # OpenVINO fuses Transpose-MatMul-Softmax-MatMul-Transpose; baddbmm there measured slower
            gain = F.linear(heads, self.out.weight.flatten(1), self.out.bias + 1.0)  # eq. 7 + residual, (B, N, C)
            return gain.transpose(1, 2).reshape(b, c, h, w)
        # eq. 7 + residual, channel-major output: (W_O heads^T + b_O + 1) as (B, C, N) = the NCHW gain map.
        gain = torch.baddbmm((self.out.bias + 1.0)[:, None], self.out.weight.flatten(1).expand(b, c, c),
                             heads.transpose(1, 2))
        return gain.view(b, c, h, w)

    def forward(self, low: torch.Tensor | list[torch.Tensor], high: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``low * M + low`` (eq. 9) with M the upsampled modulation map (eq. 8); same shape as ``low``.

        Also callable as ``forward([low, high])``: ultralytics passes a multi-input layer its inputs as one list.
        """
        if high is None:
            low, high = low
        rk = self.token_stride
        gain = self._gain(low, high)  # 1 + M^: the residual's 1 folded into W_O's bias (see module doc)
        b, c, big_h, big_w = low.shape
        h, w = gain.shape[-2:]
        if rk == 1:  # a variant on low's own grid (token_stride 1): eq. 8 is the identity
            return low * gain
        if _tuned(low) and big_h == h * rk and big_w == w * rk and low.is_contiguous():
            # eq. 8-9 without materialising the upsampled map (CPU): repeat the gain along W only (a coarse-height
            # map), then broadcast it over the rk rows of each cell. Same products as Resize + Mul, bit for bit.
            gain_w = gain.repeat_interleave(rk, dim=-1)  # (B, C, h, W)
            return (low.view(b, c, h, rk, big_w) * gain_w.unsqueeze(3)).view(b, c, big_h, big_w)
        gain = F.interpolate(gain, scale_factor=rk, mode="nearest")  # eq. 8
        pad_h, pad_w = big_h - gain.shape[-2], big_w - gain.shape[-1]
        if pad_h or pad_w:  # trailing rows/cols outside every token: gain 1 (M = 0), see module doc
            gain = F.pad(gain, (0, pad_w, 0, pad_h), value=1.0)
        return low * gain


def _down(pool: str, channels: int, factor: int) -> nn.Module:
    """AATS's Down() by ``factor`` (eq. 4) on a map of ``channels`` channels: average (the paper's), max or a
    depthwise strided convolution initialised to the average (module doc, "Variants")."""
    if pool == "avg":
        return AATSPool(factor)
    if pool == "max":
        return nn.MaxPool2d(factor)  # kernel = stride, no padding, floor mode: ONNX MaxPool as TensorRT runs it
    conv = nn.Conv2d(channels, channels, factor, stride=factor, groups=channels, bias=False)
    nn.init.constant_(conv.weight, 1.0 / (factor * factor))  # starts as the average: learnable, not random, pooling
    return conv
