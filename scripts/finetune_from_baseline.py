#!/usr/bin/env python
"""The cheap path: fine-tune a FINE model from an official baseline checkpoint instead of training from scratch.

FINE keeps every layer index and tensor name of its baseline, so `pretrained=yolov8s.pt` transfers all baseline
tensors (ultralytics prints "Transferred N/N items") and only FINE's own layers start from their initialisation.
To separate FINE's effect from the extra epochs, the baseline gets the same fine-tuning:

    <base>-official   the official checkpoint, evaluated as it is
    <base>-ft         <base>.yaml       pretrained=<base>.pt, --epochs more epochs
    <base>-fine-ft    <base>-fine.yaml  pretrained=<base>.pt, --epochs more epochs, identical settings

Hardware: same as training (the defaults assume 4 GPUs, --device 0,1,2,3; one GPU works, ~4x slower).
Cost (an estimate, not measured here) on COCO at 640 with the default 30 epochs: 5-8 h per fine-tuned run on
4x RTX 3090, i.e. about 6% of the 500-epoch schedule; the official checkpoint's val takes minutes. `<base>.pt` is
downloaded by ultralytics on first use unless it is already in the working directory.

    python scripts/finetune_from_baseline.py --dry-run
    python scripts/finetune_from_baseline.py --base yolov10s --epochs 50
    python scripts/finetune_from_baseline.py --data OUT/VisDrone-fine.yaml --imgsz 800
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from fine_yolo import recipes
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fine_yolo import recipes

BASES = ("yolov8s", "yolov10s", "yolo12s")


def build(argv: list[str] | None = None) -> tuple[recipes.Recipe, object]:
    """The fine-tuning recipe and the parsed arguments."""
    p = recipes.parser(
        __doc__, data="coco.yaml", imgsz=640, epochs=30, batch=64, device="0,1,2,3", project="runs/fine-finetune"
    )
    p.add_argument("--base", default="yolov8s", choices=BASES, help="baseline family (default yolov8s)")
    p.add_argument("--weights", default="", help="baseline checkpoint (default <base>.pt)")
    args = p.parse_args(argv)
    base, weights = args.base, args.weights or f"{args.base}.pt"
    coco = Path(args.data).name == "coco.yaml"
    pretrained = {"pretrained": weights}
    recipe = recipes.Recipe(
        title=f"FINE fine-tuned from {weights}: {args.data}, imgsz {args.imgsz}, +{args.epochs} epochs (AP in %)",
        data=args.data,
        gt=args.gt or recipes.default_gt(args.data, "instances_val2017.json" if coco else "instances_val.json"),
        project=Path(args.project).resolve(),
        imgsz=args.imgsz,
        runs=[
            recipes.Run(f"{base}-official", weights, paper=base if coco else None, train=False),
            recipes.Run(f"{base}-ft", f"{base}.yaml", baseline=f"{base}-official", extra=pretrained),
            recipes.Run(
                f"{base}-fine-ft",
                f"{base}-fine.yaml",
                baseline=f"{base}-ft",
                paper=f"{base}-fine" if coco else None,
                extra=pretrained,
            ),
        ],
        train_args=recipes.common_train_args(args),
        val_args={"device": args.device.split(",")[0]},  # val runs on one device, default batch
        metrics=("AP50:95", "AP50", "AP75", "APs", "APm", "APl"),
        paper=recipes.PAPER_TABLE1 if coco else {},
        paper_note="Paper columns: Table 1's from-scratch numbers, for orientation only." if coco else "",
    )
    return recipe, args


def main(argv: list[str] | None = None) -> int:
    return recipes.script_main(build, argv)


if __name__ == "__main__":
    sys.exit(main())
