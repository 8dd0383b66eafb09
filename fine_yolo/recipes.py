"""``fine-yolo reproduce table1|table8|finetune``: the paper's training recipes, as plans of ``fine-yolo compare``.

A recipe is data: a dataset, an image size, shared settings and the (FINE model, baseline) pairs one of the paper's
tables compares. Each pair runs as one ``fine-yolo compare`` (:mod:`fine_yolo.compare.command`) in its own project
``PROJECT/<baseline>``, so a recipe inherits everything a comparison does: identical settings for both arms, seeds
(``seeds=1`` is the paper's single run; more give an interval), resume and moving stale runs aside, the launcher
(``launcher=`` and any other ``compare`` or ``yolo train`` key pass through), pycocotools evaluation against the
dataset's own COCO ground truth when it ships one (COCO's ``instances_val2017.json``, ``fine-yolo visdrone``'s
``instances_val.json``), and the honest verdict in each ``compare.md``. ``PROJECT/results.md`` puts each pair's arm
means beside the paper's numbers. ``dry_run=True`` checks the paths a recipe needs and prints every run's command.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fine_yolo.paper as paper
from fine_yolo.args import Command, Option, split_list
from fine_yolo.errors import UsageError
from fine_yolo.tables import markdown_table, signed


class RecipeError(UsageError):
    """A recipe argument names a pair or a recipe that does not exist."""


@dataclass(frozen=True)
class Pair:
    """One comparison of a recipe: a FINE model against its baseline, with the run-specific settings."""

    baseline: str  # also the pair's name and its project folder
    train: dict[str, Any] = field(default_factory=dict)  # settings of this pair only (epochs, pretrained=...)

    @property
    def model(self) -> str:
        return f"{self.baseline}-fine.yaml"


@dataclass(frozen=True)
class Recipe:
    """Pairs that share one dataset and one set of settings, and the paper's numbers to print beside them."""

    title: str
    project: Path
    pairs: tuple[Pair, ...]
    compare_args: dict[str, Any]  # every compare key shared by the pairs (data, imgsz, seeds, epochs, ...)
    metrics: tuple[str, ...]  # table columns; the first is the headline metric
    paper: dict[str, dict[str, float]]
    paper_note: str = ""

    def argv(self, pair: Pair) -> list[str]:
        """``fine-yolo compare`` arguments of one pair."""
        from fine_yolo.compare.plan import cli_value

        args = {**self.compare_args, **pair.train, "model": pair.model, "baseline": f"{pair.baseline}.yaml",
                "project": self.project / pair.baseline}
        return [f"{k}={cli_value(v)}" for k, v in args.items()]


TABLE1_SCHEDULE = {"yolov8s": 500, "yolov10s": 500, "yolo12s": 600}  # official COCO epochs per family
FINETUNE_BASES = ("yolov8s", "yolov10s", "yolo12s")
COCO_METRICS = ("AP50:95", "AP50", "AP75", "APs", "APm", "APl")

