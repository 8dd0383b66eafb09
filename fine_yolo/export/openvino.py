"""OpenVINO on the CPU: compile an exported model at a chosen precision, read back what the plugin really ran, profile.

ultralytics exports OpenVINO IR itself (``yolo export format=openvino``, ``fine-yolo export format=openvino``:
``half=True`` stores FP16 weights, ``int8=True data=<dataset YAML>`` quantises with NNCF). FINE is recorded there in
its ``tokens`` form (:mod:`fine_yolo.glue.export_form`), whose Transpose-MatMul-Softmax-MatMul-Transpose the CPU plugin
compiles into one fused attention kernel per block (:func:`attention_nodes` finds it). What this module adds is the
runtime side:

* :func:`compile_openvino` compiles an IR (the ``*_openvino_model/`` folder or its ``.xml``) for the CPU with a
  precision hint — ``default`` leaves the plugin's choice, which on a CPU with AMX/AVX512-BF16 is **bf16**, not f32;
  ``f32``/``bf16``/``f16`` force ``INFERENCE_PRECISION_HINT`` — latency mode, one stream, ``threads`` inference
  threads.
* :func:`plugin_info` reads what the compiled model actually uses: the precision hint the plugin settled on,
  execution devices, threads, streams, and the ``runtimePrecision`` of every node of the executable graph counted
  per precision (e.g. ``{"bf16": 180, "f32": 40, "u8": 60}``): a hint is a request, this is what ran.
* :func:`profile` times one inference with ``PERF_COUNT`` and sums the per-node times of the executable graph into
  FINE's nodes (names containing ``model.<N>.fine``), layout ``Reorder`` nodes, and the rest — the numbers behind the
  "where do FINE's milliseconds go" question in ``docs/deployment_cpu.md``.

ultralytics' own predictor (``YOLO(ir).predict``) compiles with ``PERFORMANCE_HINT=LATENCY`` and no precision hint,
i.e. ``precision=default``.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fine_yolo.errors import FineYoloError

PRECISIONS = ("default", "f32", "bf16", "f16")
# FINE's modules sit in the fusion rows as ``model.<i>.fine`` (fine_yolo.nn.fusion); exported node names keep that
# path (OpenVINO: ``__module.model.11.fine/...``, ``self.model.11.fine.q.weight``; ONNX: ``/model.11/fine/...``). The
# group of the FINE in fusion row i is named ``fine<i>`` (yolov8: fine11, fine14).
FINE_NAME = re.compile(r"(?:^|[/._])model[/._](\d+)[/._]fine(?=[/._]|$)")


class OpenVINOError(FineYoloError, RuntimeError):
    """An OpenVINO model that cannot be found, read or compiled as asked; the message names the file or key."""


def openvino_xml(path: str | Path) -> Path:
    """The ``.xml`` of an OpenVINO IR given as the file itself or the folder ultralytics writes."""
    p = Path(path)
    if p.is_dir():
        xmls = sorted(p.glob("*.xml"))
        if not xmls:
            raise OpenVINOError(f"{p}: no .xml in this folder (not an OpenVINO export)")
        return xmls[0]
    if p.suffix != ".xml" or not p.is_file():
        raise OpenVINOError(f"{p}: not an OpenVINO .xml file or *_openvino_model folder")
    return p


def is_openvino(path: str | Path) -> bool:
    """Whether ``path`` names an OpenVINO IR (an ``.xml``, or a folder holding one)."""
    p = Path(path)
    return p.suffix == ".xml" or (p.is_dir() and any(p.glob("*.xml")))


def compile_config(precision: str = "default", threads: int = 0, perf_count: bool = False) -> dict[str, Any]:
    """CPU plugin properties: latency mode, one stream, ``threads`` (0: the plugin's), the precision hint."""
    if precision not in PRECISIONS:
        raise OpenVINOError(f"precision={precision} is not one of {', '.join(PRECISIONS)}")
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(int(threads))
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    if perf_count:
        config["PERF_COUNT"] = "YES"
    return config


def compile_openvino(model: str | Path, precision: str = "default", threads: int = 0, perf_count: bool = False,
                     device: str = "CPU") -> Any:
    """Read and compile an IR for ``device`` with :func:`compile_config`; return the ``ov.CompiledModel``."""
    import openvino as ov

    xml = openvino_xml(model)
    core = ov.Core()
    try:
        return core.compile_model(core.read_model(str(xml)), device, compile_config(precision, threads, perf_count))
    except RuntimeError as e:  # e.g. f16 on a CPU without AVX512-FP16: OpenVINO's first line says which
        raise OpenVINOError(f"{xml}: cannot compile with precision={precision} on {device} "
                            f"({str(e).strip().splitlines()[0]})") from None


def executed_precisions(compiled: Any) -> dict[str, int]:
    """Nodes of the executable graph counted by the precision they run in (``runtimePrecision``), most first."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        if "runtimePrecision" in rt and _rt_str(rt, "layerType") not in {"Input", "Output", "Const"}:
            counts[_rt_str(rt, "runtimePrecision").lower()] += 1
    return dict(counts.most_common())


def _rt_str(rt: Any, key: str) -> str:
    if key not in rt:
        return ""
    value = rt[key]
    return str(value.astype(str) if hasattr(value, "astype") else value)


def plugin_info(compiled: Any) -> dict[str, Any]:
    """What the compiled model runs with: hint, devices, threads, streams and per-precision node counts."""
    import openvino as ov

    def prop(name: str) -> Any:
        try:
            value = compiled.get_property(name)
        except RuntimeError:
            return None
        if hasattr(value, "to_string"):  # an ov.Type: "bf16", "f32"
            return value.to_string()
        return value if isinstance(value, (int, float, str, list)) else str(value)

    return {"openvino": ov.get_version().split("-")[0], "precision_hint": prop("INFERENCE_PRECISION_HINT"),
            "execution_devices": prop("EXECUTION_DEVICES"), "inference_threads": prop("INFERENCE_NUM_THREADS"),
            "streams": prop("NUM_STREAMS"), "executed_precisions": executed_precisions(compiled)}


def fine_group(name: str) -> str | None:
    """``"fine11"`` for a node named after FINE module ``model.11.fine`` (any exporter's spelling), else None."""
    m = FINE_NAME.search(name)
    return f"fine{m.group(1)}" if m else None


def exec_groups(compiled: Any) -> dict[str, str]:
    """FINE group of every node of the executable graph that belongs to a FINE block.

    A node belongs to ``fine<N>`` when its name says so, or when every input it reads (constants aside) comes from
    nodes of ``fine<N>``: the CPU plugin gives nodes it creates generated names (a decomposed attention's
    ``Multiply_5308`` and ``Softmax_5310``, inserted Reorders), which name matching alone misses.
    """
    ops = list(compiled.get_runtime_model().get_ordered_ops())  # topological: producers first
    groups: dict[str, str] = {}
    for op in ops:
        name = op.get_friendly_name()
        g = fine_group(name)
        if g is None:
            sources = {i.get_source_output().get_node() for i in op.inputs()}
            src_groups = {groups.get(s.get_friendly_name()) for s in sources
                          if _rt_str(s.get_rt_info(), "layerType") not in {"Const", "Input"}}
            if len(src_groups) == 1 and None not in src_groups:
                g = src_groups.pop()
        if g is not None:
            groups[name] = g
    return groups


def attention_nodes(compiled: Any, groups: dict[str, str] | None = None) -> dict[str, str]:
    """The executable-graph nodes that compute a FINE block's softmax, mapped to their ``layerType``.

    One ``Subgraph`` per block when the plugin fused the attention into its multi-head-attention kernel
    (Transpose-MatMul-Softmax-MatMul-Transpose, what FINE's token-major form records); a ``Softmax`` node beside
    separate ``MatMul`` nodes when it did not. Read from each node's ``originalLayersNames`` (the ops it absorbed);
    ``groups`` is :func:`exec_groups`' answer when the caller has it.
    """
    groups = exec_groups(compiled) if groups is None else groups
    found = {}
    for op in compiled.get_runtime_model().get_ops():
        name, rt = op.get_friendly_name(), op.get_rt_info()
        if name in groups and "Softmax" in _rt_str(rt, "originalLayersNames"):
            found[name] = _rt_str(rt, "layerType")
    return found


def profile(compiled: Any, x: Any, runs: int = 20) -> dict[str, Any]:
    """Per-node times of the executable graph (median of ``runs`` inferences), summed by where they belong.

    ``compiled`` must be compiled with ``perf_count=True``; ``x`` is the input (1, 3, H, W) float32. Returns
    ``total_ms`` (sum of node times), ``fine_ms`` (nodes of FINE's blocks, :func:`exec_groups`), ``reorder_ms``
    (layout ``Reorder`` nodes; ``reorder_fine_ms`` those inside FINE's blocks), per ``exec_type`` totals and the 15
    slowest FINE nodes. A node the plugin fused across a block boundary keeps one name, so a convolution that
    absorbed a FINE op counts outside FINE: read ``fine_ms`` as a lower bound.
    """
    import numpy as np

    request = compiled.create_infer_request()
    per_node: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(max(1, runs)):
        request.infer({0: x})
        for p in request.profiling_info:
            if p.status.name != "EXECUTED":
                continue
            per_node.setdefault((p.node_name, p.node_type, p.exec_type), []).append(p.real_time.total_seconds() * 1e3)
    groups = exec_groups(compiled)
    rows = [(name, ntype, etype, float(np.median(ts))) for (name, ntype, etype), ts in per_node.items()]
    fine_rows = [r for r in rows if r[0] in groups]
    by_exec: Counter[str] = Counter()
    for r in rows:
        by_exec[r[2]] += r[3]
    reorders = [r for r in rows if r[1] == "Reorder"]
    return {
        "total_ms": sum(r[3] for r in rows),
        "fine_ms": sum(r[3] for r in fine_rows),
        "reorder_ms": sum(r[3] for r in reorders),
        "reorder_fine_ms": sum(r[3] for r in reorders if r[0] in groups),
        "n_nodes": len(rows),
        "n_fine_nodes": len(fine_rows),
        "by_exec_type": {k: round(v, 4) for k, v in by_exec.most_common()},
        "slowest_fine": [{"name": n, "type": t, "exec": e, "ms": round(ms, 4)}
                         for n, t, e, ms in sorted(fine_rows, key=lambda r: -r[3])[:15]],
    }


def timer(compiled: Any, x: Any):
    """A callable running one inference of ``compiled`` on ``x`` (bound once, no copies) and returning ms."""
    import openvino as ov

    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(x, shared_memory=True))

    def run() -> float:
        t0 = time.perf_counter()
        request.infer()
        return (time.perf_counter() - t0) * 1e3

    return run
