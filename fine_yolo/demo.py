"""``fine-yolo demo``: the main job — a seed-controlled FINE-vs-baseline comparison on the embedded data, on a CPU.

What it does (about 20 minutes on a 2-core CPU, offline; ``fine-synth.yaml`` is generated on first use):

1. trains the baseline (``yolov8n.yaml``) once from scratch for ``base_epochs=20`` epochs (seed 0);
2. runs ``fine-yolo compare`` from that checkpoint: for each of ``seeds=4`` seeds, the baseline continued for
   ``epochs=8`` more epochs against its FINE model (``yolov8n-fine.yaml pretrained=`` the same checkpoint: every
   baseline tensor transfers and FINE starts as the identity, so both arms start from the same function), with
   identical settings, then pycocotools AP, the error counts (paper Table 5) and the paired differences with their
   95% t-interval and verdict; the PNGs are ``compare/curves.png`` and ``compare/differences.png``;
3. exports the seed-0 pair to ONNX and validates both files with ONNX Runtime beside PyTorch (``onnx=False`` skips).

Why this design (measured here, 2-core CPU, 256 px, 160 training images). One seed of both models from scratch takes
8.7 minutes (baseline 249 s, FINE 273 s for 20 epochs), so 20 minutes buy two seeds, and from scratch one seed moves
the answer by +-30%: the 4-seed interval of issue 9 was [-5.6, +5.2] mAP50-95 points. Starting both arms from one
trained baseline removes the largest source of spread (the random initialisation and the first epochs): seeds 0-4 of
20 + 10 epochs gave pycocotools AP50:95 +0.1 [-1.2, +1.5] points (per seed FINE - baseline -0.8, +2.0, +0.3, -0.4,
-0.4), an interval four times narrower, for 25 minutes. 4 seeds x 8 epochs fit the 20 minutes. It is also the path
of users with official weights (``pretrained=yolov8n.pt``). ``base_epochs=0`` compares from scratch instead
(then give ``epochs=`` enough to converge: the first non-zero mAP comes near epoch 12).

The TP/FP/FN counts use ``conf=0.1``, not the paper's 0.5: after 28 epochs on 160 images no detection of either model
scores above about 0.27, so at 0.5 both would count every box as missed and say nothing.

A short demo is not an accuracy result: a few epochs on 160 images, and an interval that contains 0 is reported as no
measurable difference. The longer fine-synth study is ``docs/fine_synth_study.md``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from fine_yolo.args import Command, Option
from fine_yolo.tables import markdown_table, num

DESCRIPTION = """\
Trains the baseline once from scratch (base_epochs), then runs `fine-yolo compare` from that checkpoint: per seed,
the baseline continued vs its FINE model fine-tuned from it (FINE starts as the identity), the same epochs and
settings; prints per-seed values, the paired differences with their 95% t-interval, the verdict of the primary
metric (the others Holm-adjusted) and the Table-5 error rows; writes compare/curves.png and
compare/differences.png; exports the seed-0 pair to ONNX and validates it with ONNX Runtime. Defaults take about
15 minutes on a free 2-core CPU. base_epochs=0 compares from scratch."""


def train_base(args: dict[str, Any], baseline: str, project: Path) -> Path:
    """Train (or find finished, or resume) the shared baseline ``project/base``; return its ``best.pt``."""
    from fine_yolo.compare.plan import Plan, RunSpec
    from fine_yolo.compare.runner import run_plan

    train = {"model": baseline, "data": args["data"], "epochs": args["base_epochs"], "imgsz": args["imgsz"],
             "batch": args["batch"], "workers": args["workers"], "deterministic": True, "plots": False, "seed": 0,
             "exist_ok": True, "project": str(project), "name": "base"}
    spec = RunSpec(0, "base", baseline, train)
    print(f"fine-yolo demo: 1/3 the shared baseline, {args['base_epochs']} epochs from scratch -> {spec.run_dir}")
    run_plan(Plan(model=baseline, baseline=baseline, seeds=[0], project=project, runs=[spec]), device=args["device"])
    return spec.run_dir / "weights" / "best.pt"


def onnx_check(doc: dict[str, Any], args: dict[str, Any]) -> str:
    """Export the seed-0 pair to ONNX, validate with ONNX Runtime; a markdown table beside the PyTorch numbers."""
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_num_params

    from fine_yolo.bench.complexity import torch_gflops

    seed = doc["settings"]["seeds"][0]
    rows = []
    for arm in ("baseline", "fine"):
        run = doc["runs"][f"seed{seed}-{arm}"]
        best = Path(run["run_dir"]) / "weights" / "best.pt"
        model = YOLO(str(best))
        net = model.model.float()
        params, gflops = get_num_params(net), torch_gflops(net, args["imgsz"])
        onnx_file = model.export(format="onnx", imgsz=args["imgsz"], dynamic=False, simplify=True)
        val_dir = Path(run["run_dir"]).parent.parent / "onnx_val"
        onnx_map = YOLO(onnx_file, task="detect").val(
            data=args["data"], imgsz=args["imgsz"], batch=1, device="cpu", plots=False, verbose=False,
            project=str(val_dir), name=f"seed{seed}-{arm}", exist_ok=True,
        ).box.map
        rows.append([Path(run["model"]).stem, f"{params / 1e6:.3f}M", num(gflops, ".3f"),
                     num(run["val"]["map50_95"], ".4f"), num(float(onnx_map), ".4f")])
    header = ["model (seed 0)", "params", f"GFLOPs @{args['imgsz']} (attention counted)", "mAP50-95 PyTorch",
              "mAP50-95 ONNX Runtime"]
    return markdown_table(header, rows)


def run(args: dict[str, Any], extra: dict[str, Any]) -> int:
    """Base training, ``compare``, ONNX check; prints the comparison, its verdicts and the Table-5 rows."""
    from fine_yolo.compare.command import COMMAND as COMPARE
    from fine_yolo.errors import UsageError
    from fine_yolo.models import baseline_name

    try:
        baseline = str(args["baseline"]) or baseline_name(str(args["model"]))
    except ValueError as e:
        raise UsageError(f"argument 'model={args['model']}': {e}; give baseline= explicitly") from None
    project = Path(str(args["project"])).resolve()
    project.mkdir(parents=True, exist_ok=True)
    tokens = [f"model={args['model']}", f"baseline={baseline}", f"data={args['data']}", f"seeds={args['seeds']}",
              f"epochs={args['epochs']}", f"imgsz={args['imgsz']}", f"batch={args['batch']}",
              f"device={args['device']}", f"workers={args['workers']}", f"conf={args['conf']}",
              f"project={project / 'compare'}"]
    if args["base_epochs"] > 0:
        base = train_base(args, baseline, project)
        tokens += [f"pretrained={base}",
                   f"title={Path(str(args['model'])).stem} vs {Path(baseline).stem}, both from a {args['base_epochs']}"
                   f"-epoch {Path(baseline).stem}, {args['epochs']} more epochs"]
    else:
        tokens.append(f"title={Path(str(args['model'])).stem} vs {Path(baseline).stem} from scratch")
    print(f"fine-yolo demo: 2/3 {shlex.join(['fine-yolo', 'compare', *tokens])}")  # a line a shell can rerun
    COMPARE.run(*COMPARE.parse(tokens + [f"{k}={v}" for k, v in extra.items()]))
    if args["onnx"]:
        print("fine-yolo demo: 3/3 ONNX export of the seed-0 pair, validated with ONNX Runtime")
        doc = json.loads((project / "compare" / "compare.json").read_text())
        table = onnx_check(doc, args)
        (project / "onnx.md").write_text(table + "\n")
        print(f"\n{table}\n\n(ONNX Runtime validates at batch 1 with square padding, PyTorch in rectangular batches: "
              f"small differences are expected.) Written: {project / 'onnx.md'}")
    return 0


COMMAND = Command(
    options={
        "model": Option("yolov8n-fine.yaml", "the FINE model"),
        "baseline": Option("", "its baseline (default: model without -fine)"),
        "data": Option("fine-synth.yaml", "dataset YAML (the embedded one is generated on first use)"),
        "base_epochs": Option(20, "epochs of the shared baseline both arms start from (0: both from scratch)"),
        "epochs": Option(8, "epochs of each compared run"),
        "seeds": Option("4", "number of seeds (from 0) or a comma list"),
        "imgsz": Option(256, "image size"),
        "batch": Option(16, "batch size"),
        "device": Option("cpu", "device(s), as for compare"),
        "workers": Option(0, "dataloader workers (0: in the training process; fastest on 2 cores)"),
        "conf": Option(0.1, "confidence threshold of the TP/FP/FN counts (see the description)"),
        "onnx": Option(True, "export the seed-0 pair to ONNX and validate it with ONNX Runtime"),
        "project": Option("runs/fine_demo", "output directory"),
    },
    run=run,
    example="fine-yolo demo seeds=2 epochs=4   # a shorter run of the same pipeline",
    description=DESCRIPTION,
    passthrough="any `yolo train` argument, passed to every compared run",
)
