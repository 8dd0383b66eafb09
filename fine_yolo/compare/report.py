"""The comparison's numbers: per-seed values, paired differences with intervals, verdicts; ``compare.{json,md}``.

Metrics: :mod:`fine_yolo.compare.metrics` (FINE - baseline per seed, then :func:`fine_yolo.compare.stats.paired`);
a size class the ground truth lacks (pycocotools' -1) has no value and is reported as such, not as 0.

One metric, the primary (``primary=``, AP50:95 by default), gets the verdict with its 95% t-interval and the
minimum detectable difference; the others are secondary: Holm-adjusted p-values over the secondaries that have a
value, and Bonferroni-widened intervals (see :mod:`fine_yolo.compare.stats`). Only complete pairs count: a seed whose
baseline or FINE run has no result is left out of every number, and the report names the runs missing.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fine_yolo.compare.metrics import BY_NAME, DEFAULT_PRIMARY, METRIC_NAMES, METRICS, Metric
from fine_yolo.compare.plan import Plan
from fine_yolo.compare.stats import (
    ALPHA,
    MAX_SEEDS,
    POWER,
    Paired,
    fmt_diff,
    fmt_p,
    holm,
    mdd,
    paired,
    power,
    secondary_verdict,
    seeds_needed,
    verdict,
)
from fine_yolo.tables import markdown_table, num

CURVE_COLUMN = "metrics/mAP50-95(B)"


def read_curve(run_dir: Path, column: str = CURVE_COLUMN) -> list[float]:
    """Per-epoch values of ``column`` from ultralytics' ``results.csv``, epoch 1 first.

    Its header may pad names with spaces; an epoch logged twice (killed after logging, then resumed) keeps the row
    of the run that went on.
    """
    try:
        with open(run_dir / "results.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return []
    by_epoch: dict[int, float] = {}
    for row in rows:
        clean = {k.strip(): v for k, v in row.items() if k}
        if column not in clean or "epoch" not in clean:
            raise ValueError(f"{run_dir / 'results.csv'}: no column {column!r} (columns: {', '.join(clean)})")
        by_epoch[int(float(clean["epoch"]))] = float(clean[column])
    return [by_epoch[e] for e in sorted(by_epoch)]


def _value(result: dict[str, Any], m: Metric) -> float | None:
    v = result.get(m.source, {}).get(m.key)
    return None if v is None or (isinstance(v, (int, float)) and v < 0 and m.source == "coco") else float(v)


def complete_seeds(plan: Plan, results: dict[str, dict[str, Any]]) -> list[int]:
    """Seeds whose baseline and FINE runs both have a result: the only ones any number is computed from."""
    return [s for s in plan.seeds if all(plan.run(s, arm).name in results for arm in ("baseline", "fine"))]


def not_reported(plan: Plan, results: dict[str, dict[str, Any]]) -> list[str]:
    """Runs left out: those without a result, and the partner of each (a pair counts only whole)."""
    keep = set(complete_seeds(plan, results))
    return [r.name for r in plan.runs if r.seed not in keep]


def check_primary(primary: str) -> Metric:
    """The :class:`Metric` called ``primary``; ValueError naming the allowed ones otherwise."""
    if primary not in BY_NAME:
        raise ValueError(f"primary={primary!r} is not a reported metric; choose one of {', '.join(METRIC_NAMES)}")
    return BY_NAME[primary]


def summarize(plan: Plan, results: dict[str, dict[str, Any]], primary: str = DEFAULT_PRIMARY,
              effect: float = 0.8) -> dict[str, Any]:
    """Per metric: per-seed values and differences over the complete pairs, the 95% :class:`Paired` summary (with its
    paired t p-value), the reported interval, the Holm-adjusted p-value (secondaries) and the verdict sentence.

    The primary's entry also holds ``planning`` (:func:`planning`; ``effect`` in the primary's printed unit).
    """
    first = check_primary(primary)
    seeds = complete_seeds(plan, results)
    if not seeds:
        raise ValueError("no seed has both its baseline and its FINE result "
                         f"(missing: {', '.join(not_reported(plan, results))})")
    out: dict[str, Any] = {}
    for m in METRICS:
        base = [_value(results[plan.run(s, "baseline").name], m) for s in seeds]
        fine = [_value(results[plan.run(s, "fine").name], m) for s in seeds]
        entry: dict[str, Any] = {"role": "primary" if m is first else "secondary", "seeds": seeds, "baseline": base,
                                 "fine": fine, "higher_is_better": m.higher_is_better, "scale": m.scale,
                                 "unit": m.unit, "diff": None, "paired": None, "interval": None, "p_holm": None}
        if any(v is None for v in base + fine):
            missing = [s for s, b, f in zip(seeds, base, fine) if b is None or f is None]
            why = ("the ground truth has no object of this size" if m.source == "coco"
                   else "undefined: no detection or no ground-truth box to divide by")
            entry["verdict"] = f"{m.name}: no value at seed(s) {', '.join(map(str, missing))} ({why})"
        else:
            p = paired(fine, base)
            entry.update(diff=[f - b for f, b in zip(fine, base)], paired=p.to_dict())
        out[m.name] = entry
    tested = [m for m in METRICS if m is not first and out[m.name]["paired"] and out[m.name]["paired"]["p"] is not None]
    adjusted = dict(zip((m.name for m in tested), holm([out[m.name]["paired"]["p"] for m in tested])))
    for m in METRICS:
        e = out[m.name]
        if e["paired"] is None:
            continue
        p = Paired(**e["paired"])
        if m is first:
            e["verdict"] = verdict(m.name, p, m.higher_is_better, m.scale, m.digits, m.unit)
            if p.low is not None:
                e["interval"] = {"low": p.low, "high": p.high, "confidence": 1 - ALPHA, "kind": "95% t-interval"}
            e["planning"] = planning(p, effect / m.scale)
        elif m.name in adjusted:
            conf = 1 - ALPHA / len(tested)
            wide = paired(e["fine"], e["baseline"], conf)
            e["p_holm"] = adjusted[m.name]
            e["interval"] = {"low": wide.low, "high": wide.high, "confidence": conf,
                             "kind": f"Bonferroni {conf * 100:.3g}% t-interval"}
            e["verdict"] = secondary_verdict(m.name, p, wide, adjusted[m.name], len(tested), m.higher_is_better,
                                             m.scale, m.digits, m.unit)
        else:  # one seed: no test
            e["verdict"] = verdict(m.name, p, m.higher_is_better, m.scale, m.digits, m.unit)
    return out


def _needed(effect: float, sd: float) -> int | None:
    """Seeds needed, or None beyond :data:`~fine_yolo.compare.stats.MAX_SEEDS`."""
    try:
        return seeds_needed(effect, sd)
    except ValueError:
        return None


def planning(p: Paired, effect: float) -> dict[str, Any]:
    """What ``p``'s spread says for planning (stored units): the minimum detectable difference at ``p.n`` seeds, and
    the seeds that ``effect`` and the observed mean would need, at 80% power and 5% (two-sided paired t)."""
    out: dict[str, Any] = {"power": POWER, "alpha": ALPHA, "n": p.n, "sd": p.sd, "effect": effect, "mdd": None,
                           "seeds_needed": None, "seeds_needed_observed": None}
    if p.sd is None or p.sd == 0:
        return out
    out["mdd"] = mdd(p.sd, p.n)
    if effect:
        out["seeds_needed"] = _needed(effect, p.sd)
    if p.mean:
        out["seeds_needed_observed"] = _needed(p.mean, p.sd)
    return out


def _seeds_phrase(n: int | None) -> str:
    return f"more than {MAX_SEEDS} seeds" if n is None else f"{n} seeds"


def mdd_line(name: str, e: dict[str, Any]) -> str:
    """The report's minimum-detectable-difference sentence for the primary metric ``name``."""
    m, plan = BY_NAME[name], e.get("planning")
    how = f"{POWER:.0%} power, two-sided paired t at {ALPHA:g}, noncentral t"
    if not plan or plan["mdd"] is None:
        why = ("it has no value" if e["paired"] is None else "fewer than 2 complete seeds" if plan["n"] < 2
               else "every seed moved by the same amount")
        return f"Minimum detectable difference ({name}; {how}): not computable ({why})."

    def pts(x: float, signed: bool = False, extra: int = 0) -> str:
        return (fmt_diff(x, m.scale, m.digits) if signed else f"{abs(x) * m.scale:.{m.digits + extra}f}") + \
            (f" {m.unit}" if m.unit else "")

    text = (f"Minimum detectable difference ({name}; {how}): {pts(plan['mdd'], extra=1)} at {plan['n']} seeds, "
            f"from the observed SD of the paired differences, {pts(plan['sd'], extra=1)}.")
    if plan["effect"]:
        text += f" A true difference of {pts(plan['effect'], True)} (effect=) would need " \
                f"{_seeds_phrase(plan['seeds_needed'])}"
        text += f"; the observed {pts(e['paired']['mean'], True)}, {_seeds_phrase(plan['seeds_needed_observed'])}." \
            if e["paired"]["mean"] else "."
    return text


