"""The comparison's numbers: per-seed values, paired differences with intervals, verdicts; ``compare.{json,md}``.

Metrics (FINE - baseline per seed, then :func:`fine_yolo.compare.stats.paired`): pycocotools' AP50:95, AP50, AP75,
APs, APm, APl and, at confidence 0.5 and IoU 0.5 (the paper's Table 5), TP, FP, FN, precision, recall and F1. APs
are printed in percentage points (x100); a size class the ground truth lacks (pycocotools' -1) has no value and is
reported as such, not as 0. TP/FP/FN differences are in boxes; FP and FN are lower-is-better.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fine_yolo.compare.plan import Plan
from fine_yolo.compare.stats import Paired, fmt_diff, paired, verdict
from fine_yolo.tables import markdown_table, num

CURVE_COLUMN = "metrics/mAP50-95(B)"


@dataclass(frozen=True)
class Metric:
    """One reported metric: where its value lives in a run's evaluation, and how it prints."""

    name: str
    source: str  # "coco" or "errors"
    key: str
    higher_is_better: bool = True
    scale: float = 1.0
    digits: int = 1
    unit: str = ""


METRICS: tuple[Metric, ...] = (
    *(Metric(k, "coco", k, True, 100.0, 1, "points") for k in ("AP50:95", "AP50", "AP75", "APs", "APm", "APl")),
    Metric("TP", "errors", "tp", True, 1.0, 1, "boxes"),
    Metric("FP", "errors", "fp", False, 1.0, 1, "boxes"),
    Metric("FN", "errors", "fn", False, 1.0, 1, "boxes"),
    Metric("precision", "errors", "precision", True, 100.0, 1, "points"),
    Metric("recall", "errors", "recall", True, 100.0, 1, "points"),
    Metric("F1", "errors", "f1", True, 100.0, 1, "points"),
)


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


def summarize(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per metric: per-seed baseline and FINE values, differences, :class:`Paired` summary and the verdict."""
    out: dict[str, Any] = {}
    for m in METRICS:
        base = [_value(results[plan.run(s, "baseline").name], m) for s in plan.seeds]
        fine = [_value(results[plan.run(s, "fine").name], m) for s in plan.seeds]
        entry: dict[str, Any] = {"baseline": base, "fine": fine, "higher_is_better": m.higher_is_better,
                                 "scale": m.scale, "unit": m.unit}
        if any(v is None for v in base + fine):
            missing = [s for s, b, f in zip(plan.seeds, base, fine) if b is None or f is None]
            why = ("the ground truth has no object of this size" if m.source == "coco"
                   else "undefined: no detection or no ground-truth box to divide by")
            entry.update(diff=None, paired=None,
                         verdict=f"{m.name}: no value at seed(s) {', '.join(map(str, missing))} ({why})")
        else:
            p = paired(fine, base)
            entry.update(diff=[f - b for f, b in zip(fine, base)], paired=p.to_dict(),
                         verdict=verdict(m.name, p, m.higher_is_better, m.scale, m.digits, m.unit))
        out[m.name] = entry
    return out


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals and len(vals) == len(xs) else None


def _scaled(x: float | None, m: Metric) -> str | None:
    return None if x is None else num(x * m.scale, f".{m.digits}f")


def markdown(plan: Plan, summary: dict[str, Any], results: dict[str, dict[str, Any]], title: str) -> str:
    """``compare.md``: verdicts, paired differences, per-seed values, and the Table-5 rows."""
    by_name = {m.name: m for m in METRICS}
    lines = [f"# {title}", "", f"`{plan.baseline}` (baseline) vs `{plan.model}` (FINE), seeds "
             f"{', '.join(map(str, plan.seeds))}; differences are FINE - baseline, 95% t-interval over seeds.", ""]
    lines += [f"- {summary[m.name]['verdict']}" for m in METRICS]
    rows = []
    for m in METRICS:
        e = summary[m.name]
        p = Paired(**e["paired"]) if e["paired"] else None
        interval = None if p is None or p.low is None else \
            f"[{fmt_diff(p.low, m.scale, m.digits)}, {fmt_diff(p.high, m.scale, m.digits)}]"
        rows.append([m.name + (f" ({m.unit})" if m.unit else ""), _scaled(_mean(e["baseline"]), m),
                     _scaled(_mean(e["fine"]), m), None if p is None else fmt_diff(p.mean, m.scale, m.digits),
                     interval])
    lines += ["", "## Paired differences", "",
              markdown_table(["metric", "baseline (mean)", "FINE (mean)", "mean difference", "95% interval"], rows)]
    shown = [by_name[k] for k in ("AP50:95", "AP50", "AP75", "APs", "TP", "FP", "FN")]
    seed_rows = []
    for s in plan.seeds:
        for arm in ("baseline", "fine"):
            r = results[plan.run(s, arm).name]
            seed_rows.append([s, arm] + [_scaled(_value(r, m), m) for m in shown])
        seed_rows.append([s, "difference"] + [None if summary[m.name]["diff"] is None else
                                              fmt_diff(summary[m.name]["diff"][plan.seeds.index(s)], m.scale,
                                                       m.digits) for m in shown])
    lines += ["", "## Per seed", "", markdown_table(["seed", "arm", *(m.name for m in shown)], seed_rows)]
    errs = [results[r.name]["errors"] for r in plan.runs]
    conf, iou = errs[0].get("conf", 0.5), errs[0].get("iou", 0.5)
    lines += ["", f"## Errors at confidence {conf}, IoU {iou} (paper Table 5; mean over seeds)", "",
              table5(plan, results)]
    empty = [r.name for r, e in zip(plan.runs, errs) if not e.get("tp", 0) + e.get("fp", 0)]
    if empty:
        lines += ["", f"Note: no detection of {', '.join(empty)} reaches confidence {conf}, so their TP/FP/FN say "
                      "nothing about the errors; `conf=` sets a lower threshold."]
    return "\n".join(lines) + "\n"


def table5(plan: Plan, results: dict[str, dict[str, Any]]) -> str:
    """Table-5 rows: #images, TP, FP, FN, precision, recall, F1 per arm (mean over seeds) and FINE's relative change."""
    keys = ("images", "tp", "fp", "fn", "precision", "recall", "f1")
    means: dict[str, dict[str, float | None]] = {}
    for arm in ("baseline", "fine"):
        vals = [results[plan.run(s, arm).name]["errors"] for s in plan.seeds]
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
