"""The benchmark's markdown table (like the paper's Table 1) and its JSON record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fine_yolo.paper import TABLE1
from fine_yolo.tables import markdown_table, millions, num


def markdown(result: dict[str, Any]) -> str:
    """Render a bench result (see :func:`fine_yolo.bench.latency.run_bench`) as markdown.

    One row per model — params, GFLOPs (attention included), network latency median/p90/p99, FPS = 1000 / median,
    end-to-end median and FPS — and a last row with the ratio baseline / FINE (>= 0.97 is the 3% target).
    """
    a = result["args"]
    header = ["model", "params", "GFLOPs", "latency median (ms)", "p90 (ms)", "p99 (ms)", "FPS",
              "end-to-end median (ms)", "end-to-end FPS"]
    rows = []
    for key in ("baseline", "fine"):
        m = result["models"][key]
        net, e2e = m["network"], m.get("e2e") or {}
        rows.append([m["name"], millions(m.get("params")), num(m.get("gflops"), ".1f"), f"{net['median']:.2f}",
                     f"{net['p90']:.2f}", f"{net['p99']:.2f}", f"{net['fps']:.1f}", num(e2e.get("median"), ".2f"),
                     num(e2e.get("fps"), ".1f")])
    r = result["ratio"]["network"]
    re2e = result["ratio"].get("e2e") or {}
    rows.append(["**baseline / FINE**", None, None,
                 f"**{r['of_medians']:.3f}** (95% CI {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}; paired "
                 f"{r['paired_median']:.3f})", None, None, None, num(re2e.get("of_medians"), ".3f"), None])
    lines = [
        f"**{a['baseline']} vs {a['model']}** — {result['backend_desc']}, imgsz {a['imgsz']}, batch 1, "
        f"{result['models']['baseline']['network']['n']} runs per model, interleaved in turns of "
        f"{a.get('block', 1)}",
        "",
        markdown_table(header, rows),
    ]
    env = result["env"]
    where = env.get("gpu") or env.get("cpu")
    lines += ["", f"Environment: {where}; torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, TensorRT "
              f"{env.get('tensorrt') or '-'}, CUDA {env.get('cuda') or '-'}."]
    j = env.get("jetson")
    if j:
        gpu = j.get("gpu_clock") or {}
        lines.append(f"Jetson: {j.get('model')}; power mode {j.get('power_mode') or '?'}; GPU clock "
                     f"{num(gpu.get('cur_hz') and gpu['cur_hz'] / 1e6, '.0f') or '-'} MHz; clocks locked: "
                     f"{j.get('clocks_locked')}.")
    lines += [f"> warning: {w}" for w in result.get("warnings", [])]
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    """Write the full result — environment, arguments, statistics and every raw sample — to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    return path


def summary_table(results: list[dict[str, Any]]) -> str:
    """One row per bench result, laid out like the paper's Table 1 (params, GFLOPs, FPS; baseline and + FINE).

    The paper's FPS (Jetson Orin Nano, TensorRT 10.7, FP16) come from :data:`fine_yolo.paper.TABLE1`.
    """
    header = ["model", "params", "GFLOPs", "FPS", "+ FINE params", "GFLOPs", "FPS", "FINE/baseline FPS",
              "end-to-end FPS (base -> FINE)", "paper FPS (Orin Nano)"]
    rows = []
    for r in results:
        b, f = r["models"]["baseline"], r["models"]["fine"]
        be, fe = b.get("e2e"), f.get("e2e")
        paper, paper_fine = TABLE1.get(b["name"]), TABLE1.get(f"{b['name']}-fine")
        rows.append([
            b["name"], millions(b.get("params")), num(b.get("gflops"), ".1f"), f"{b['network']['fps']:.1f}",
            millions(f.get("params")), num(f.get("gflops"), ".1f"), f"{f['network']['fps']:.1f}",
            f"{r['ratio']['network']['of_medians']:.3f}",
            f"{be['fps']:.1f} -> {fe['fps']:.1f}" if be and fe else None,
            f"{paper['fps']:.0f} -> {paper_fine['fps']:.0f}" if paper and paper_fine else None,
        ])
    return markdown_table(header, rows)


def summary_from_files(paths: list[str | Path]) -> str:
    """:func:`summary_table` of bench JSON files (as written by ``fine-yolo bench json=...``)."""
    return summary_table([json.loads(Path(p).read_text()) for p in paths])
