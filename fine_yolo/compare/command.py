"""``fine-yolo compare``: FINE vs its baseline, trained in pairs over seeds, evaluated, with an honest verdict.

For each seed both arms are trained with identical ``yolo train`` arguments (see :mod:`fine_yolo.compare.plan`),
each ``best.pt`` is evaluated with pycocotools and the error counts (:mod:`fine_yolo.compare.evaluate`), and the
paired differences FINE - baseline are summarised over the complete seed pairs (:mod:`fine_yolo.compare.stats`): the
primary metric (``primary=``) gets the verdict with its 95% t-interval and the minimum detectable difference, every
other metric a Holm-adjusted p-value and a Bonferroni-widened interval. Everything lands under ``project/``:
``runs/`` (ultralytics' run directories), ``eval/``, ``logs/``, ``compare.json``, ``compare.md``, ``curves.png`` and
``differences.png``.

A rerun with the same settings trains nothing and only evaluates what is new and reports; an interrupted run resumes;
a run whose settings changed is moved to ``runs/stale/`` and trained again (:mod:`fine_yolo.compare.runner`).
``dry_run=True`` prints every run's plain ``yolo train`` command (for a cluster scheduler) and trains nothing;
``plan_only=True`` prints the seeds a difference ``effect=`` needs given ``sd=`` (or a finished pilot's SD).

Launchers: ``launcher=local`` (default) trains on this machine's devices (:func:`fine_yolo.compare.runner.run_plan`),
``launcher=slurm`` submits the runs as a SLURM job array (:mod:`fine_yolo.compare.slurm`); everything else is shared.
``status=True`` prints each run's state (queued / running / finished / failed, job id, log tail) and trains nothing.
A run that failed or is missing is named in the report, which covers only the seeds whose two runs both finished
(and the command then exits 1).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fine_yolo.args import Command, Option, split_list
from fine_yolo.compare.metrics import DEFAULT_PRIMARY, METRIC_NAMES
from fine_yolo.compare.slurm import OPTIONS as SLURM_OPTIONS
from fine_yolo.errors import UsageError

DESCRIPTION = """\
Trains `baseline` and `model` once per seed with identical settings (same seed, data order and baseline initial
weights: FINE starts as the identity), evaluates every best.pt with pycocotools (AP50:95 ... APl) and the paper's
error counts (TP/FP/FN at conf=0.5, iou=0.5), and reports per-seed values and mean paired differences. One metric
(primary=, AP50:95) gets the verdict, from its 95% t-interval over seeds; the other 11 get Holm-adjusted p-values
and Bonferroni-widened intervals; then the minimum detectable difference (80% power) at this number of seeds. A
difference whose interval contains 0 is reported as no measurable difference. plan_only=True effect=0.8 sd=0.6
prints the seeds needed and trains nothing (without sd=, it reads the SD from project='s finished comparison).
pretrained=base.pt starts both arms from a baseline checkpoint (the cheap path for users with official weights).
device=0,1,2,3 runs one training per GPU at a time; devices_per_run=2 makes each run DDP on a pair.
Reruns skip finished runs and resume interrupted ones."""


def parse_seeds(value: str) -> list[int]:
    """``"3"`` -> ``[0, 1, 2]`` (that many seeds from 0); ``"0,4,7"`` -> ``[0, 4, 7]``."""
    items = split_list(value, "seeds", int)
    if len(items) == 1:
        if items[0] < 1:
            raise UsageError(f"argument 'seeds={value}' must be a positive number of seeds or a list of seeds")
        return list(range(items[0]))
    if len(set(items)) != len(items) or min(items) < 0:
        raise UsageError(f"argument 'seeds={value}': seeds must be distinct non-negative integers")
    return items


def _local(value: str, key: str, must_exist: bool = False) -> str:
    """An existing local file as an absolute path (the runs may start elsewhere); other names unchanged.

    With ``must_exist``, a path with a directory part that names no file is an error; a bare name such as
    ``yolov8n.pt`` is left to ultralytics, which fetches its official weights.
    """
    path = Path(value).expanduser()
    if path.is_file():
        return str(path.resolve())
    if must_exist and path.parent != Path("."):
        raise UsageError(f"argument '{key}={value}': no such file")
    return value


def _require_hook() -> None:
    """The runs are plain `yolo` processes; they know FINE through the start-up hook, which must be on."""
    from fine_yolo._hook import enabled

    if not enabled():
        raise UsageError(
            "compare runs plain `yolo train` processes, which know FINE through the start-up hook; it is off "
            "(FINE_YOLO_HOOK=0). Unset FINE_YOLO_HOOK to compare."
        )


def run(args: dict[str, Any], extra: dict[str, Any]) -> int:
    """Plan, train (or print with ``dry_run``), evaluate, report."""
    if args["plan_only"]:  # seeds needed for a difference: no plan, no training
        from fine_yolo.compare.report import plan_seeds

        try:
            print(plan_seeds(str(args["primary"]), args["effect"], args["sd"], Path(str(args["project"]))))
        except ValueError as e:
            raise UsageError(str(e)) from None
        return 0
    from fine_yolo.compare.plan import make_plan
    from fine_yolo.models import baseline_name

    model = _local(str(args["model"]), "model")
    try:
        baseline = _local(str(args["baseline"]), "baseline") if args["baseline"] else baseline_name(model)
    except ValueError as e:
        raise UsageError(f"argument 'model={args['model']}': {e}; give baseline= explicitly") from None
    train_args: dict[str, Any] = {"data": _local(str(args["data"]), "data"), "epochs": args["epochs"],
                                  "imgsz": args["imgsz"], "batch": args["batch"]}
    if args["pretrained"]:
        train_args["pretrained"] = _local(str(args["pretrained"]), "pretrained", must_exist=True)
    train_args.update(extra)
    try:
        plan = make_plan(model, baseline, parse_seeds(str(args["seeds"])), args["project"], train_args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    device = str(args["device"])
    if args["status"]:
        return show_status(plan)
    if args["dry_run"]:
        return dry_run(plan, device, int(args["devices_per_run"]))
    _require_hook()
    return compare(plan, args, device)


def show_status(plan) -> int:
    """Print every run's state, epochs, job, log and the log's last lines (``status=True``); trains nothing."""
    from fine_yolo.compare.runner import read_jobs, status

    slurm_state = None
    if any(j.get("launcher") == "slurm" for j in read_jobs(plan.project).values()):
        from fine_yolo.compare.slurm import job_state, queue_states

        slurm_state = job_state(queue_states())
    for row in status(plan, slurm_state):
        job = f"job {row['job']}" if row["job"] else "no job"
        print(f"{row['run']}: {row['state']}, epoch {row['epochs']}, {job}, log {row['log'] or '(none yet)'}")
        print("".join(f"    {line}\n" for line in row["tail"].splitlines()), end="")
    return 0


def train(plan, args: dict[str, Any], device: str):
    """Train what is missing with the chosen launcher; a :class:`RunReport` whose ``failed`` names failed runs."""
    from fine_yolo.compare.runner import CompareRunError, run_plan

    try:
        if args["launcher"] == "slurm":
            from fine_yolo.compare.slurm import SlurmSettings, run_plan_slurm

            return run_plan_slurm(plan, SlurmSettings.from_args(args))
        return run_plan(plan, device=device, devices_per_run=int(args["devices_per_run"]))
    except CompareRunError as e:
        if e.report is None:
            raise
        print(f"\n{e}\n", file=sys.stderr)
        return e.report


def dry_run(plan, device: str, devices_per_run: int) -> int:
    """Print each run's ``yolo train`` command, with a comment saying whether it is already finished."""
    from fine_yolo.compare.runner import device_slots, inspect

    slots = device_slots(device, devices_per_run)
    for i, spec in enumerate(plan.runs):
        state = inspect(spec)
        print(f"# {spec.name} ({state.state}{': ' + '; '.join(state.why) if state.why else ''})")
        print(spec.command(slots[i % len(slots)]))
    return 0


def compare(plan, args: dict[str, Any], device: str) -> int:
    """Train what is missing, evaluate every run, write compare.{json,md} and the PNGs, print the report."""
    from tqdm import tqdm

    from fine_yolo.compare.evaluate import EvalSettings, evaluate_run
    from fine_yolo.compare.plots import plot_curves, plot_differences
    from fine_yolo.compare.report import markdown, read_curve, summarize, write
    from fine_yolo.compare.runner import CompareRunError, complete_pairs, device_slots

    report = train(plan, args, device)
    seeds, missing = complete_pairs(plan, report.failed)
    if not seeds:
        raise CompareRunError("no seed has both runs finished, so there is nothing to compare: "
                              + "; ".join(f"{n} ({why})" for n, why in missing.items()))
    settings = EvalSettings(data=str(plan.runs[0].args["data"]), split=str(args["split"]), imgsz=int(args["imgsz"]),
                            batch=int(args["batch"]), conf=float(args["conf"]), iou=float(args["iou"]))
    eval_device = (device_slots(device)[0] or "cpu").split(",")[0]
    results = {}
    for spec in tqdm([r for r in plan.runs if r.seed in seeds], desc="evaluate", unit="run"):
        results[spec.name] = {**evaluate_run(spec, settings, plan.project / "eval", eval_device,
                                                           spec.args.get("workers")),
                              "curve": read_curve(spec.run_dir)}
    summary = summarize(plan, results, primary=str(args["primary"]), effect=float(args["effect"]))
    title = str(args["title"]) or f"{Path(plan.model).stem} vs {Path(plan.baseline).stem}"
    md = markdown(plan, summary, results, title, missing=missing)
    document = {
        "settings": settings_record(plan, args, report),
        "runs": {s.name: {"seed": s.seed, "arm": s.arm, "model": s.model, "fingerprint": s.fingerprint(),
                          "command": s.command(), "run_dir": str(s.run_dir),
                          **(results[s.name] if s.name in results else {"missing": missing[s.name]})}
                 for s in plan.runs},
        "metrics": summary,
    }
    json_path, md_path = write(plan.project, document, md)
    curves = {arm: {s: results[plan.run(s, arm).name]["curve"] for s in seeds} for arm in ("baseline", "fine")}
    labels = {"baseline": Path(plan.baseline).stem, "fine": Path(plan.model).stem}
    pngs = [
        plot_curves(curves, labels, plan.project / "curves.png", f"{title}: validation mAP50-95 per epoch"),
        plot_differences(summary, [("AP points", ("AP50:95", "AP50", "AP75", "APs", "APm", "APl")),
                                   ("boxes", ("TP", "FP", "FN"))], plan.project / "differences.png",
                         f"{title}: FINE - baseline per seed and mean over {len(seeds)} seeds; {args['primary']}: "
                         "95% t-interval, others: Bonferroni-widened"),
    ]
    print(f"\n{md}\nWritten: {md_path}, {json_path}, {', '.join(map(str, pngs))}")
    if missing:
        print(f"Not reported (only complete seed pairs are): {', '.join(missing)}", file=sys.stderr)
    return 1 if missing else 0


def settings_record(plan, args: dict[str, Any], report) -> dict[str, Any]:
    """What ``compare.json`` says about how the numbers were made."""
    from importlib.metadata import version

    import torch
    import ultralytics

    return {
        "model": plan.model, "baseline": plan.baseline, "seeds": plan.seeds, "project": str(plan.project),
        "train_args": {k: v for k, v in plan.runs[0].args.items() if k not in ("model", "seed", "name")},
        "eval": {k: args[k] for k in ("split", "conf", "iou")}, "device": str(args["device"]),
        "interval": "primary metric: two-sided 95% Student t-interval of the mean paired difference over seeds "
                    "(n - 1 dof); secondary metrics: Bonferroni-widened (1 - 0.05/m) t-intervals and paired t-test "
                    "p-values Holm-adjusted over the m secondary metrics with a value",
        "primary": str(args["primary"]),
        "versions": {"fine_yolo": version("fine-yolo"), "ultralytics": ultralytics.__version__,
                     "torch": torch.__version__, "python": sys.version.split()[0]},
        "launcher": str(args["launcher"]),
        "this_invocation": {"trained": report.trained, "resumed": report.resumed, "skipped": report.skipped,
                            "moved_aside": report.stale, "failed": sorted(report.failed)},
    }


COMMAND = Command(
    options={
        "model": Option("", "the FINE model (YAML or checkpoint)", required=True),
        "baseline": Option("", "the baseline model (default: model without -fine)"),
        "data": Option("", "dataset YAML", required=True),
        "seeds": Option("3", "number of seeds (from 0) or a comma list of seeds"),
        "epochs": Option(100, "training epochs of every run"),
        "imgsz": Option(640, "train and evaluation image size"),
        "batch": Option(16, "train and evaluation batch size"),
        "pretrained": Option("", "checkpoint both arms start from (warm start), e.g. yolov8n.pt"),
        "device": Option("", "'' (ultralytics' choice), cpu, 0, or 0,1,2,3: one run per device at a time"),
        "devices_per_run": Option(1, "devices per run (DDP) when device lists several"),
        "project": Option("runs/compare", "output directory"),
        "split": Option("val", "dataset split to evaluate"),
        "conf": Option(0.5, "confidence threshold of the TP/FP/FN counts"),
        "iou": Option(0.5, "IoU threshold of the TP/FP/FN counts"),
        "title": Option("", "report title (default: '<model> vs <baseline>')"),
        "dry_run": Option(False, "print each run's `yolo train` command and train nothing"),
        "primary": Option(DEFAULT_PRIMARY, "the metric that gets the verdict; the others get Holm-adjusted p-values",
                          choices=METRIC_NAMES),
        "plan_only": Option(False, "print the seeds `effect` needs for 80% power given `sd` (or project='s "
                                   "finished comparison) and train nothing"),
        "effect": Option(0.8, "true difference to plan for, in the primary's printed unit (0.8: the paper's v8s AP)"),
        "sd": Option(0.0, "SD of the paired differences for plan_only (primary's unit; 0: read it from project=)"),
        "launcher": Option("local", "where the runs train: this machine, or a SLURM job array",
                           choices=("local", "slurm")),
        "status": Option(False, "print each run's state (queued/running/finished/failed), job and log; train nothing"),
        **SLURM_OPTIONS,
    },
    run=run,
    example="fine-yolo compare model=yolov8n-fine.yaml data=fine-synth.yaml seeds=5 epochs=60 imgsz=256 device=cpu",
    description=DESCRIPTION,
    passthrough="any `yolo train` argument, passed to every run (e.g. lr0=0.02 workers=4 patience=20)",
)


def main(argv: list[str]) -> int:
    """Run the command from a raw argv list (for ``python -m`` style use; the ``fine-yolo`` CLI calls COMMAND)."""
    return COMMAND.main(argv, "python -m fine_yolo.compare.command")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
