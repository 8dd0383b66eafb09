"""Patch of ``ultralytics.cfg.entrypoint`` (the ``yolo`` command): an impossible TensorRT export is one sentence.

:class:`EngineUnavailableError` (raised by the exporter preflight, :mod:`fine_yolo.glue.engine_preflight`) is
printed as ``ERROR: <sentence>`` with exit status 1, the status ``fine-yolo export`` returns, instead of a
traceback. Every other exception propagates exactly as before.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Callable

from fine_yolo.export.preflight import EngineUnavailableError
from fine_yolo.glue._wrap import wrap_once


def wrap_entrypoint(original: Callable) -> Callable:
    def entrypoint(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except EngineUnavailableError as e:
            print(f"ERROR: {e}", file=sys.stderr)
            raise SystemExit(1) from None

    return wrap_once(original, entrypoint)


def patch(cfg: ModuleType) -> None:
    cfg.entrypoint = wrap_entrypoint(cfg.entrypoint)
