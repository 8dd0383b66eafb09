"""``fine-yolo demo``: the main job end to end on the embedded data, on a CPU, offline.

For a FINE model and its baseline, with identical seeds and settings: train briefly with ultralytics (the embedded
``fine-synth.yaml`` is generated on first use), validate ``best.pt``, export it to ONNX, validate the ONNX file with
ONNX Runtime, and print one side-by-side table (params, GFLOPs with attention counted, mAP of PyTorch and ONNX,
training time) with FINE/baseline ratios. Results are also written as ``results.json`` and ``results.md``.

Both models start from the same baseline weights: ultralytics builds the baseline layers of the FINE YAML first with
the same seed, and FINE starts as the identity (W_O = 0), so any difference comes from what FINE learns. Twenty CPU
epochs on 160 images check the whole pipeline, not the paper's numbers: use ``epochs=`` and
``fine-yolo synth n_train=...`` for a longer comparison.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

DEFAULTS: dict[str, object] = {
    "model": "yolov8n-fine.yaml",
    "baseline": "",  # derived from model: yolov8n-fine.yaml -> yolov8n.yaml
    "data": "fine-synth.yaml",
    "epochs": 20,  # from scratch on fine-synth, mAP becomes non-zero near epoch 12
    "imgsz": 256,
    "batch": 16,
    "device": "cpu",
    "workers": 0,
    "seed": 0,
    "project": "runs/fine_demo",
}


def _offline_defaults() -> None:
    # ultralytics would otherwise try to download fonts/assets and pip-install missing packages.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")


def run_one(model: str, args: dict, project: Path) -> dict:
    """Train, validate and export one model; return its row of the table."""
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_num_params

    from fine_yolo.analysis.complexity import torch_gflops

    name = Path(model).stem
    common = {"data": args["data"], "imgsz": args["imgsz"], "batch": args["batch"], "device": args["device"]}
    t0 = time.perf_counter()
    trainer_model = YOLO(model)
    trainer_model.train(
        **common, epochs=args["epochs"], workers=args["workers"], seed=args["seed"], deterministic=True,
        project=str(project), name=name, exist_ok=True, plots=False, amp=False, verbose=False,
    )
    train_s = time.perf_counter() - t0
    best = Path(trainer_model.trainer.best)
    if not best.is_file():
        raise FileNotFoundError(f"training {model} did not write {best}")
    trained = YOLO(str(best))
    metrics = trained.val(**common, plots=False, verbose=False, project=str(project), name=f"{name}_val", exist_ok=True)
    onnx_file = trained.export(format="onnx", imgsz=args["imgsz"], dynamic=False, simplify=True)
    onnx_metrics = YOLO(onnx_file, task="detect").val(
        **common, plots=False, verbose=False, project=str(project), name=f"{name}_onnx_val", exist_ok=True
    )
    net = trained.model.float()
    return {
        "model": model,
        "params": get_num_params(net),
        "gflops": torch_gflops(net, args["imgsz"]),
        "map50": float(metrics.box.map50),
        "map50_95": float(metrics.box.map),
        "onnx_map50_95": float(onnx_metrics.box.map),
        "train_s": train_s,
        "best_pt": str(best),
        "onnx": str(onnx_file),
    }


def table(base: dict, fine: dict, imgsz: int) -> str:
    """Markdown: baseline and FINE side by side, with FINE/baseline ratios."""

    def ratio(key: str) -> str:
        return f"{fine[key] / base[key]:.3f}" if base[key] else "n/a"

    rows = [
        ("params", lambda r: f"{r['params'] / 1e6:.3f}M", "params"),
        (f"GFLOPs @{imgsz} (attention counted)", lambda r: f"{r['gflops']:.3f}", "gflops"),
        ("mAP50 (PyTorch)", lambda r: f"{r['map50']:.4f}", "map50"),
        ("mAP50-95 (PyTorch)", lambda r: f"{r['map50_95']:.4f}", "map50_95"),
        ("mAP50-95 (ONNX Runtime)", lambda r: f"{r['onnx_map50_95']:.4f}", "onnx_map50_95"),
        ("training time (s)", lambda r: f"{r['train_s']:.0f}", "train_s"),
    ]
    lines = [f"| | {Path(base['model']).stem} | {Path(fine['model']).stem} | FINE / baseline |", "|---|---|---|---|"]
    lines += [f"| {label} | {fmt(base)} | {fmt(fine)} | {ratio(key)} |" for label, fmt, key in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``fine-yolo demo [model=yolov8n-fine.yaml] [epochs=20] [imgsz=256] [project=runs/fine_demo] ...``."""
    from fine_yolo.cli import parse_kv
    from fine_yolo.models import baseline_name

    args = parse_kv(argv, DEFAULTS)
    _offline_defaults()
    from fine_yolo.ultralytics_glue import register

    register()  # in case the start-up hook is turned off
    baseline = str(args["baseline"]) or baseline_name(str(args["model"]))
    project = Path(str(args["project"])).resolve()
    project.mkdir(parents=True, exist_ok=True)
    base_row = run_one(baseline, args, project)
    fine_row = run_one(str(args["model"]), args, project)
    md = table(base_row, fine_row, int(args["imgsz"]))
    (project / "results.json").write_text(json.dumps({"args": args, "baseline": base_row, "fine": fine_row}, indent=2))
    (project / "results.md").write_text(md + "\n")
    print(f"\n{md}\n\nResults: {project / 'results.md'} and {project / 'results.json'}")
    return 0
