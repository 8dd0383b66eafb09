"""The benchmark's markdown table (like the paper's Table 1) and its JSON record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _f(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _params(p: int | None) -> str:
    return "-" if p is None else f"{p / 1e6:.2f}M"


def markdown(result: dict[str, Any]) -> str:
    """Render a bench result (see :func:`fine_yolo.bench.latency.run_bench`) as markdown.

    One row per model — params, GFLOPs (attention included), network latency median/p90/p99, FPS = 1000 / median,
    end-to-end median and FPS — and a last row with the ratio baseline / FINE (>= 0.97 is the 3% target).
    """
    a = result["args"]
    rows = [
        f"**{a['baseline']} vs {a['model']}** — {result['backend_desc']}, imgsz {a['imgsz']}, batch 1, "
        f"{result['models']['baseline']['network']['n']} runs per model, interleaved in turns of "
        f"{a.get('block', 1)}",
        "",
        "| model | params | GFLOPs | latency median (ms) | p90 (ms) | p99 (ms) | FPS | end-to-end median (ms) "
        "| end-to-end FPS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in ("baseline", "fine"):
        m = result["models"][key]
        net, e2e = m["network"], m.get("e2e")
        rows.append(
            f"| {m['name']} | {_params(m.get('params'))} | {_f(m.get('gflops'), '.1f')} | {net['median']:.2f} "
            f"| {net['p90']:.2f} | {net['p99']:.2f} | {net['fps']:.1f} | {_f(e2e and e2e['median'], '.2f')} "
            f"| {_f(e2e and e2e['fps'], '.1f')} |"
        )
    r = result["ratio"]["network"]
    re2e = result["ratio"].get("e2e")
    rows.append(
        f"| **baseline / FINE** | | | **{r['of_medians']:.3f}** (95% CI {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}; "
        f"paired {r['paired_median']:.3f}) | | | | {_f(re2e and re2e['of_medians'], '.3f')} | |"
    )
    env = result["env"]
    where = env.get("gpu") or env.get("cpu")
    rows += ["", f"Environment: {where}; torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, TensorRT "
             f"{env.get('tensorrt') or '-'}, CUDA {env.get('cuda') or '-'}."]
    j = env.get("jetson")
    if j:
        gpu = j.get("gpu_clock") or {}
        rows.append(f"Jetson: {j.get('model')}; power mode {j.get('power_mode') or '?'}; GPU clock "
                    f"{_f(gpu.get('cur_hz') and gpu['cur_hz'] / 1e6, '.0f')} MHz; clocks locked: "
                    f"{j.get('clocks_locked')}.")
    for w in result.get("warnings", []):
        rows.append(f"> warning: {w}")
    return "\n".join(rows)


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    """Write the full result — environment, arguments, statistics and every raw sample — to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    return path


# Paper Table 1 (Jetson Orin Nano, TensorRT 10.7, FP16): FPS of the S models without and with FINE.
PAPER_FPS = {"yolov8s": (189, 177), "yolov10s": (173, 153), "yolo12s": (112, 106)}


def summary_table(results: list[dict[str, Any]]) -> str:
    """One row per bench result, laid out like the paper's Table 1 (params, GFLOPs, FPS; baseline and + FINE)."""
    lines = [
        "| model | params | GFLOPs | FPS | + FINE params | GFLOPs | FPS | FINE/baseline FPS | end-to-end FPS "
        "(base -> FINE) | paper FPS (Orin Nano) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b, f = r["models"]["baseline"], r["models"]["fine"]
        be, fe = b.get("e2e"), f.get("e2e")
        e2e = f"{be['fps']:.1f} -> {fe['fps']:.1f}" if be and fe else "-"
        paper = PAPER_FPS.get(b["name"])
        lines.append(
            f"| {b['name']} | {_params(b.get('params'))} | {_f(b.get('gflops'), '.1f')} | {b['network']['fps']:.1f} "
            f"| {_params(f.get('params'))} | {_f(f.get('gflops'), '.1f')} | {f['network']['fps']:.1f} "
            f"| {r['ratio']['network']['of_medians']:.3f} | {e2e} | {f'{paper[0]} -> {paper[1]}' if paper else '-'} |"
        )
    return "\n".join(lines)


def summary_from_files(paths: list[str | Path]) -> str:
    """:func:`summary_table` of bench JSON files (as written by ``fine-yolo bench json=...``)."""
    return summary_table([json.loads(Path(p).read_text()) for p in paths])