def pilot_sd(project: Path, primary: str = DEFAULT_PRIMARY) -> tuple[float, int]:
    """SD of the paired differences of ``primary`` (printed unit) and its number of seeds, from a finished
    comparison's ``compare.json``; ValueError in one sentence when there is none to read."""
    m = check_primary(primary)
    path = Path(project) / "compare.json"
    try:
        entry = json.loads(path.read_text())["metrics"][primary]
    except OSError:
        raise ValueError(f"no finished comparison to read sd from: {path} does not exist (give sd=)") from None
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path} holds no {primary} result to read sd from (give sd=)") from None
    p = entry.get("paired") or {}
    if p.get("sd") is None or p["sd"] <= 0:
        raise ValueError(f"{path}: {primary} has no spread of paired differences to plan from "
                         f"({p.get('n', 0)} complete seed(s); give sd=)")
    return p["sd"] * m.scale, int(p["n"])


def plan_seeds(primary: str, effect: float, sd: float, project: Path) -> str:
    """``plan_only=True``: :func:`plan_text` with ``sd``, or, when ``sd`` is 0 (not given), with the SD observed in
    the finished comparison under ``project``."""
    source = "sd="
    if sd == 0:
        sd, n = pilot_sd(project, primary)
        source = f"observed over {n} seeds in {Path(project) / 'compare.json'}"
    return plan_text(effect, sd, primary, source)


