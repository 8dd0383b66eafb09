#!/usr/bin/env python
"""Reproduce FINE's Table 1 real-time rows (COCO val2017, imgsz 640): yolov8s, yolov10s, yolo12s, each with and
without FINE, trained from scratch with identical settings, evaluated with pycocotools, side by side with the paper.

Hardware: the paper trained these on 4x NVIDIA RTX 3090 (Appendix A); this script defaults to --device 0,1,2,3 and
--batch 64 (16 per GPU; ultralytics accumulates gradients to its nominal batch of 64 anyway). Needs COCO 2017 in
ultralytics' layout (`coco.yaml`, ~20 GB on disk) with annotations/instances_val2017.json, and 32+ GB of RAM.
Cost (an estimate, not measured here): 2-4 days per run on 4x RTX 3090, so 15-25 days for all six runs
(roughly 1,500-2,500 GPU-hours); YOLO12 is the slowest of the three. A run can be selected with --models.

Settings: ultralytics' default hyperparameters for every run, seed 0, deterministic=True; baseline and FINE differ
only in model=. Epochs follow each family's official COCO schedule unless --epochs is given: 500 for YOLOv8 (how
ultralytics trained its YOLOv8 detectors) and YOLOv10 (its README), 600 for YOLO12 (its authors' recipe, which also
changes a few augmentation values; those are left at ultralytics' defaults here, identically for both models).

    python scripts/reproduce_table1_coco.py --dry-run          # check paths, print the 18 commands
    python scripts/reproduce_table1_coco.py                    # train, val (save_json), coco-eval, table
    python scripts/reproduce_table1_coco.py --steps table      # only rebuild results.md from what exists
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from fine_yolo import recipes
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fine_yolo import recipes

SCHEDULE = {"yolov8s": 500, "yolov10s": 500, "yolo12s": 600}  # official COCO epochs per family


def build(argv: list[str] | None = None) -> tuple[recipes.Recipe, object]:
    """The Table 1 recipe and the parsed arguments."""
    p = recipes.parser(
        __doc__, data="coco.yaml", imgsz=640, epochs=0, batch=64, device="0,1,2,3", project="runs/fine-table1"
    )
    args = p.parse_args(argv)
    runs = []
    for base, epochs in SCHEDULE.items():
        extra = {} if args.epochs else {"epochs": str(epochs)}  # the same for the baseline and its FINE twin
        runs.append(recipes.Run(base, f"{base}.yaml", paper=base, extra=extra))
        runs.append(recipes.Run(f"{base}-fine", f"{base}-fine.yaml", baseline=base, paper=f"{base}-fine", extra=extra))
    recipe = recipes.Recipe(
        title="FINE Table 1: COCO val2017, imgsz 640 (AP in %)",
        data=args.data,
        gt=args.gt or recipes.default_gt(args.data, "instances_val2017.json"),
        project=Path(args.project).resolve(),
        imgsz=args.imgsz,
        runs=runs,
        train_args=recipes.common_train_args(args),
        val_args={"device": args.device.split(",")[0]},  # val runs on one device, default batch
        metrics=("AP50:95", "AP50", "AP75", "APs", "APm", "APl"),
        paper=recipes.PAPER_TABLE1,
        paper_note="Paper: arXiv 2606.14005 Table 1 (trained on 4x RTX 3090).",
    )
    return recipe, args


def main(argv: list[str] | None = None) -> int:
    return recipes.script_main(build, argv)


if __name__ == "__main__":
    sys.exit(main())
