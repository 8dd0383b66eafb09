"""Topological order of ONNX nodes: ultralytics' CPU FP16 conversion (``onnxruntime.transformers.float16``,
``keep_io_types=True``) appends the input/output Casts after the nodes that read them, which ``onnx.checker``
rejects. A stable re-sort gives the same graph, valid; a graph already in order is left untouched.
"""

from __future__ import annotations

from pathlib import Path


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


