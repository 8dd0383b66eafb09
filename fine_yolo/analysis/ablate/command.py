"""The ``fine-yolo ablate`` command (``COMMAND``) and its ``python -m fine_yolo.analysis.ablate`` entry point:
variant YAMLs (:mod:`.variants`), cost (:mod:`.cost`), accuracy with ``data=`` (:mod:`.accuracy`), then
``ablate.md``, ``ablate.json`` and ``ablate.png`` (:mod:`.report`)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fine_yolo.analysis.ablate.accuracy import accuracy_plan, run_accuracy
from fine_yolo.analysis.ablate.cost import cost_rows
from fine_yolo.analysis.ablate.report import markdown, paper_document, plot
from fine_yolo.analysis.ablate.variants import model_yaml, parse_tables, read_stages, select, write_yamls
from fine_yolo.args import Command, Option
from fine_yolo.devices import set_torch_threads
from fine_yolo.errors import UsageError


def _local(value: str) -> str:
    """An existing local file as an absolute path (the runs may start elsewhere); other names unchanged."""
    p = Path(value).expanduser()
    return str(p.resolve()) if p.is_file() else value


def _run(args: dict[str, Any], extra: dict[str, Any]) -> int:
    """The command: variant YAMLs, the accuracy plan (``data=``), cost, accuracy, then the report files."""
    import torch

    from fine_yolo.bench.env import cpu_name
    from fine_yolo.compare.command import parse_seeds
    from fine_yolo.models import baseline_name

    if extra and not args["data"]:
        raise UsageError(f"unknown argument(s) {', '.join(extra)}: `yolo train` keys pass through only with data=")
    set_torch_threads(args["threads"])
    model = _local(str(args["model"]))
    tables = parse_tables(str(args["table"]))
    variants = select(tables, str(args["variants"]))
    try:
        baseline = _local(str(args["baseline"])) if args["baseline"] else baseline_name(model)
    except ValueError as e:
        raise UsageError(f"argument 'model={args['model']}': {e}; give baseline= explicitly") from None
    out = Path(str(args["out"]))
    base = model_yaml(model)  # a model that does not resolve is a usage error, before anything is built
    stages = read_stages(model)
    paths = write_yamls(base, variants, stages, out)
    imgsz = int(args["imgsz"])
    settings = {"model": str(args["model"]), "baseline": baseline, "imgsz": imgsz, "tables": tables,
                "iters": int(args["iters"]), "threads": torch.get_num_threads(), "cpu": cpu_name(),
                "data": str(args["data"]), "split": str(args["split"]),
                "stages": [asdict(s) for s in stages]}

    accuracy = plan = arms = None
    if args["data"]:
        train_args = {"data": _local(str(args["data"])), "epochs": args["epochs"], "imgsz": imgsz,
                      "batch": args["batch"], **({"pretrained": _local(str(args["pretrained"]))}
                                                 if args["pretrained"] else {}), **extra}
        try:
            plan, arms = accuracy_plan(baseline, variants, stages, paths, parse_seeds(str(args["seeds"])),
                                       out / "accuracy", train_args)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if args["dry_run"]:
            for spec in plan.runs:
                print(f"# {spec.name}")
                print(spec.command())
            return 0
        from fine_yolo._hook import enabled

        if not enabled():
            raise UsageError("the accuracy part runs plain `yolo train` processes, which know FINE through the "
                             "start-up hook; it is off (FINE_YOLO_HOOK=0)")
    elif args["dry_run"]:
        raise UsageError("dry_run=True prints the training commands of the accuracy part: give data=")

    settings["threads"] = torch.get_num_threads()  # what the latency runs get (ultralytics' import may change it)
    cost = cost_rows(model, baseline, variants, stages, paths, imgsz, int(args["iters"]))
    if plan is not None:
        accuracy = run_accuracy(plan, arms, args)
    summary = accuracy["summary"] if accuracy else None
    md = markdown(tables, variants, cost, stages, settings, summary)
    out.mkdir(parents=True, exist_ok=True)
    json_path = Path(str(args["json"])) if args["json"] else out / "ablate.json"
    document = {"settings": settings, "baseline": cost["baseline"], "variants": cost["variants"],
                "tables": {t: [v.name for v in variants if v.table == t] for t in tables},
                "paper": paper_document(tables), "accuracy": accuracy}
    json_path.write_text(json.dumps(document, indent=2, default=_jsonable))
    (out / "ablate.md").write_text(md)
    png = plot(tables, variants, cost, out / "ablate.png", summary)
    print(f"\n{md}\nWritten: {out / 'ablate.md'}, {json_path}, {png}, variant YAMLs in {out / 'yaml'}")
    return 0


def _jsonable(x: Any) -> Any:
    """``json.dumps``' fallback: a non-finite float as null, a number-like (a torch or numpy scalar) as a float."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return float(x) if hasattr(x, "__float__") else str(x)


