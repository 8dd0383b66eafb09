"""``fine-yolo reproduce table1|table8|finetune``: the paper's training recipes (Table 1, Table 8, fine-tuning).

A recipe is a list of runs, each a baseline or a FINE model trained with *identical* settings (same data, image size,
epochs, batch, seed, ``deterministic=True``, ultralytics' default hyperparameters; only ``model=`` and the run name
differ). Each run becomes three command lines, run one after another::

    yolo train model=M data=D imgsz=S epochs=E batch=B seed=0 deterministic=True device=... project=P name=RUN
    yolo val model=P/RUN/weights/best.pt data=D imgsz=S batch=B device=... save_json=True project=P name=RUN-val
    fine-yolo coco-eval pred=P/RUN-val/predictions.json gt=GT json=P/RUN-val/coco_eval.json

and the ``coco_eval.json`` files are collected into one markdown table (``P/results.md``) next to the paper's
numbers. ``--dry-run`` checks the paths (executables, data YAML and its images, GT JSON, model YAMLs, checkpoints)
and prints every command without running anything. ``yolo`` finds the FINE YAMLs through fine_yolo's start-up hook,
so the package must be installed in the environment that runs the commands.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import fine_yolo.paper as paper
from fine_yolo.args import Command, Option
from fine_yolo.errors import UsageError
from fine_yolo.tables import markdown_table, signed

STEPS = ("train", "val", "eval", "table")



class RecipeError(UsageError):
    """A recipe argument names a run, a step or a recipe that does not exist."""


@dataclass
class Run:
    """One table row: a model trained (or, with ``train=False``, a checkpoint evaluated as it is)."""

    name: str  # run directory and table row
    model: str  # model= of `yolo train` (a YAML), or the checkpoint to evaluate when train is False
    baseline: str | None = None  # name of the run this one is compared with (the Δ columns)
    paper: str | None = None  # key into the recipe's paper numbers
    extra: dict[str, str] = field(default_factory=dict)  # run-specific train arguments (pretrained=...)
    train: bool = True


@dataclass
class Recipe:
    """Runs that share one dataset and one set of settings."""

    title: str
    data: str
    gt: str  # COCO GT JSON for `fine-yolo coco-eval`
    project: Path
    imgsz: int
    runs: list[Run]
    train_args: dict[str, str]  # shared by every run: epochs, batch, seed, deterministic, device, workers
    val_args: dict[str, str]
    metrics: tuple[str, ...]  # table columns, first one is the headline metric
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    paper_note: str = ""

    def weights(self, run: Run) -> Path:
        return self.project / run.name / "weights" / "best.pt" if run.train else Path(run.model)

    def val_dir(self, run: Run) -> Path:
        return self.project / f"{run.name}-val"

    def eval_json(self, run: Run) -> Path:
        return self.val_dir(run) / "coco_eval.json"


def _kv(args: dict[str, object]) -> list[str]:
    return [f"{k}={v}" for k, v in args.items()]


def commands(recipe: Recipe, run: Run) -> list[tuple[str, list[str]]]:
    """The (step, argv) pairs of one run, in order."""
    out: list[tuple[str, list[str]]] = []
    if run.train:
        args = {"model": run.model, "data": recipe.data, "imgsz": recipe.imgsz, **recipe.train_args, **run.extra}
        args |= {"project": recipe.project, "name": run.name, "exist_ok": True}
        out.append(("train", ["yolo", "train", *_kv(args)]))
    val = {"model": recipe.weights(run), "data": recipe.data, "imgsz": recipe.imgsz, **recipe.val_args}
    val |= {"save_json": True, "project": recipe.project, "name": f"{run.name}-val", "exist_ok": True}
    out.append(("val", ["yolo", "val", *_kv(val)]))
    pred = recipe.val_dir(run) / "predictions.json"
    out.append(("eval", ["fine-yolo", "coco-eval", f"pred={pred}", f"gt={recipe.gt}", f"json={recipe.eval_json(run)}"]))
    return out


def resolve_dataset(data: str) -> tuple[Path, dict[str, Path]]:
    """Find a data YAML the way ``yolo`` does and return it with its absolute train/val image paths.

    ultralytics' own ``check_det_dataset`` is not used because it also fetches fonts and may download the dataset;
    this only mirrors its path rule (a relative ``path:`` that does not exist as is lies under ``datasets_dir``).
    Raises FileNotFoundError naming what is missing.
    """
    from ultralytics.utils import DATASETS_DIR, YAML
    from ultralytics.utils.checks import check_file

    found = check_file(data, hard=False)
    if not found:
        raise FileNotFoundError(f"data YAML {data} not found")
    file = Path(found)
    cfg = YAML.load(file)
    root = Path(cfg.get("path") or file.parent)
    if not root.exists() and not root.is_absolute():
        root = (DATASETS_DIR / root).resolve()
    splits = {k: (root / cfg[k]).resolve() for k in ("train", "val") if isinstance(cfg.get(k), str)}
    return file, {"root": root, **splits}


def _register_fine() -> None:
    """Let ultralytics resolve FINE YAMLs in this process, as the start-up hook does for `yolo`."""
    try:
        from fine_yolo.glue import register
    except ImportError:  # an older checkout without the glue: FINE models then show up as missing
        return
    register()


def check(recipe: Recipe, runs: list[Run] | None = None) -> list[tuple[str, str]]:
    """Check what the commands of ``runs`` (default: all) need; return ``(status, message)`` per item.

    status is "ok", "MISSING" (the commands would fail) or "download" (an official checkpoint that is not here:
    ultralytics downloads it by name, which needs network).
    """
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    def status(ok: bool) -> str:
        return "ok" if ok else "MISSING"

    results: list[tuple[str, str]] = []
    for exe in ("yolo", "fine-yolo"):
        where = shutil.which(exe)
        results.append(
            (status(bool(where)), f"{exe} on PATH: {where}" if where else f"{exe} not on PATH (pip install -e .)")
        )
    _register_fine()
    try:
        file, paths = resolve_dataset(recipe.data)
        results.append(("ok", f"data YAML {recipe.data}: {file}"))
        for k in ("train", "val"):
            p = paths.get(k)
            ok = p is not None and p.exists()
            results.append((status(ok), f"{k} images: {p}" + ("" if ok else " (convert/download the dataset first)")))
    except Exception as e:  # missing file, unreadable YAML: report and go on checking the rest
        results.append(("MISSING", f"data YAML {recipe.data}: {e}"))
    gt = Path(recipe.gt)
    results.append((status(gt.is_file()), f"ground-truth JSON {gt}"))
    from ultralytics.nn.tasks import yaml_model_load

    checkpoints: list[str] = []
    for run in recipe.runs if runs is None else runs:
        if run.train:
            try:
                yaml_model_load(run.model)  # the FINE YAMLs resolve through fine_yolo's glue, as in `yolo`
                results.append(("ok", f"model {run.model}"))
            except Exception as e:
                results.append(("MISSING", f"model {run.model}: {e}"))
        for ckpt in ([run.extra["pretrained"]] if "pretrained" in run.extra else []) + (
            [] if run.train else [run.model]
        ):
            if ckpt not in checkpoints:
                checkpoints.append(ckpt)
    for ckpt in checkpoints:
        if Path(ckpt).is_file():
            results.append(("ok", f"checkpoint {ckpt}"))
        elif Path(ckpt).name == ckpt and ckpt in GITHUB_ASSETS_NAMES:
            results.append(("download", f"checkpoint {ckpt} not here; `yolo` downloads it by name (needs network)"))
        else:
            results.append(("MISSING", f"checkpoint {ckpt}"))
    return results


def format_value(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def collect(recipe: Recipe) -> str:
    """Markdown table of every run's ``coco_eval.json`` (percent), the Δ to its baseline and the paper's numbers."""
    measured: dict[str, dict[str, float | None]] = {}
    for run in recipe.runs:
        f = recipe.eval_json(run)
        if f.is_file():
            m = json.loads(f.read_text(encoding="utf-8"))["metrics"]
            measured[run.name] = {k: None if m.get(k) is None else 100 * m[k] for k in recipe.metrics}
    head = recipe.metrics[0]
    cols = ["run", "model", *recipe.metrics, f"Δ {head}", f"paper {head}", f"paper Δ {head}"]
    rows = []
    for run in recipe.runs:
        m = measured.get(run.name, {})
        paper_row = recipe.paper.get(run.paper or "", {})
        base = next((r for r in recipe.runs if r.name == run.baseline), None)
        delta = paper_delta = None
        if base is not None:
            b = measured.get(base.name, {})
            if m.get(head) is not None and b.get(head) is not None:
                delta = m[head] - b[head]
            pb = recipe.paper.get(base.paper or "", {})
            if head in paper_row and head in pb:
                paper_delta = paper_row[head] - pb[head]
        rows.append([run.name, f"`{run.model}`", *(format_value(m.get(k)) for k in recipe.metrics),
                     signed(delta, ".1f") or "—", format_value(paper_row.get(head)), signed(paper_delta, ".1f") or "—"])
    lines = [f"### {recipe.title}", "", markdown_table(cols, rows)]
    missing = [r.name for r in recipe.runs if r.name not in measured]
    lines += [
        "",
        f"Measured with pycocotools (`fine-yolo coco-eval`) against `{recipe.gt}`. {recipe.paper_note}".strip(),
    ]
    if missing:
        lines.append(f"Not evaluated yet (—): {', '.join(missing)}.")
    return "\n".join(lines) + "\n"


def execute(recipe: Recipe, steps: tuple[str, ...] = STEPS, dry_run: bool = False, only: str = "") -> int:
    """Run (or with ``dry_run`` check and print) the runs named in ``only`` (default all); return an exit code.

    The table always covers every run of the recipe, so a partial rerun still shows the whole comparison.
    """
    runs = select(recipe.runs, only)
    print(f"# {recipe.title}{' (dry run)' if dry_run else ''}")
    if dry_run:
        results = check(recipe, runs)
        print("checks:")
        for st, message in results:
            print(f"  [{st}] {message}")
    print("commands:")
    for run in runs:
        for step, argv in commands(recipe, run):
            if step not in steps:
                continue
            print(f"  {shlex.join(argv)}")
            if not dry_run:
                rc = subprocess.run(argv, check=False).returncode
                if rc:
                    print(
                        f"step '{step}' of run '{run.name}' failed with exit code {rc}; fix it and rerun with "
                        f"models={run.name} steps={','.join(STEPS[STEPS.index(step) :])}"
                    )
                    return rc
    table_file = recipe.project / "results.md"
    if "table" in steps:
        if dry_run:
            print(f"results table: {table_file}")
        else:
            table = collect(recipe)
            recipe.project.mkdir(parents=True, exist_ok=True)
            table_file.write_text(table, encoding="utf-8")
            print(f"\n{table}\nwritten to {table_file}")
    if dry_run:
        missing = sum(st == "MISSING" for st, _ in results)
        print(f"{missing} check(s) failed" if missing else "all checks passed")
        return 1 if missing else 0
    return 0


def common_train_args(o: dict) -> dict[str, str]:
    """Settings shared by every run of a recipe; anything not listed is ultralytics' default.

    ``epochs=0`` leaves the epochs to each run (a recipe's per-model official schedule).
    """
    return {
        **({"epochs": str(o["epochs"])} if o["epochs"] else {}),
        "batch": str(o["batch"]),
        "seed": str(o["seed"]),
        "deterministic": "True",
        "device": o["device"],
        "workers": str(o["workers"]),
    }


def default_gt(data: str, name: str) -> str:
    """``<dataset root>/annotations/<name>``: where COCO keeps it, and where ``fine-yolo visdrone`` writes it."""
    _register_fine()
    try:
        _, paths = resolve_dataset(data)
    except Exception:  # reported by the dry-run checks; keep a readable placeholder in the commands
        return f"<dataset root of {data}>/annotations/{name}"
    return str(paths["root"] / "annotations" / name)


def select(runs: list[Run], names: str) -> list[Run]:
    """Keep the runs named in ``names`` (comma-separated); all when empty. Unknown names are an error."""
    if not names:
        return runs
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = set(wanted) - {r.name for r in runs}
    if unknown:
        raise RecipeError(f"unknown models={','.join(sorted(unknown))}; choose from {', '.join(r.name for r in runs)}")
    return [r for r in runs if r.name in wanted]


def parse_steps(steps: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in steps.split(",") if s.strip())
    unknown = set(chosen) - set(STEPS)
    if unknown:
        raise RecipeError(f"unknown steps={','.join(sorted(unknown))}; choose from {', '.join(STEPS)}")
    return chosen


TABLE1_SCHEDULE = {"yolov8s": 500, "yolov10s": 500, "yolo12s": 600}  # official COCO epochs per family
FINETUNE_BASES = ("yolov8s", "yolov10s", "yolo12s")
COCO_METRICS = ("AP50:95", "AP50", "AP75", "APs", "APm", "APl")

# name -> (what it reproduces, hardware and cost, defaults of the shared options)
RECIPES: dict[str, tuple[str, dict[str, object]]] = {
    "table1": (
        "Table 1 real-time rows (COCO val2017, 640): yolov8s, yolov10s, yolo12s, each with and without FINE, from "
        "scratch. The paper trained on 4x RTX 3090 (Appendix A); defaults device=0,1,2,3 batch=64. Needs COCO 2017 in "
        "ultralytics' layout (coco.yaml, ~20 GB) with annotations/instances_val2017.json, 32+ GB RAM. Cost (an "
        "estimate, not measured here): 2-4 days per run on 4x RTX 3090, 15-25 days for all six. Epochs follow each "
        "family's official COCO schedule unless epochs= is given: 500 for YOLOv8 and YOLOv10, 600 for YOLO12 (its "
        "authors' augmentation changes are left at ultralytics' defaults, identically for both models).",
        {"data": "coco.yaml", "imgsz": 640, "epochs": 0, "batch": 64, "device": "0,1,2,3",
         "project": "runs/fine-table1"},
    ),
    "table8": (
        "Table 8 YOLOv8 rows (VisDrone-DET2019 val, 800, AP50): yolov8s with and without FINE. Convert the dataset "
        "first (`fine-yolo visdrone source=~/VisDrone out=DATASETS_DIR/VisDrone` so VisDrone-fine.yaml finds it, or "
        "pass data=OUT/VisDrone-fine.yaml). One GPU with 16+ GB, 16 GB RAM. Cost (an estimate): 3-5 h per run for "
        "100 epochs at 800. The paper gives neither schedule nor initialisation: default 100 epochs from scratch; "
        "pretrained=yolov8s.pt starts both from the COCO checkpoint. User runs of yolov8s at 800 report about 47 AP50 "
        "(ultralytics #4047).",
        {"data": "VisDrone-fine.yaml", "imgsz": 800, "epochs": 100, "batch": 16, "device": "0",
         "project": "runs/fine-table8"},
    ),
    "finetune": (
        "The cheap path: FINE fine-tuned from an official baseline checkpoint (pretrained=, every baseline tensor "
        "transfers and FINE starts as the identity) against the baseline fine-tuned for the same epochs, beside the "
        "checkpoint as it is. Cost (an estimate): 30 COCO epochs of an S model, ~1 day on 4x RTX 3090 per run.",
        {"data": "coco.yaml", "imgsz": 640, "epochs": 30, "batch": 64, "device": "0,1,2,3",
         "project": "runs/fine-finetune"},
    ),
}


def build(name: str, options: dict) -> Recipe:
    """The recipe ``name`` with ``options`` (the command's keys; 0 or "" means the recipe's default)."""
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    o = dict(options)
    for key, value in RECIPES[name][1].items():
        if not o.get(key) and not (key == "epochs" and name == "table1"):
            o[key] = value
    data, device = str(o["data"]), str(o["device"])
    val_args = {"device": device.split(",")[0]}  # val runs on one device, default batch
    coco = Path(data).name == "coco.yaml"
    if name == "table1":
        runs = []
        for base, epochs in TABLE1_SCHEDULE.items():
            extra = {} if o["epochs"] else {"epochs": str(epochs)}  # the same for the baseline and its FINE twin
            runs.append(Run(base, f"{base}.yaml", paper=base, extra=extra))
            runs.append(Run(f"{base}-fine", f"{base}-fine.yaml", baseline=base, paper=f"{base}-fine", extra=extra))
        return Recipe("FINE Table 1: COCO val2017, imgsz 640 (AP in %)", data,
                      o["gt"] or default_gt(data, "instances_val2017.json"), Path(o["project"]).resolve(),
                      int(o["imgsz"]), runs, common_train_args(o), val_args, COCO_METRICS, paper.TABLE1,
                      "Paper: arXiv 2606.14005 Table 1 (trained on 4x RTX 3090).")
    if name == "table8":
        extra = {"pretrained": o["pretrained"]} if o["pretrained"] else {}
        runs = [Run("yolov8s", "yolov8s.yaml", paper="yolov8s", extra=extra),
                Run("yolov8s-fine", "yolov8s-fine.yaml", baseline="yolov8s", paper="yolov8s-fine", extra=extra)]
        return Recipe("FINE Table 8: VisDrone-DET2019 val, imgsz 800 (AP in %)", data,
                      o["gt"] or default_gt(data, "instances_val.json"), Path(o["project"]).resolve(),
                      int(o["imgsz"]), runs, common_train_args(o), val_args, ("AP50", "AP50:95", "APs"),
                      paper.TABLE8, "Paper: arXiv 2606.14005 Table 8 (AP50 only; schedule not stated).")
    base = str(o["base"])
    if base not in FINETUNE_BASES:
        raise RecipeError(f"base={base} must be one of {', '.join(FINETUNE_BASES)}")
    weights = str(o["weights"]) or f"{base}.pt"
    pretrained = {"pretrained": weights}
    runs = [
        Run(f"{base}-official", weights, paper=base if coco else None, train=False),
        Run(f"{base}-ft", f"{base}.yaml", baseline=f"{base}-official", extra=pretrained),
        Run(f"{base}-fine-ft", f"{base}-fine.yaml", baseline=f"{base}-ft", paper=f"{base}-fine" if coco else None,
            extra=pretrained),
    ]
    return Recipe(f"FINE fine-tuned from {weights}: {data}, imgsz {o['imgsz']}, +{o['epochs']} epochs (AP in %)",
                  data, o["gt"] or default_gt(data, "instances_val2017.json" if coco else "instances_val.json"),
                  Path(o["project"]).resolve(), int(o["imgsz"]), runs, common_train_args(o), val_args, COCO_METRICS,
                  paper.TABLE1 if coco else {},
                  "Paper columns: Table 1's from-scratch numbers, for orientation only." if coco else "")


def _run(args: dict, extra: dict) -> int:
    recipe = build(str(args["recipe"]), args)
    return execute(recipe, parse_steps(str(args["steps"])), bool(args["dry_run"]), str(args["models"]))


COMMAND = Command(
    options={
        "recipe": Option("", "which recipe (first bare argument)", required=True, choices=tuple(RECIPES)),
        "dry_run": Option(False, "check paths and print every command, run nothing"),
        "data": Option("", "data YAML (default: the recipe's)"),
        "gt": Option("", "COCO GT JSON for coco-eval (default: derived from the dataset)"),
        "project": Option("", "output directory (default: runs/fine-<recipe>)"),
        "imgsz": Option(0, "train/val image size (0: the recipe's)"),
        "epochs": Option(0, "epochs for every run (0: the recipe's; table1: each family's official schedule)"),
        "batch": Option(0, "total batch size (0: the recipe's)"),
        "device": Option("", "ultralytics device string (default: the recipe's)"),
        "workers": Option(8, "dataloader workers per GPU"),
        "seed": Option(0, "seed shared by all runs"),
        "models": Option("", "comma-separated run names to keep (default: all)"),
        "steps": Option(",".join(STEPS), f"comma-separated subset of {','.join(STEPS)}"),
        "pretrained": Option("", "table8: checkpoint both models start from (default: from scratch)"),
        "base": Option("yolov8s", f"finetune: baseline family, one of {', '.join(FINETUNE_BASES)}"),
        "weights": Option("", "finetune: baseline checkpoint (default <base>.pt)"),
    },
    run=_run,
    example="fine-yolo reproduce table1 dry_run=True",
    positional="recipe",
    description="\n\n".join(f"{name}: {doc}" for name, (doc, _) in RECIPES.items()),
)