# name -> (what it reproduces, hardware and cost; the recipe's defaults of the shared keys)
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "table1": (
        "Table 1 real-time rows (COCO val2017, 640): yolov8s, yolov10s, yolo12s, each against its FINE model, from "
        "scratch. The paper trained on 4x RTX 3090 (Appendix A); defaults device=0,1,2,3 batch=64. Needs COCO 2017 in "
        "ultralytics' layout (coco.yaml, ~20 GB) with annotations/instances_val2017.json, 32+ GB RAM. Cost (an "
        "estimate, not measured here): 2-4 days per run on 4x RTX 3090, 15-25 days for all six runs of one seed. "
        "Epochs follow each family's official COCO schedule unless epochs= is given: 500 for YOLOv8 and YOLOv10, 600 "
        "for YOLO12 (its authors' augmentation changes are left at ultralytics' defaults, identically for both arms).",
        {"data": "coco.yaml", "imgsz": 640, "batch": 64, "device": "0,1,2,3", "devices_per_run": 4,
         "project": "runs/fine-table1"},
    ),
    "table8": (
        "Table 8 YOLOv8 rows (VisDrone-DET2019 val, 800, AP50): yolov8s against yolov8s-fine. Convert the dataset "
        "first (`fine-yolo visdrone source=~/VisDrone out=DATASETS_DIR/VisDrone` so VisDrone-fine.yaml finds it, or "
        "pass data=OUT/VisDrone-fine.yaml). One GPU with 16+ GB, 16 GB RAM. Cost (an estimate): 3-5 h per run for "
        "100 epochs at 800. The paper gives neither schedule nor initialisation: default 100 epochs from scratch; "
        "pretrained=yolov8s.pt starts both arms from the COCO checkpoint. User runs of yolov8s at 800 report about 47 "
        "AP50 (ultralytics #4047).",
        {"data": "VisDrone-fine.yaml", "imgsz": 800, "epochs": 100, "batch": 16, "device": "0",
         "project": "runs/fine-table8"},
    ),
    "finetune": (
        "The cheap path: FINE fine-tuned from an official baseline checkpoint (pretrained=, every baseline tensor "
        "transfers and FINE starts as the identity) against the baseline fine-tuned for the same epochs. Cost (an "
        "estimate): 30 COCO epochs of an S model, ~1 day on 4x RTX 3090 per run. (The checkpoint as it is: "
        "`yolo val model=<base>.pt save_json=True`, then `fine-yolo coco-eval`.)",
        {"data": "coco.yaml", "imgsz": 640, "epochs": 30, "batch": 64, "device": "0,1,2,3", "devices_per_run": 4,
         "project": "runs/fine-finetune"},
    ),
}
# the recipe keys that every comparison receives
SHARED_KEYS = ("data", "imgsz", "epochs", "batch", "device", "devices_per_run", "seeds", "workers")


def build(name: str, options: dict[str, Any], extra: dict[str, Any] | None = None) -> Recipe:
    """The recipe ``name`` with the command's ``options`` (0 or "" means the recipe's default) and ``extra`` keys
    passed through to every comparison."""
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    o = dict(options)
    for key, value in RECIPES[name][1].items():
        if not o.get(key):
            o[key] = value
    shared = {k: o[k] for k in SHARED_KEYS if o.get(k) not in (None, "", 0)} | dict(extra or {})
    project = Path(str(o["project"])).resolve()
    coco = Path(str(o["data"])).name == "coco.yaml"
    if name == "table1":
        pairs = tuple(Pair(base, {} if o.get("epochs") else {"epochs": epochs})
                      for base, epochs in TABLE1_SCHEDULE.items())
        recipe = Recipe("FINE Table 1: COCO val2017, imgsz 640 (AP in %)", project, pairs, shared, COCO_METRICS,
                        paper.TABLE1, "Paper: arXiv 2606.14005 Table 1 (one run each, 4x RTX 3090).")
    elif name == "table8":
        train = {"pretrained": o["pretrained"]} if o["pretrained"] else {}
        recipe = Recipe("FINE Table 8: VisDrone-DET2019 val, imgsz 800 (AP in %)", project, (Pair("yolov8s", train),),
                        shared, ("AP50", "AP50:95", "APs"), paper.TABLE8,
                        "Paper: arXiv 2606.14005 Table 8 (AP50 only; schedule not stated).")
    else:
        base = str(o["base"])
        if base not in FINETUNE_BASES:
            raise RecipeError(f"argument 'base={base}' must be one of {', '.join(FINETUNE_BASES)}")
        weights = str(o["weights"]) or f"{base}.pt"
        recipe = Recipe(f"FINE fine-tuned from {weights}: {o['data']}, imgsz {o['imgsz']}, +{o['epochs']} epochs "
                        "(AP in %)", project, (Pair(base, {"pretrained": weights}),), shared, COCO_METRICS,
                        paper.TABLE1 if coco else {},
                        "Paper columns: Table 1's from-scratch numbers, for orientation only." if coco else "")
    return recipe