def plan_text(effect: float, sd: float, primary: str = DEFAULT_PRIMARY, source: str = "sd=") -> str:
    """``plan_only=True``: the seeds that ``effect`` needs given ``sd`` (both in ``primary``'s printed unit), the
    power at a few seed counts, and the minimum detectable difference at those counts."""
    m = check_primary(primary)
    unit = f" {m.unit}" if m.unit else ""
    for key, v in (("effect", effect), ("sd", sd)):
        if not math.isfinite(v):
            raise ValueError(f"argument '{key}={v}' must be a finite number")
    if effect == 0:
        raise ValueError("argument 'effect=0' must be a nonzero difference to detect (in the primary's unit)")
    if sd <= 0:
        raise ValueError(f"argument 'sd={sd:g}' must be a positive SD of the paired differences")
    needed = _needed(effect, sd)
    counts = sorted({2, 3, 5, 10, 20} | ({needed - 1, needed} if needed else set()))
    rows = [[n, f"{power(effect, sd, n):.2f}", f"{mdd(sd, n):.{m.digits + 1}f}"] for n in counts if n >= 2]
    head = (f"{primary}: a true difference of {effect:+g}{unit} with SD {sd:g}{unit} of the paired differences "
            f"({source}) needs {_seeds_phrase(needed)} for {POWER:.0%} power (two-sided paired t at {ALPHA:g}, "
            "noncentral t).")
    header = ["seeds", f"power at {effect:+g}", "minimum detectable difference" + (f" ({m.unit})" if m.unit else "")]
    return head + "\n\n" + markdown_table(header, rows)


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals and len(vals) == len(xs) else None


def _scaled(x: float | None, m: Metric) -> str | None:
    return None if x is None else num(x * m.scale, f".{m.digits}f")


