"""Patch of ``ultralytics.engine.exporter.Exporter.__call__``: a TensorRT export bound to fail stops with one sentence.

Only the cases where ultralytics' own run is bound to fail are stopped (no CUDA GPU, ``device=cpu``, a DLA core the GPU
lacks, TensorRT missing while ultralytics may not install it), with :class:`EngineUnavailableError` from
:func:`fine_yolo.export.preflight.engine_preflight` instead of ``Invalid CUDA 'device=0' requested`` or a pip
install; every other export is ultralytics' own call, untouched.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable

from fine_yolo.export.preflight import ENGINE_ALIASES, engine_preflight
from fine_yolo.glue._wrap import wrap_once


def _autoinstalls_packages() -> bool:
    """Whether ultralytics would pip-install a missing package here (YOLO_AUTOINSTALL on and online)."""
    import ultralytics.utils as utils

    return bool(getattr(utils, "AUTOINSTALL", True)) and bool(getattr(utils, "ONLINE", False))


def wrap_exporter_call(original: Callable) -> Callable:
    """Return an ``Exporter.__call__`` that runs the TensorRT preflight for ``format=engine`` first."""

    def __call__(self, *args, **kwargs):
        if str(getattr(self.args, "format", "")).lower() in ENGINE_ALIASES:
            engine_preflight(str(getattr(self.args, "model", None) or "<model>"), self.args.device,
                             getattr(self.args, "imgsz", None), tensorrt_installable=_autoinstalls_packages())
        return original(self, *args, **kwargs)

    return wrap_once(original, __call__)


def patch(exporter: ModuleType) -> None:
    exporter.Exporter.__call__ = wrap_exporter_call(exporter.Exporter.__call__)