def select(recipe: Recipe, names: str) -> list[Pair]:
    """The pairs named in ``names`` (baselines, comma-separated); all when empty. Unknown names are an error."""
    if not names:
        return list(recipe.pairs)
    wanted = split_list(names, "models")
    known = [p.baseline for p in recipe.pairs]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise RecipeError(f"unknown models={','.join(unknown)}; choose from {', '.join(known)}")
    return [p for p in recipe.pairs if p.baseline in wanted]


def check(recipe: Recipe, pairs: list[Pair]) -> list[tuple[str, str]]:
    """What the pairs' trainings need, as ``(status, message)``: "ok", "MISSING" (the runs would fail) or
    "download" (an official checkpoint that is not here: ultralytics fetches it by name, which needs network)."""
    from ultralytics.nn.tasks import yaml_model_load
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    from fine_yolo.data.coco_gt import dataset_gt

    results = [("ok", f"yolo on PATH: {shutil.which('yolo')}") if shutil.which("yolo")
               else ("MISSING", "yolo not on PATH (pip install -e .)")]
    data, split = str(recipe.compare_args["data"]), "val"
    try:
        gt = dataset_gt(data, split)
        results.append(("ok", f"data YAML {data}"))
        results.append(("ok", f"ground-truth JSON {gt}") if gt else
                       ("ok", f"no COCO ground truth shipped with {data}: built from its YOLO labels"))
    except Exception as e:  # missing file, unreadable YAML: report and go on checking the rest
        results.append(("MISSING", f"data YAML {data}: {e}"))
    for pair in pairs:
        for model in (f"{pair.baseline}.yaml", pair.model):
            try:
                yaml_model_load(model)
                results.append(("ok", f"model {model}"))
            except Exception as e:
                results.append(("MISSING", f"model {model}: {e}"))
        ckpt = str(pair.train.get("pretrained", ""))
        if not ckpt:
            continue
        if Path(ckpt).is_file():
            results.append(("ok", f"checkpoint {ckpt}"))
        elif Path(ckpt).name == ckpt and ckpt in GITHUB_ASSETS_NAMES:
            results.append(("download", f"checkpoint {ckpt} not here; `yolo` downloads it by name (needs network)"))
        else:
            results.append(("MISSING", f"checkpoint {ckpt}"))
    return results


