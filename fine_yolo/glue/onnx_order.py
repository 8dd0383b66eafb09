"""Patch of ``ultralytics.engine.exporter.Exporter.export_onnx``: a FINE model's ONNX file is valid ONNX.

ultralytics' CPU FP16 conversion (``onnxruntime.transformers.float16``, ``keep_io_types=True``) appends the
input/output Casts after the nodes that read them, which ``onnx.checker`` rejects; a stable topological re-sort
(:func:`toposort_onnx`) gives the same graph, valid, and leaves a graph already in order untouched. The wrapper
re-sorts the file only when the exported model contains FINE and the export is FP16 — the files this
package is responsible for and the case that needs it; every other export (every non-FINE model in the environment)
is written by ultralytics alone and never re-read.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Callable

from fine_yolo.glue._wrap import wrap_once


def toposort_onnx(model) -> bool:
    """Sort ``model.graph.node`` topologically in place (stable); return whether the order changed."""
    graph = model.graph
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in known for i in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # a cycle or a dangling input: leave the graph as it is, the checker reports it
            return False
        pending = rest
    if [id(n) for n in ordered] == [id(n) for n in graph.node]:
        return False
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
    return True


def repair_onnx_order(path: Path) -> bool:
    """Re-sort the nodes of the ONNX file at ``path`` in place when they are out of order; return whether it was."""
    import onnx

    if path.suffix != ".onnx" or not path.is_file():
        return False
    proto = onnx.load(str(path), load_external_data=False)  # tensors stay where they are
    if not toposort_onnx(proto):
        return False
    onnx.save(proto, str(path))
    return True


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
            repair_onnx_order(Path(result if isinstance(result, (str, Path)) else result[0]))
        return result

    return wrap_once(original, export_onnx)


def patch(exporter: ModuleType) -> None:
    exporter.Exporter.export_onnx = wrap_export_onnx(exporter.Exporter.export_onnx)
