"""The ablation tables' report: ``ablate.md`` (one table per paper table, ours beside the paper's numbers), the
paper's numbers for ``ablate.json`` and ``ablate.png`` (one panel per table)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fine_yolo.analysis.ablate.variants import Stage, Variant
from fine_yolo.tables import markdown_table, millions, num, signed

TABLE_TITLES = {
    "3": "Table 3: attention strategy",
    "5": "Fig. 5: AATS sampling ratio r and kernel k",
    "4": "Table 4: per-head dim d",
    "6": "Table 6: AATS downsampling operator",
}
# The paper's complexity column of Table 3, per attention type.
COMPLEXITY = {
    "vanilla": "O(HlWl x HhWh)", "window": "O(HlWl x M^2), M=7", "area": "O(HlWl x HhWh / A), A=4",
    "linear": "O(HlWl + HhWh)", "aats": "O(HlWl/(r^2k^2) x HhWh/k^2)",
}


def ap_cells(summary: dict[str, Any] | None) -> list[Any]:
    """The accuracy cells of a variant's table row: AP50:95 (mean over seeds, points), its difference from the
    baseline and the difference's 95% interval (none without a summary)."""
    from fine_yolo.compare.stats import fmt_diff

    if summary is None:
        return []
    e = summary["AP50:95"]
    fine = [x for x in e["fine"] if x is not None]
    mean = 100 * sum(fine) / len(fine) if fine and len(fine) == len(e["fine"]) else None
    p = e["paired"]
    diff = None if p is None else fmt_diff(p["mean"], 100)
    interval = None if p is None or p["low"] is None else f"[{fmt_diff(p['low'], 100)}, {fmt_diff(p['high'], 100)}]"
    return [num(mean, ".1f"), diff, interval]


def _ratio_cell(c: dict[str, Any]) -> str | None:
    if c.get("speed_ratio") is None:
        return None
    ci = c.get("speed_ratio_ci95")
    return f"{c['speed_ratio']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _paper_cells(v: Variant) -> list[Any]:
    from fine_yolo import paper

    if v.table == "3":
        p = paper.TABLE3_ROWS[v.attention]
        return [signed(p["d_gflops"], ".1f"), signed(p["d_peak_mb"], ".2f"), p["fps"], p["AP"]]
    if v.table == "5":
        p = paper.FIG5.get((v.r, v.k)) if v.k else None
        return [signed(p["d_gflops"], ".1f") if p else None, p["AP"] if p else None]
    if v.table == "4":
        return [paper.TABLE4.get(v.head_dim)]
    p = paper.TABLE6[v.pool]
    return [num(p["macs_m"], ".2f"), f"+{p['d_params_k']:.2f}K", p["AP"]]


def _paper_header(table: str) -> list[str]:
    return {"3": ["paper ΔGFLOPs", "paper ΔMem (MB)", "paper FPS", "paper AP"],
            "5": ["paper ΔGFLOPs", "paper AP"], "4": ["paper AP"],
            "6": ["paper MACs (M)", "paper Δparams", "paper AP"]}[table]


def _paper_baseline(table: str) -> list[Any]:
    from fine_yolo import paper

    if table == "3":
        b = paper.TABLE3_BASELINE
        return [f"{b['gflops']:.2f}", f"{b['peak_mb']:.2f}", b["fps"], b["AP"]]
    if table == "5":
        return [None, paper.FIG5_BASELINE_AP]
    if table == "4":
        return [paper.TABLE4_BASELINE_AP]
    return [None, None, None]


