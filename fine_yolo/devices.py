"""The one reader of ultralytics-style device strings (``cpu``, ``0``, ``cuda:1``, ``0,1``, ``dla:0``), and the one
setter of torch's CPU thread count (every command's ``threads=`` key). torch is imported only by the thread setters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fine_yolo.errors import UsageError


def set_torch_threads(threads: int) -> int:
    """Set torch's intra-op CPU threads (0: keep the current count); return the count in use."""
    import torch

    if int(threads):
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """:func:`set_torch_threads` for the ``with`` block only; yields the count in use, restores the previous one."""
    import torch

    before = torch.get_num_threads()
    try:
        yield set_torch_threads(threads)
    finally:
        torch.set_num_threads(before)


class DeviceError(UsageError):
    """A device string that names no CPU, CUDA device or DLA core."""


def _text(device: object) -> str:
    return "" if device is None else str(device).strip().lower()


def dla_core(device: object) -> int | None:
    """The DLA core ``device`` names (``dla`` / ``dla:N``), or None when it names no DLA core."""
    d = _text(device)
    if not d.startswith("dla"):
        return None
    core = d.rsplit(":", 1)[-1] if ":" in d else "0"
    if not core.isdigit():
        raise DeviceError(f"device={device} is not a DLA core: write dla:0 or dla:1")
    return int(core)


def cuda_index(device: object) -> int | None:
    """The CUDA device index ``device`` names, or None for the CPU.

    ``cpu``/``mps``/empty -> None; ``0``, ``cuda``, ``cuda:1``, ``0,1`` (the first) -> that index; ``dla:N`` (a
    Jetson's DLA core, next to GPU 0) -> 0. Anything else is a :class:`DeviceError` naming it.
    """
    d = _text(device)
    if d in {"", "cpu", "mps"}:
        return None
    if d == "cuda" or dla_core(d) is not None:
        return 0
    first = d.removeprefix("cuda:").split(",")[0].strip()
    if not first.isdigit():
        raise DeviceError(f"device={device} is not cpu, a CUDA index (0, cuda:0, 0,1) or dla:N")
    return int(first)


def is_cuda(device: object) -> bool:
    """Whether ``device`` names a CUDA device (see :func:`cuda_index`)."""
    return cuda_index(device) is not None
