"""Patch of ``ultralytics.engine.exporter.Exporter.export_onnx``: a FINE model's ONNX file is valid ONNX.

ultralytics' CPU FP16 conversion leaves the nodes out of topological order (:mod:`fine_yolo.export.onnx_order`).
The wrapper re-sorts the file only when the exported model contains FINE and the export is FP16 — the files this
package is responsible for and the case that needs it; every other export (every non-FINE model in the environment)
is written by ultralytics alone and never re-read.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Callable

from fine_yolo.glue._wrap import wrap_once


def _has_fine(model) -> bool:
    from fine_yolo.nn.fine import FINE

    return model is not None and hasattr(model, "modules") and any(isinstance(m, FINE) for m in model.modules())


def _is_half(args) -> bool:
    quantize = str(getattr(args, "quantize", "") or "").lower()
    return bool(getattr(args, "half", False)) or quantize in {"16", "fp16", "half"}


def wrap_export_onnx(original: Callable) -> Callable:
    """Return an ``Exporter.export_onnx`` that re-sorts the nodes of FINE FP16 exports."""

    def export_onnx(self, *args, **kwargs):
        result = original(self, *args, **kwargs)  # a path, or (path, proto) on older releases
        if _is_half(self.args) and _has_fine(getattr(self, "model", None)):
            from fine_yolo.export.onnx_order import repair_onnx_order

            repair_onnx_order(Path(result if isinstance(result, (str, Path)) else result[0]))
        return result

    return wrap_once(original, export_onnx)


def patch(exporter: ModuleType) -> None:
    exporter.Exporter.export_onnx = wrap_export_onnx(exporter.Exporter.export_onnx)