DESCRIPTION = """\
Cost (always): params, GFLOPs (attention counted), FINE blocks' GFLOPs and peak activation memory, and interleaved
CPU latency of the baseline and every variant of the model's FINE rows, in the layout of the paper's Table 3
(attention), Fig. 5 (r, k), Table 4 (head dim) and Table 6 (pooling), the paper's numbers beside ours.
Accuracy (with data=): every variant trained and evaluated against the same baseline runs with the seed-controlled
machinery of `fine-yolo compare`; AP50:95 per variant with its paired difference and 95% t-interval over seeds.
Variants per table: 3: vanilla, window, area, linear, aats; 5: r1k1, r1k2, r2k1, r2k2, r4k1, r4k2, shipped;
4: d256, d64, d32, d16, d8, d4, d2; 6: dwconv, max, avg."""

COMMAND = Command(
    options={
        "model": Option("yolov8s-fine.yaml", "FINE model YAML whose FINE rows are varied"),
        "baseline": Option("", "baseline model (default: model without -fine)"),
        "table": Option("all", "3, 4, 5 (Fig. 5), 6, all, or a comma list"),
        "variants": Option("", "comma list of variant names to keep (default: every variant of the tables)"),
        "imgsz": Option(640, "input size (cost and, with data=, training and evaluation)"),
        "iters": Option(20, "timed runs per model for the latency column (0: no latency)"),
        "threads": Option(0, "torch CPU threads (0: torch's default)"),
        "out": Option("runs/ablate", "output directory (ablate.md, ablate.json, ablate.png, yaml/, accuracy/)"),
        "json": Option("", "write the JSON here instead of out/ablate.json"),
        "data": Option("", "dataset YAML: also train and evaluate every variant (accuracy part)"),
        "seeds": Option("3", "accuracy: number of seeds (from 0) or a comma list"),
        "epochs": Option(100, "accuracy: training epochs of every run"),
        "batch": Option(16, "accuracy: train and evaluation batch size"),
        "pretrained": Option("", "accuracy: checkpoint every run starts from (warm start), e.g. yolov8s.pt"),
        "device": Option("", "accuracy: '' (ultralytics' choice), cpu, 0, or 0,1,2,3 (one run per device)"),
        "split": Option("val", "accuracy: dataset split to evaluate"),
        "conf": Option(0.5, "accuracy: confidence threshold of the TP/FP/FN counts"),
        "iou": Option(0.5, "accuracy: IoU threshold of the TP/FP/FN counts"),
        "dry_run": Option(False, "accuracy: print each run's `yolo train` command and train nothing"),
    },
    run=_run,
    example="fine-yolo ablate model=yolov8s-fine.yaml table=3 imgsz=640 out=runs/ablate",
    description=DESCRIPTION,
    passthrough="with data=: any `yolo train` argument, passed to every run (e.g. lr0=0.02 workers=4)",
)


def main(argv: list[str]) -> int:
    """Run the command from a raw argv list: ``help`` prints the keys, bad input one sentence (as ``fine-yolo``)."""
    return COMMAND.main(argv, prog="python -m fine_yolo.analysis.ablate")
