"""Where FINE's milliseconds go in OpenVINO's CPU plugin: PERF_COUNT profiles of a baseline and its FINE model.

    python research/openvino_profile.py models=yolov8s,yolov10s,yolo12s imgsz=640 threads=2 precision=default,f32

For each pair, ultralytics exports both models to OpenVINO IR (FP32 weights, static shape) under ``out``; each IR
is compiled with ``PERF_COUNT`` at each precision and profiled (:func:`fine_yolo.export.openvino.profile`, median
per node over ``runs`` inferences, the two models alternating ``rounds`` times). The FINE model's extra time is split
into: the nodes of FINE's blocks (:func:`fine_yolo.export.openvino.exec_groups`: named after ``fine<N>``, or fed
only by such nodes, like the nodes the plugin creates with generated names), among them the attention (the fused
multi-head-attention ``Subgraph`` of :func:`fine_yolo.export.openvino.attention_nodes`, or a decomposed MatMul +
Softmax) and the Reorders; other ``Reorder`` and other nodes only the FINE graph has; and the change in the nodes
both graphs share. Prints a markdown table and writes JSON (``out/profile.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fine_yolo.args import Command, Option, split_list
from fine_yolo.tables import markdown_table


def _node_times(compiled: Any, x: Any, runs: int) -> dict[str, tuple[str, float]]:
    import numpy as np

    request = compiled.create_infer_request()
    per: dict[str, list[float]] = {}
    types: dict[str, str] = {}
    for _ in range(runs):
        request.infer({0: x})
        for p in request.profiling_info:
            if p.status.name == "EXECUTED":
                per.setdefault(p.node_name, []).append(p.real_time.total_seconds() * 1e3)
                types[p.node_name] = p.node_type
    return {n: (types[n], float(np.median(t))) for n, t in per.items()}


def split_extra(base: dict[str, tuple[str, float]], fine: dict[str, tuple[str, float]],
                groups: dict[str, str], attention: set[str]) -> dict[str, float]:
    """FINE total - baseline total, split by where the difference sits (module doc); ``groups``: FINE's nodes;
    ``attention``: those computing a softmax (fused or not); FINE's MatMul nodes count as attention too."""
    out = {"baseline_ms": sum(t for _, t in base.values()), "fine_total_ms": sum(t for _, t in fine.values()),
           "fine_block_ms": 0.0, "fine_attention_ms": 0.0, "fine_reorders_ms": 0.0, "new_reorders_ms": 0.0,
           "new_other_ms": 0.0, "shared_delta_ms": 0.0}
    for name, (ntype, t) in fine.items():
        if name in groups:
            out["fine_block_ms"] += t
            if name in attention or ntype == "MatMul":
                out["fine_attention_ms"] += t
            if ntype == "Reorder":
                out["fine_reorders_ms"] += t
        elif name not in base:
            out["new_reorders_ms" if ntype == "Reorder" else "new_other_ms"] += t
        else:
            out["shared_delta_ms"] += t - base[name][1]
    out["shared_delta_ms"] -= sum(t for n, (_, t) in base.items() if n not in fine)  # baseline-only nodes
    out["extra_ms"] = out["fine_total_ms"] - out["baseline_ms"]
    return out


def _run(args: dict[str, Any], extra: dict[str, Any]) -> int:
    import numpy as np
    from tqdm import tqdm

    from fine_yolo.bench.backends import _export
    from fine_yolo.export.openvino import attention_nodes, compile_openvino, exec_groups

    out = Path(args["out"])
    rows, result = [], {}
    x = np.random.default_rng(0).random((1, 3, args["imgsz"], args["imgsz"]), dtype=np.float32)
    for name in tqdm(split_list(args["models"], "models"), desc="models"):
        irs = {k: _export(f"{name}{s}.yaml", "openvino", out / "ir", imgsz=args["imgsz"], device="cpu")
               for k, s in (("baseline", ""), ("fine", "-fine"))}
        for precision in split_list(args["precision"], "precision"):
            compiled = {k: compile_openvino(p, precision, args["threads"], perf_count=True) for k, p in irs.items()}
            acc: dict[str, list[dict]] = {"baseline": [], "fine": []}
            for _ in range(args["rounds"]):  # alternate, so both see the same machine load
                for k, c in compiled.items():
                    acc[k].append(_node_times(c, x, args["runs"]))
            med = {k: {n: (v[0][n][0], float(np.median([r[n][1] for r in v if n in r]))) for n in v[0]}
                   for k, v in acc.items()}
            groups = exec_groups(compiled["fine"])
            s = split_extra(med["baseline"], med["fine"], groups, set(attention_nodes(compiled["fine"], groups)))
            result[f"{name}/{precision}"] = s
            rows.append([name, precision, f"{s['baseline_ms']:.2f}", f"{s['fine_total_ms']:.2f}",
                         f"{s['extra_ms']:+.2f}", f"{s['fine_block_ms']:.2f}", f"{s['fine_attention_ms']:.2f}",
                         f"{s['fine_reorders_ms']:.2f}", f"{s['new_reorders_ms']:.2f}", f"{s['new_other_ms']:.2f}",
                         f"{s['shared_delta_ms']:+.2f}"])
    print(markdown_table(["model", "precision", "baseline (ms, sum of nodes)", "FINE model", "extra",
                          "FINE blocks", "of which attention", "of which Reorders",
                          "other new Reorders", "other new nodes", "shared nodes' change"], rows))
    (out / "profile.json").write_text(json.dumps(result, indent=1))
    return 0


COMMAND = Command(
    options={
        "models": Option("yolov8s,yolov10s,yolo12s", "baseline names; each is compared with <name>-fine"),
        "imgsz": Option(640, "input size"),
        "threads": Option(2, "CPU inference threads"),
        "precision": Option("default,f32", "precision hints to profile (default, f32, bf16, f16)"),
        "runs": Option(10, "inferences per profile (median per node)"),
        "rounds": Option(3, "alternating profiles per model"),
        "out": Option("runs/openvino_profile", "IR and JSON folder"),
    },
    run=_run,
    example="python research/openvino_profile.py models=yolov8s precision=default",
)

if __name__ == "__main__":
    sys.exit(COMMAND.main(sys.argv[1:], "python research/openvino_profile.py"))
