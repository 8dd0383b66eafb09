"""Params and GFLOPs of models side by side, counted two ways (:mod:`fine_yolo.bench.complexity`: ultralytics' thop
figure, which misses functional attention, and torch's FlopCounterMode, which counts it and reads yolov8s at 640 as
the paper's 28.6 GFLOPs), with the paper's Table 1 overheads beside.

CLI: ``fine-yolo flops models=yolov8s.yaml,yolov8s-fine.yaml imgsz=640 json=out.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from fine_yolo.args import Command, Option
from fine_yolo.bench.complexity import measure
from fine_yolo.errors import FineYoloError
from fine_yolo.paper import TABLE1
from fine_yolo.tables import markdown_table, millions, signed, signed_millions


def overhead_table(pairs: list[tuple[str, str]], imgsz: int = 640) -> tuple[list[dict], str]:
    """Measure (baseline, FINE) pairs; return rows for JSON and a markdown table with the paper's overheads beside."""
    rows, cells = [], []
    for base_name, fine_name in pairs:
        b, f = measure(base_name, imgsz), measure(fine_name, imgsz)
        key = Path(base_name).stem
        paper, paper_fine = TABLE1.get(key), TABLE1.get(f"{key}-fine")
        row = {"baseline": asdict(b), "fine": asdict(f), "d_params": f.params - b.params,
               "d_gflops_torch": f.gflops_torch - b.gflops_torch, "d_gflops_thop": f.gflops_thop - b.gflops_thop}
        if paper:
            row["paper_d_params_m"] = round(paper_fine["params_m"] - paper["params_m"], 2)
            row["paper_d_gflops"] = round(paper_fine["gflops"] - paper["gflops"], 2)
        rows.append(row)
        cells.append([
            key, millions(b.params), f"{b.gflops_thop:.1f}", f"{b.gflops_torch:.1f}", millions(f.params),
            f"{f.gflops_torch:.1f}", signed_millions(row["d_params"]), f"{signed(row['d_gflops_torch'], '.2f')}G",
            f"{row['paper_d_params_m']:+.1f}M" if paper else None, f"{row['paper_d_gflops']:+.1f}G" if paper else None,
        ])
    header = ["model", "params", "GFLOPs (thop)", "GFLOPs (torch)", "FINE params", "FINE GFLOPs (torch)", "Δparams",
              "ΔGFLOPs", "paper Δparams", "paper ΔGFLOPs"]
    return rows, markdown_table(header, cells)


class FlopsArgumentError(FineYoloError, ValueError):
    exit_code = 2


def _run(args: dict, extra: dict) -> int:
    names = [m for m in str(args["models"]).split(",") if m]
    if len(names) % 2:
        raise FlopsArgumentError("models= takes pairs: baseline,fine[,baseline,fine...]")
    rows, table = overhead_table(list(zip(names[::2], names[1::2])), args["imgsz"])
    print(table)
    if args["json"]:
        Path(args["json"]).write_text(json.dumps(rows, indent=2))
    return 0


COMMAND = Command(
    options={
        "models": Option("yolov8s.yaml,yolov8s-fine.yaml", "comma-separated pairs baseline,fine[,baseline,fine...]"),
        "imgsz": Option(640, "input size"),
        "json": Option("", "write the rows as JSON here"),
    },
    run=_run,
    example="fine-yolo flops models=yolov8s.yaml,yolov8s-fine.yaml,yolo12s.yaml,yolo12s-fine.yaml",
)