def table_markdown(table: str, variants: list[Variant], cost: dict[str, Any], stages: list[Stage],
                   accuracy: dict[str, Any] | None = None) -> str:
    """One table in the paper's layout: the baseline row, then one row per variant, ours then the paper's."""
    rows_v = [v for v in variants if v.table == table]
    base = cost["baseline"]
    first = {"3": "attention", "5": "r, k", "4": "d (heads per stage)", "6": "Down()"}[table]
    header = [first, "params", "Δparams", "GFLOPs", "ΔGFLOPs", "FINE GFLOPs", "FINE peak act. (MB)", "latency (ms)",
              "baseline/variant [95% CI]"]
    if table == "3":
        header.insert(1, "complexity (paper)")
    if accuracy:
        header += ["AP50:95", "Δ AP50:95", "95% interval"]
    header += _paper_header(table)
    base_cells = [f"baseline ({Path(base['model']).stem})", millions(base["params"]), None,
                  f"{base['gflops']:.2f}", None, None, None, num(base.get("latency_ms"), ".1f"), None]
    if table == "3":
        base_cells.insert(1, None)
    if accuracy:
        b = next(iter(accuracy.values()))["AP50:95"]["baseline"]
        base_cells += [num(100 * sum(b) / len(b), ".1f") if b and None not in b else None, None, None]
    cells = [base_cells + _paper_baseline(table)]
    for v in rows_v:
        c = cost["variants"][v.name]
        label = v.label
        if table == "4":
            label += " (" + "/".join(str(s.c_low // a[2]) for s, a in zip(stages, c["stage_args"])) + ")"
        if "error" in c:
            row = [label, *[None] * 7, f"not measured: {c['error']}"]
        else:
            row = [label, millions(c["params"]), f"{c['d_params'] / 1e3:+.1f}K", f"{c['gflops']:.2f}",
                   signed(c["d_gflops"], ".3f"), f"{c['fine_gflops']:.3f}", f"{c['fine_peak_mb']:.2f}",
                   num(c.get("latency_ms"), ".1f"), _ratio_cell(c)]
        if table == "3":
            row.insert(1, COMPLEXITY[v.attention])
        if accuracy:
            row += ap_cells(accuracy.get(v.name))
        cells.append(row + _paper_cells(v))
    return markdown_table(header, cells)


def markdown(tables: list[str], variants: list[Variant], cost: dict[str, Any], stages: list[Stage],
             settings: dict[str, Any], accuracy: dict[str, Any] | None = None) -> str:
    """``ablate.md``: one section per table, with what was measured how."""
    lines = [f"# Ablations of {settings['model']} (imgsz {settings['imgsz']}, batch 1)", "",
             f"Ours: {settings['model']} and its baseline {Path(cost['baseline']['model']).stem}; GFLOPs counted "
             "with attention (FlopCounterMode, math attention); FINE peak act. = peak bytes of tensors the FINE "
             "blocks create (unfused attention, inputs and weights excluded; the largest block); latency = "
             f"PyTorch eager, CPU, {settings['threads']} threads, median of {settings['iters']} interleaved runs, "
             f"on {settings['cpu']}; baseline/variant = ratio of medians with its 95% bootstrap interval over the "
             "interleaved rounds (an interval containing 1 is no measurable difference in speed). Paper: Table 3 on "
             "RT-DETR R18 (its FPS, baseline 80; Mem in MB), Fig. 5 / Tables 4 and 6 on Faster R-CNN R50 (AP on COCO "
             "val2017): compare directions, not absolute values.", ""]
    if accuracy:
        seeds = next(iter(accuracy.values()))["AP50:95"]["baseline"]
        lines += [f"AP50:95: pycocotools on {settings['data']} ({settings['split']}), mean over {len(seeds)} seed(s);"
                  " Δ = variant - baseline per seed, 95% t-interval over seeds (no interval from one seed). A Δ "
                  "whose interval contains 0 is no measurable difference.", ""]
    for t in tables:
        lines += [f"## {TABLE_TITLES[t]}", "", table_markdown(t, variants, cost, stages, accuracy), ""]
    return "\n".join(lines)


def plot(tables: list[str], variants: list[Variant], cost: dict[str, Any], path: Path,
         accuracy: dict[str, Any] | None = None) -> Path:
    """One panel per table: AP50:95 (with the 95% interval of the difference around the baseline, when there is
    data) or latency (with the bootstrap interval of the speed ratio), against the variant's extra GFLOPs over the
    baseline (Table 4: against d, the FLOPs being equal); each point labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = min(len(tables), 2)
    nrows = math.ceil(len(tables) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6.0 * cols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[len(tables):]:
        ax.set_visible(False)
    base = cost["baseline"]
    for ax, t in zip(axes.flat, tables):
        xs, ys, errs, labels = [], [], [], []
        for v in (v for v in variants if v.table == t):
            c = cost["variants"][v.name]
            if "error" in c:
                continue
            if accuracy:
                e = accuracy[v.name]["AP50:95"]
                base_mean = 100 * sum(e["baseline"]) / len(e["baseline"])
                p = e["paired"]
                y = None if p is None else base_mean + 100 * p["mean"]
                err = 0.0 if p is None or p["low"] is None else 100 * (p["high"] - p["mean"])
            else:  # the bootstrap interval of baseline/variant, as a latency range around the median
                y, ci = c.get("latency_ms"), c.get("speed_ratio_ci95")
                err = (y - base["latency_ms"] / ci[1], base["latency_ms"] / ci[0] - y) if ci and y else 0.0
            if y is None:
                continue
            xs.append(v.head_dim if t == "4" else c["d_gflops"])  # Table 4: same FLOPs at every d
            ys.append(y)
            errs.append(err if isinstance(err, tuple) else (err, err))
            labels.append(v.label.replace(" (shipped)", "*"))
        spread = max((max(e) for e in errs), default=0.0)
        if xs and accuracy and max(ys) - min(ys) < 1.0:  # AP values within a point: show +-1 point, no offset
            mid = (max(ys) + min(ys)) / 2
            ax.set_ylim(mid - 1.0 - spread, mid + 1.0 + spread)
        ax.ticklabel_format(axis="y", useOffset=False)
        if xs:
            yerr = [[e[0] for e in errs], [e[1] for e in errs]] if spread else None
            ax.errorbar(xs, ys, yerr=yerr, fmt="o", color="#DD8452", ecolor="#999999", capsize=3)
            for i, (x, y, lab) in enumerate(zip(xs, ys, labels)):  # alternate above/below: neighbours overlap less
                ax.annotate(lab, (x, y), textcoords="offset points", xytext=(5, 4 if i % 2 == 0 else -11), fontsize=8)
        if accuracy:
            ax.axhline(100 * sum(next(iter(accuracy.values()))["AP50:95"]["baseline"]) /
                       len(next(iter(accuracy.values()))["AP50:95"]["baseline"]), color="#4C72B0", lw=1, ls="--",
                       label="baseline")
            ax.set_ylabel("AP50:95 (%)")
        elif base.get("latency_ms") is not None:
            ax.axhline(base["latency_ms"], color="#4C72B0", lw=1, ls="--", label="baseline")
            ax.set_ylabel("latency (ms, CPU eager, median, 95% CI)")
        if t == "4":
            ax.set_xscale("log", base=2)
            ax.set_xlabel("per-head dim d (capped at each stage's C)")
        else:
            if xs and max(xs) > 20 * max(min(x for x in xs if x > 0) if any(x > 0 for x in xs) else 1, 1e-9):
                ax.set_xscale("symlog", linthresh=max(min((x for x in xs if x > 0), default=1.0), 1e-3))
            else:
                ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.set_xlabel("ΔGFLOPs over the baseline")
        ax.set_title(TABLE_TITLES[t], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.margins(x=0.25, y=0.2)
    fig.suptitle(f"fine-yolo ablate: {Path(base['model']).stem} + FINE variants", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def paper_document(tables: list[str]) -> dict[str, Any]:
    """The paper's numbers of ``tables`` for ``ablate.json`` (the detector each table comes from, its rows)."""
    from fine_yolo import paper

    doc: dict[str, Any] = {}
    if "3" in tables:
        doc["3"] = {"model": "RT-DETR R18", "baseline": paper.TABLE3_BASELINE, "rows": paper.TABLE3_ROWS}
    if "5" in tables:
        doc["5"] = {"model": "Faster R-CNN R50", "baseline_AP": paper.FIG5_BASELINE_AP,
                    "rows": {f"r{r}k{k}": v for (r, k), v in paper.FIG5.items()}}
    if "4" in tables:
        doc["4"] = {"model": "Faster R-CNN R50, C=256", "baseline_AP": paper.TABLE4_BASELINE_AP,
                    "rows": {f"d{d}": {"AP": ap} for d, ap in paper.TABLE4.items()}}
    if "6" in tables:
        doc["6"] = {"model": "Faster R-CNN R50", "rows": paper.TABLE6}
    return doc
