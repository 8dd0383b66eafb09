"""The accuracy part of the ablations (``data=``): every distinct variant trained and evaluated against the same
baseline runs with ``fine-yolo compare``'s seed-controlled machinery (:mod:`fine_yolo.compare`), and its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fine_yolo.analysis.ablate.variants import Stage, Variant
from fine_yolo.compare.plan import Plan, RunSpec, make_plan


def accuracy_plan(baseline: str, variants: list[Variant], stages: list[Stage], paths: dict[str, Path],
                  seeds: list[int], project: Path, train_args: dict[str, Any]) -> tuple[Plan, dict[str, str]]:
    """The runs of the accuracy part: ``(plan, arms)``.

    ``plan`` (a :class:`~fine_yolo.compare.plan.Plan`) holds the baseline runs once per seed (``seed{s}-baseline``)
    and one run per distinct variant and seed (``seed{s}-{variant}``), every run with the same ``yolo train``
    arguments except ``model=`` and its name (:func:`fine_yolo.compare.plan.make_plan` makes each pair). Variants that
    build the same model (``aats``, ``shipped``, ``d16`` and ``avg`` are all the shipped model) train once, under the
    first one's name; ``arms`` maps every variant name to the name its runs have.
    """
    plan = Plan(model="", baseline=baseline, seeds=list(seeds), project=Path(project).resolve())
    arms: dict[str, str] = {}
    first: dict[tuple, str] = {}
    for v in variants:
        key = v.key(stages)
        if key in first:
            arms[v.name] = first[key]
            continue
        first[key] = arms[v.name] = v.name
        pair = make_plan(str(paths[v.name]), baseline, seeds, project, train_args)
        if not plan.runs:
            plan.model = pair.model
            plan.runs += [r for r in pair.runs if r.arm == "baseline"]
        plan.runs += [RunSpec(r.seed, v.name, r.model, {**r.args, "name": f"seed{r.seed}-{v.name}"})
                      for r in pair.runs if r.arm == "fine"]
    return plan, arms


def accuracy_summary(plan: Plan, arms: dict[str, str], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per variant: ``fine-yolo compare``'s per-metric summary (values per seed, paired differences FINE - baseline,
    95% t-interval over seeds, verdict) of its runs against the shared baseline runs; ``results`` maps run names to
    :func:`fine_yolo.compare.evaluate.evaluate_run` results."""
    from fine_yolo.compare.report import summarize

    out = {}
    for name, arm in arms.items():
        model = plan.run(plan.seeds[0], arm).model
        pair = Plan(model=model, baseline=plan.baseline, seeds=plan.seeds, project=plan.project)
        pair_results = {}
        for s in plan.seeds:  # the pair as `compare` names it: seed{s}-baseline, seed{s}-fine
            pair.runs += [plan.run(s, "baseline"), RunSpec(s, "fine", model, {})]
            pair_results[f"seed{s}-baseline"] = results[f"seed{s}-baseline"]
            pair_results[f"seed{s}-fine"] = results[f"seed{s}-{arm}"]
        out[name] = summarize(pair, pair_results)
    return out


def run_accuracy(plan: Plan, arms: dict[str, str], args: dict[str, Any]) -> dict[str, Any]:
    """Train what is missing, evaluate every run (cached), summarise per variant."""
    from tqdm import tqdm

    from fine_yolo.compare.evaluate import EvalSettings, evaluate_run
    from fine_yolo.compare.runner import device_slots, run_plan

    report = run_plan(plan, device=str(args["device"]))
    settings = EvalSettings(data=str(plan.runs[0].args["data"]), split=str(args["split"]), imgsz=int(args["imgsz"]),
                            batch=int(args["batch"]), conf=float(args["conf"]), iou=float(args["iou"]))
    device = (device_slots(str(args["device"]))[0] or "cpu").split(",")[0]
    results = {spec.name: evaluate_run(spec, settings, plan.project / "eval", device, spec.args.get("workers"))
               for spec in tqdm(plan.runs, desc="evaluate", unit="run")}
    return {"seeds": plan.seeds, "trained": report.trained, "skipped": report.skipped,
            "runs": {s.name: {"seed": s.seed, "arm": s.arm, "model": s.model, "command": s.command(),
                              "fingerprint": s.fingerprint(), **results[s.name]} for s in plan.runs},
            "arms": arms, "summary": accuracy_summary(plan, arms, results)}
