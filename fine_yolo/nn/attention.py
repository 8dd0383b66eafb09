"""Cross-level attention variants for the ablation of FINE's attention strategy (paper Table 3).

FINE's own attention (AATS, eq. 4-6) pools both maps and runs multi-head softmax attention between the token grids;
it lives in :mod:`fine_yolo.nn.fine`. The paper's Table 3 replaces it, inside the same block (same W_Q, W_K, W_V,
W_O, modulation and residual, eq. 5 and 7-10), with attention strategies designed for self-attention within one
level. Each runs on the *unpooled* maps: queries are every pixel of ``F_low`` (H x W), keys and values every pixel of
``F_high`` (H/s x W/s, s the stride ratio of the two levels, 2 in every YOLO). This module holds the ones that need
more than :func:`torch.nn.functional.scaled_dot_product_attention` over all tokens (``vanilla`` is exactly that, so
the block computes it with its AATS code and no pooling):

* :func:`local_attention`, for **window** attention (Swin, Liu et al. 2021, paper ref. [36]; M = 7) and **area**
  attention (YOLO12's ``AAttn``, Tian et al. 2025, paper ref. [49]; A = 4 areas), see :func:`window_attention` and
  :func:`area_attention`;
* :func:`linear_attention`, kernel-based **linear** attention (Katharopoulos et al. 2020, "Transformers are RNNs",
  paper ref. [26]).

Inputs are the projected maps of eq. 5 in NCHW layout: ``q`` (B, C, H, W) = W_Q F_low, ``k`` and ``v``
(B, C, H_h, W_h) = W_K F_high, W_V F_high; channel c belongs to head ``c // d`` (``heads = C / d``), as in
Concat(head_1..head_h) of eq. 7. Every function returns the concatenated heads as (B, C, H, W), which the block turns
into the gain map with W_O (eq. 7) and applies at full resolution (eq. 8 with an upsampling factor of 1, eq. 9).

How queries from low and keys from high pair up in window and area attention. The two maps show the same image at
two strides, so a low pixel (y, x) and the high pixel (y // s, x // s) cover the same place. The high map is split
into windows (window: M x M; area: horizontal strips of whole rows), and the low map into the *spatially
corresponding* windows, s times larger on each side (sM x sM; strips of s times as many rows). The queries of a low
window attend to the keys of its high window only. Windows are laid on the high map because M = 7 is odd: s-times
*smaller* windows on the high map would be 3.5 pixels wide. Each query then sees M^2 keys, the paper's
O(H_low W_low M^2) (Table 3). Maps whose size the window does not divide are zero-padded at the bottom/right, as Swin
pads, and padded keys are masked out of the softmax (every window keeps at least one real key, so no row is empty);
padded queries are cropped from the output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["WINDOW", "AREAS", "area_attention", "linear_attention", "local_attention", "stride_ratio",
           "window_attention"]

WINDOW = 7  # window side M on the high map (Table 3: 7 x 7, as Swin)
AREAS = 4  # number of areas A (Table 3: four regions, as YOLO12's area attention)
LINEAR_EPS = 1e-6  # added to the normaliser of linear attention (Katharopoulos et al.'s reference code uses 1e-6)


def stride_ratio(low_hw: tuple[int, int], high_hw: tuple[int, int], what: str) -> int:
    """The integer s with ``low_hw == s * high_hw`` on both axes; ValueError naming ``what`` otherwise."""
    (h, w), (hh, wh) = low_hw, high_hw
    s = h // hh if hh else 0
    if s < 1 or (h, w) != (s * hh, s * wh):
        raise ValueError(
            f"FINE attention={what!r} pairs each low pixel with the high pixel at the same place, so the low map "
            f"must be an integer multiple of the high map on both axes; got low {h}x{w}, high {hh}x{wh}"
        )
    return s


def _windows(x: torch.Tensor, heads: int, win_h: int, win_w: int) -> torch.Tensor:
    """(B, C, nh*win_h, nw*win_w) -> (B, nh*nw, heads, win_h*win_w, d): tokens of each window, row-major inside it."""
    b, c, h, w = x.shape
    nh, nw, d = h // win_h, w // win_w, c // heads
    x = x.view(b, heads, d, nh, win_h, nw, win_w).permute(0, 3, 5, 1, 4, 6, 2)
    # contiguous: with one window per row (area attention) reshape returns a view whose head dim is strided, and
    # torch's fused attention kernels need the head dim at stride 1 (else SDPA runs its ~10x slower math path)
    return x.reshape(b, nh * nw, heads, win_h * win_w, d).contiguous()


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, win_h: int, win_w: int,
                    what: str = "window") -> torch.Tensor:
    """Multi-head softmax attention inside paired windows (see module doc for the pairing).

    Args:
        q: (B, C, H, W) queries from the low map; k, v: (B, C, H_h, W_h) from the high map, H = s H_h, W = s W_h.
        heads: number of heads h (d = C / h per head).
        win_h, win_w: window size on the high map (the low window is s times larger on each side).
        what: the variant's name, for error messages.

    Returns:
        (B, C, H, W): per head, ``softmax(Q_w K_w^T / sqrt(d)) V_w`` for each window w (eq. 6 restricted to w).
    """
    b, c, h, w = q.shape
    hh, wh = k.shape[-2:]
    s = stride_ratio((h, w), (hh, wh), what)
    nh, nw = math.ceil(hh / win_h), math.ceil(wh / win_w)
    pad_h, pad_w = nh * win_h - hh, nw * win_w - wh
    mask = None
    if pad_h or pad_w:  # Swin's zero padding; padded keys are masked out, padded queries cropped below
        q = F.pad(q, (0, s * pad_w, 0, s * pad_h))
        k, v = F.pad(k, (0, pad_w, 0, pad_h)), F.pad(v, (0, pad_w, 0, pad_h))
        real = F.pad(torch.ones(1, 1, hh, wh, dtype=torch.bool, device=q.device), (0, pad_w, 0, pad_h))
        mask = _windows(real, 1, win_h, win_w)[:, :, :, None, :, 0]  # (1, nW, 1, 1, N_k): True = a real key
    n_win = nh * nw
    # Windows folded into the batch: 4-D inputs, which torch's fused CPU/GPU attention kernels take (with 5-D ones
    # SDPA falls back to its math path, measured ~9x slower on CPU).
    qw = _windows(q, heads, s * win_h, s * win_w).flatten(0, 1)  # (B nW, h, N_q, d)
    kw = _windows(k, heads, win_h, win_w).flatten(0, 1)  # (B nW, h, N_k, d)
    vw = _windows(v, heads, win_h, win_w).flatten(0, 1)
    if mask is not None:
        mask = mask.expand(b, n_win, 1, 1, mask.shape[-1]).flatten(0, 1)  # (B nW, 1, 1, N_k)
    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=mask)
    d = c // heads
    out = out.view(b, nh, nw, heads, s * win_h, s * win_w, d).permute(0, 3, 6, 1, 4, 2, 5)
    out = out.reshape(b, c, nh * s * win_h, nw * s * win_w)
    return out[..., :h, :w] if pad_h or pad_w else out


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, window: int = WINDOW
                     ) -> torch.Tensor:
    """Window attention (Swin, non-shifted): M x M windows on the high map, sM x sM on the low map.

    Cost O(H_low W_low M^2 C) for the scores (Table 3). A map smaller than M is one (padded) window, i.e. vanilla
    attention.
    """
    return local_attention(q, k, v, heads, window, window, "window")


def area_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, areas: int = AREAS
                   ) -> torch.Tensor:
    """Area attention (YOLO12's ``AAttn``): the maps split into ``areas`` horizontal strips, strip i of low attends to
    strip i of high.

    ``AAttn`` reshapes the row-major token sequence into ``areas`` equal parts; when the height is a multiple of
    ``areas`` those are horizontal strips of whole rows, which is what is used here on both maps (a strip of ``H_h /
    A`` high rows pairs with the ``s H_h / A`` low rows at the same place). When ``areas`` does not divide ``H_h`` (a
    split of the sequence would cut rows, and low and high would be cut at different places), strips have
    ``ceil(H_h / A)`` rows and the last one is padded and masked; a map with fewer rows than ``areas`` has one strip
    per row. Cost O(H_low W_low H_high W_high / A) for the scores (Table 3).
    """
    hh, wh = k.shape[-2:]
    return local_attention(q, k, v, heads, math.ceil(hh / areas), wh, "area")


def _phi(x: torch.Tensor) -> torch.Tensor:
    """Katharopoulos et al.'s feature map phi(x) = elu(x) + 1 (positive, so the normaliser never vanishes)."""
    return F.elu(x) + 1.0


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, eps: float = LINEAR_EPS
                     ) -> torch.Tensor:
    """Kernel-based linear attention (Katharopoulos et al. 2020, eq. 4-6 of their paper), per head::

        out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j) + eps),   phi = elu + 1

    softmax(q.k) replaced by the kernel phi(q).phi(k), so the d x d sum over keys is formed once: cost
    O((H_low W_low + H_high W_high) d^2) per head (Table 3). No 1/sqrt(d) scale (the kernel replaces the softmax).

    Args:
        q: (B, C, H, W); k, v: (B, C, H_h, W_h) — any sizes (no spatial pairing).

    Returns:
        (B, C, H, W), heads concatenated.
    """
    b, c, h, w = q.shape
    d = c // heads
    qf = _phi(q).view(b, heads, d, h * w)  # (B, h, d, N): phi(Q)^T per head
    kf = _phi(k).flatten(2).view(b, heads, d, -1)  # (B, h, d, N_h)
    vt = v.flatten(2).view(b, heads, d, -1)  # (B, h, d, N_h): V^T
    kv = vt @ kf.transpose(-1, -2)  # (B, h, d_v, d_k) = sum_j v_j phi(k_j)^T
    num = kv @ qf  # (B, h, d_v, N)
    den = kf.sum(-1, keepdim=True).transpose(-1, -2) @ qf  # (B, h, 1, N) = phi(q_i)^T sum_j phi(k_j)
    return (num / (den + eps)).reshape(b, c, h, w)
