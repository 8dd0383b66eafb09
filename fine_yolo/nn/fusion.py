"""FINEConcat: a top-down fusion stage with FINE, eq. 3 of the paper with f a channel concatenation (as in YOLO)::

    F_fused = Concat(Up(F_high), FINE(F_low, F_high))          eq. 3

It replaces the stage's ``Concat`` row and keeps its input order and output channels (the upsampled map first, then
the low map, now aligned), so every later layer, its index and its weights are the baseline's. FINE reads the high
map *before* the upsampler, at its own resolution (every pool, r and attention variant expects that):

* inputs ``[up, low]``: ``up`` is a nearest upsampling of ``high`` by an integer factor s (``nn.Upsample(None, 2,
  "nearest")`` in every shipped family but YOLOv6): ``up[i, j] = high[i // s, j // s]``, so the strided slice
  ``up[..., ::s, ::s]`` *is* ``high``, bit for bit (a view; the glue checks it on a random map at build).
* inputs ``[up, low, high]``: the upsampler is learned (YOLOv6's ``nn.ConvTranspose2d``) and nothing recovers its
  input from its output, so the row names the pre-upsampler map as a third input.

At FINE's identity start (W_O = 0) the output is ``Concat(up, low)``: the baseline's, bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn

from fine_yolo.nn.fine import FINE

__all__ = ["FINEConcat"]


class FINEConcat(nn.Module):
    """``Concat([up, FINE(low, high)])`` along channels (eq. 3); ``high`` is ``up[..., ::s, ::s]`` or a third input.

    Args:
        c_low: channels of ``low`` (FINE's output channels too).
        c_high: channels of ``high`` (projected to ``c_low`` inside FINE when different, eq. 10).
        k, r, head_dim, attention, pool: FINE's arguments (:class:`fine_yolo.nn.fine.FINE`).
        up: the nearest upsampler's integer factor s, used when the row gives two inputs.
    """

    def __init__(
        self, c_low: int, c_high: int, k: int = 1, r: int = 2, head_dim: int | None = None, attention: str = "aats",
        pool: str = "avg", up: int = 2,
    ) -> None:
        super().__init__()
        if not isinstance(up, int) or isinstance(up, bool) or up < 1:
            raise ValueError(f"FINEConcat up must be a positive integer (the upsampling factor), got {up!r}")
        self.fine = FINE(c_low, c_high, k, r, head_dim, attention, pool)
        self.up = up

    def extra_repr(self) -> str:
        return f"up={self.up}"

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """``x`` is ``[up, low]`` or ``[up, low, high]`` (ultralytics passes a multi-input layer one list)."""
        up, low = x[0], x[1]
        high = x[2] if len(x) == 3 else up[..., :: self.up, :: self.up]
        return torch.cat((up, self.fine(low, high)), 1)
