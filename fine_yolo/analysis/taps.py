"""FINE blocks read through their documented taps: forward hooks only, nothing patched, nothing recomputed.

* A forward hook on a :class:`~fine_yolo.nn.fine.FINE` block sees its inputs, ``(low, high)`` or, from ultralytics,
  ``([low, high],)``, and its output F_low_aligned (eq. 9).
* A forward hook on its ``gain_tap`` (an ``nn.Identity``) sees the gain map ``1 + M^`` on the token grid,
  (B, C, H // rk, W // rk) with rk = ``token_stride``.

:func:`record` runs a model once with those hooks and returns what each block saw; every analysis command (ablate,
attention-cost, heatmaps, erf) reads the blocks through it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fine_yolo.nn.fine import FINE

__all__ = ["Seen", "StopForward", "fine_modules", "record", "removing"]


@dataclass
class Seen:
    """What one FINE block saw and made in one forward pass: ``low`` (B, C, H, W), ``high`` (B, c_high, H/r, W/r),
    ``out`` F_low_aligned (B, C, H, W), and ``gain`` ``1 + M^`` (B, C, H // rk, W // rk) when it was asked for."""

    block: FINE
    low: torch.Tensor
    high: torch.Tensor
    out: torch.Tensor
    gain: torch.Tensor | None = None


class StopForward(Exception):
    """Raised by a hook to end a forward pass once everything wanted has been seen."""


@contextlib.contextmanager
def removing(handles: list) -> Iterator[None]:
    """Remove the hook ``handles`` when the ``with`` body ends, however it ends."""
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def fine_modules(net: nn.Module) -> list[FINE]:
    """Every FINE block in ``net``, in module order (the order an ultralytics model runs them)."""
    return [m for m in net.modules() if isinstance(m, FINE)]


def record(net: nn.Module, x: torch.Tensor, blocks: Sequence[FINE] | None = None, gain: bool = False,
           stop: bool = True, grad: bool = False) -> list[Seen | None]:
    """Run ``net(x)`` once and return what each of ``blocks`` (default: :func:`fine_modules`) saw, in that order.

    Args:
        gain: also read each block's ``gain_tap``.
        stop: end the forward pass once every block has run (the layers after the last one are not needed).
        grad: run in the caller's grad mode, so the tensors keep their autograd graph back to ``x`` (input
            gradients); otherwise under ``torch.no_grad``.

    Returns:
        One :class:`Seen` per block, None for a block that did not run.
    """
    blocks = fine_modules(net) if blocks is None else list(blocks)
    seen: dict[int, dict[str, torch.Tensor]] = {i: {} for i in range(len(blocks))}

    def on_block(i: int):
        def hook(module, args, out):
            low, high = args if len(args) == 2 else args[0][:2]
            seen[i].update(low=low, high=high, out=out)
            if stop and all("out" in s for s in seen.values()):
                raise StopForward
        return hook

    def on_gain(i: int):
        def hook(module, args, out):
            seen[i]["gain"] = out
        return hook

    handles = [b.register_forward_hook(on_block(i)) for i, b in enumerate(blocks)]
    if gain:
        handles += [b.gain_tap.register_forward_hook(on_gain(i)) for i, b in enumerate(blocks)]
    with removing(handles), contextlib.suppress(StopForward), contextlib.nullcontext() if grad else torch.no_grad():
        net(x)
    return [Seen(b, **seen[i]) if "out" in seen[i] else None for i, b in enumerate(blocks)]