def markdown(plan: Plan, summary: dict[str, Any], results: dict[str, dict[str, Any]], title: str,
             missing: dict[str, str] | None = None) -> str:
    """``compare.md``: the primary verdict, the secondaries with Holm p-values, the minimum detectable difference,
    then the paired differences, per-seed values and the Table-5 rows. ``missing`` maps a run left out to why (a
    failed training's log, ...); runs without a result are named even without it."""
    primary = next(m for m in METRICS if summary[m.name]["role"] == "primary")
    seeds = summary[primary.name]["seeds"]
    secondary = [m for m in METRICS if m is not primary]
    tested = [m for m in secondary if summary[m.name]["p_holm"] is not None]
    lines = [f"# {title}", "", f"`{plan.baseline}` (baseline) vs `{plan.model}` (FINE), seeds "
             f"{', '.join(map(str, seeds))}; differences are FINE - baseline."]
    left_out = not_reported(plan, results)
    if left_out:
        why = {**{n: "no result" for n in left_out if n not in results}, **(missing or {})}
        lines += ["", f"**Not reported:** {len(seeds)} of {len(plan.seeds)} seed pairs are complete; only they are "
                      "reported. Left out: " + "; ".join(f"{n} ({why.get(n, 'its pair is incomplete')})"
                                                         for n in left_out) + "."]
    lines += ["", f"**Primary metric** ({primary.name}, `primary=`; 95% t-interval over seeds): "
                  f"{summary[primary.name]['verdict']}", "",
              "## Secondary metrics (Holm-adjusted p-values)", ""]
    if not tested:
        lines += ["No test: a p-value needs at least 2 complete seed pairs.", ""]
    else:
        conf = (1 - ALPHA / len(tested)) * 100
        lines += [f"Paired t-test p-values, Holm step-down adjusted over the {len(tested)} secondary metrics with a "
                  f"value; intervals Bonferroni-widened to {conf:.3g}% each (1 - {ALPHA:g}/{len(tested)}), so that "
                  "all of them together hold at 95%.", ""]
    lines += [f"- {summary[m.name]['verdict']}" for m in secondary]
    lines += ["", mdd_line(primary.name, summary[primary.name])]
    rows = []
    for m in METRICS:
        e = summary[m.name]
        p, iv = e["paired"], e["interval"]
        rows.append([m.name + (f" ({m.unit})" if m.unit else ""), e["role"], _scaled(_mean(e["baseline"]), m),
                     _scaled(_mean(e["fine"]), m), None if p is None else fmt_diff(p["mean"], m.scale, m.digits),
                     None if iv is None else f"[{fmt_diff(iv['low'], m.scale, m.digits)}, "
                                             f"{fmt_diff(iv['high'], m.scale, m.digits)}]",
                     None if iv is None else iv["kind"], None if p is None or p["p"] is None else fmt_p(p["p"]),
                     None if e["p_holm"] is None else fmt_p(e["p_holm"])])
    lines += ["", "## Paired differences", "",
              markdown_table(["metric", "role", "baseline (mean)", "FINE (mean)", "mean difference", "interval",
                              "interval kind", "p (paired t)", "p (Holm)"], rows)]
    shown = [BY_NAME[k] for k in ("AP50:95", "AP50", "AP75", "APs", "TP", "FP", "FN")]
    seed_rows = []
    for s in seeds:
        for arm in ("baseline", "fine"):
            r = results[plan.run(s, arm).name]
            seed_rows.append([s, arm] + [_scaled(_value(r, m), m) for m in shown])
        seed_rows.append([s, "difference"] + [None if summary[m.name]["diff"] is None else
                                              fmt_diff(summary[m.name]["diff"][seeds.index(s)], m.scale,
                                                       m.digits) for m in shown])
    lines += ["", "## Per seed", "", markdown_table(["seed", "arm", *(m.name for m in shown)], seed_rows)]
    runs = [r for r in plan.runs if r.seed in seeds]
    errs = [results[r.name]["errors"] for r in runs]
    conf, iou = errs[0].get("conf", 0.5), errs[0].get("iou", 0.5)
    lines += ["", f"## Errors at confidence {conf}, IoU {iou} (paper Table 5; mean over seeds)", "",
              table5(plan, results)]
    empty = [r.name for r, e in zip(runs, errs) if not e.get("tp", 0) + e.get("fp", 0)]
    if empty:
        lines += ["", f"Note: no detection of {', '.join(empty)} reaches confidence {conf}, so their TP/FP/FN say "
                      "nothing about the errors; `conf=` sets a lower threshold."]
    return "\n".join(lines) + "\n"


def table5(plan: Plan, results: dict[str, dict[str, Any]]) -> str:
    """Table-5 rows: #images, TP, FP, FN, precision, recall, F1 per arm (mean over the complete seed pairs) and FINE's
    relative change."""
    keys = ("images", "tp", "fp", "fn", "precision", "recall", "f1")
    seeds = complete_seeds(plan, results)
    means: dict[str, dict[str, float | None]] = {}
    for arm in ("baseline", "fine"):
        vals = [results[plan.run(s, arm).name]["errors"] for s in seeds]
        means[arm] = {k: _mean([None if v.get(k) is None else float(v[k]) for v in vals]) for k in keys}
    rows = []
    for arm, model in (("baseline", plan.baseline), ("fine", plan.model)):
        m = means[arm]
        rows.append([Path(model).stem, num(m["images"], ".0f"), num(m["tp"], ".1f"), num(m["fp"], ".1f"),
                     num(m["fn"], ".1f"), num(m["precision"], ".3f"), num(m["recall"], ".3f"), num(m["f1"], ".3f")])

    def rel(k: str) -> str | None:
        b, f = means["baseline"][k], means["fine"][k]
        return None if not b or f is None else f"{(f - b) / b * 100:+.1f}%"

    rows.append(["relative change", None, *(rel(k) for k in keys[1:])])
    return markdown_table(["model", "#images", "TP", "FP", "FN", "precision", "recall", "F1"], rows)


def write(project: Path, document: dict[str, Any], md: str) -> tuple[Path, Path]:
    """Write ``compare.json`` and ``compare.md`` atomically (write beside, then replace)."""
    paths = project / "compare.json", project / "compare.md"
    for path, text in zip(paths, (json.dumps(document, indent=2, default=float), md)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return paths