def _arm_means(compare_json: Path, metrics: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
    """Per arm, the mean over seeds of each metric (percent) in a comparison's ``compare.json`` (runs with no
    evaluation are left out of the mean, and a metric no run has is None)."""
    runs = json.loads(compare_json.read_text(encoding="utf-8")).get("runs", {})
    out: dict[str, dict[str, float | None]] = {}
    for arm in ("baseline", "fine"):
        cocos = [r["coco"] for r in runs.values() if r.get("arm") == arm and isinstance(r.get("coco"), dict)]
        out[arm] = {}
        for k in metrics:
            values = [100 * c[k] for c in cocos if c.get(k) is not None]
            out[arm][k] = sum(values) / len(values) if values else None
    return out


def collect(recipe: Recipe) -> str:
    """Markdown table: each pair's arm means, FINE − baseline of the headline metric, and the paper's numbers."""
    head = recipe.metrics[0]
    cols = ["pair", "model", *recipe.metrics, f"Δ {head}", f"paper {head}", f"paper Δ {head}"]
    rows, missing = [], []
    for pair in recipe.pairs:
        report = recipe.project / pair.baseline / "compare.json"
        means = _arm_means(report, recipe.metrics) if report.is_file() else {}
        if not means:
            missing.append(pair.baseline)
        base, fine = means.get("baseline", {}), means.get("fine", {})
        delta = None if base.get(head) is None or fine.get(head) is None else fine[head] - base[head]
        pb, pf = recipe.paper.get(pair.baseline, {}), recipe.paper.get(pair.baseline + "-fine", {})
        paper_delta = pf[head] - pb[head] if head in pb and head in pf else None
        for arm, model, m, d, p, pd in (("baseline", f"{pair.baseline}.yaml", base, None, pb, None),
                                        ("fine", pair.model, fine, delta, pf, paper_delta)):
            rows.append([pair.baseline if arm == "baseline" else "", f"`{model}`",
                         *(_pct(m.get(k)) for k in recipe.metrics), signed(d, ".1f") or "—", _pct(p.get(head)),
                         signed(pd, ".1f") or "—"])
    lines = [f"### {recipe.title}", "", markdown_table(cols, rows), "",
             "Means over seeds, pycocotools. Each pair's interval and verdict: `PROJECT/<pair>/compare.md`. "
             f"{recipe.paper_note}".strip()]
    if missing:
        lines.append(f"Not compared yet (—): {', '.join(missing)}.")
    return "\n".join(lines) + "\n"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def _run(args: dict[str, Any], extra: dict[str, Any]) -> int:
    """Check (dry run) or run every selected pair through ``fine-yolo compare``, then write ``results.md``."""
    from fine_yolo.compare.command import COMMAND as COMPARE

    recipe = build(str(args["recipe"]), args, extra)
    pairs = select(recipe, str(args["models"]))
    dry = bool(args["dry_run"])
    print(f"# {recipe.title}{' (dry run)' if dry else ''}")
    failed = 0
    if dry:
        results = check(recipe, pairs)
        print("checks:")
        for status, message in results:
            print(f"  [{status}] {message}")
        failed = sum(status == "MISSING" for status, _ in results)
    for pair in pairs:
        argv = recipe.argv(pair) + (["dry_run=True"] if dry else [])
        print(f"\n## {pair.model} vs {pair.baseline}.yaml: fine-yolo compare {' '.join(argv)}")
        rc = int(COMPARE.run(*COMPARE.parse(argv)) or 0)
        if rc:
            print(f"the comparison of {pair.baseline} failed (exit code {rc}); rerun with models={pair.baseline}")
            return rc
    if dry:
        print(f"\n{failed} check(s) failed" if failed else "\nall checks passed")
        return 1 if failed else 0
    table = collect(recipe)
    recipe.project.mkdir(parents=True, exist_ok=True)
    (recipe.project / "results.md").write_text(table, encoding="utf-8")
    print(f"\n{table}\nwritten to {recipe.project / 'results.md'}")
    return 0


COMMAND = Command(
    options={
        "recipe": Option("", "which recipe (first bare argument)", required=True, choices=tuple(RECIPES)),
        "dry_run": Option(False, "check paths and print every run's command, train nothing"),
        "data": Option("", "data YAML (default: the recipe's)"),
        "project": Option("", "output directory (default: runs/fine-<recipe>)"),
        "seeds": Option("1", "seeds per pair, as for compare (the paper: one run each)"),
        "imgsz": Option(0, "train/val image size (0: the recipe's)"),
        "epochs": Option(0, "epochs of every run (0: the recipe's; table1: each family's official schedule)"),
        "batch": Option(0, "total batch size (0: the recipe's)"),
        "device": Option("", "ultralytics device string (default: the recipe's)"),
        "devices_per_run": Option(0, "devices per run, DDP (0: the recipe's; table1 and finetune: 4)"),
        "workers": Option(8, "dataloader workers per GPU"),
        "models": Option("", "comma-separated pairs to run, named by their baseline (default: all)"),
        "pretrained": Option("", "table8: checkpoint both arms start from (default: from scratch)"),
        "base": Option("yolov8s", f"finetune: baseline family, one of {', '.join(FINETUNE_BASES)}"),
        "weights": Option("", "finetune: baseline checkpoint (default <base>.pt)"),
    },
    run=_run,
    example="fine-yolo reproduce table1 dry_run=True",
    positional="recipe",
    description="\n\n".join(f"{name}: {doc}" for name, (doc, _) in RECIPES.items()),
    passthrough="any `fine-yolo compare` key (launcher=slurm slurm_partition=...) or `yolo train` key, for every pair",
)
