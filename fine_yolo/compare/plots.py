"""The comparison's pictures (matplotlib, Agg): training curves of every run, and the paired differences.

* ``curves.png`` — validation mAP50-95 per epoch for every run: baseline runs in one colour, FINE runs in another,
  one thin line per seed and the mean over seeds (epoch by epoch, over the seeds that reached that epoch) thick.
* ``differences.png`` — one panel per metric group (AP in points, TP/FP/FN in boxes): each seed's FINE - baseline
  as a dot, the mean with the interval the report gives it as an error bar (the primary metric's 95% t-interval,
  drawn solid; the secondaries' wider Bonferroni intervals, drawn dashed), and 0 as a line, so "does the interval
  hold 0" is read at a glance.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BASELINE_COLOUR, FINE_COLOUR = "#4C72B0", "#DD8452"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _wrapped(title: str, width: int) -> str:
    """``title`` broken into lines of at most ``width`` characters, so a long title is never cut at the figure edge."""
    return "\n".join(textwrap.wrap(title, width)) or title


def _mean_curve(curves: Sequence[Sequence[float]]) -> np.ndarray:
    """Epoch-wise mean over the curves that reach each epoch."""
    n = max((len(c) for c in curves), default=0)
    return np.array([np.mean([c[i] for c in curves if len(c) > i]) for i in range(n)])


def plot_curves(curves: dict[str, dict[int, Sequence[float]]], labels: dict[str, str], path: Path, title: str) -> Path:
    """``curves[arm][seed]`` = mAP50-95 per epoch; ``labels[arm]`` the model name shown in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for arm, colour in (("baseline", BASELINE_COLOUR), ("fine", FINE_COLOUR)):
        per_seed = [list(c) for c in curves.get(arm, {}).values() if len(c)]
        for c in per_seed:
            ax.plot(np.arange(1, len(c) + 1), c, color=colour, lw=0.9, alpha=0.45)
        if per_seed:
            mean = _mean_curve(per_seed)
            ax.plot(np.arange(1, len(mean) + 1), mean, color=colour, lw=2.8,
                    label=f"{labels.get(arm, arm)} (mean of {len(per_seed)} seeds; thin: each seed)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val mAP50-95")
    ax.set_title(_wrapped(title, 80), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_differences(summary: dict, groups: Sequence[tuple[str, Sequence[str]]], path: Path, title: str) -> Path:
    """One panel per ``(unit label, metric names)`` group of :func:`fine_yolo.compare.report.summarize`'s output."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups) + 1, 4.2), dpi=120, squeeze=False)
    for ax, (unit, names) in zip(axes[0], groups):
        labelled: set[str] = set()  # one legend entry per interval kind and panel
        shown = [n for n in names if summary[n]["paired"] is not None]
        for i, name in enumerate(shown):
            e = summary[name]
            scale = e["scale"]
            d = np.asarray(e["diff"]) * scale
            p, iv = e["paired"], e.get("interval")
            jitter = np.linspace(-0.12, 0.12, len(d)) if len(d) > 1 else np.zeros(1)
            ax.scatter(i + jitter, d, s=14, color="0.45", zorder=3, label="each seed" if i == 0 else None)
            if iv is not None:
                holds_zero = iv["low"] <= 0 <= iv["high"]
                colour = "0.25" if holds_zero else (FINE_COLOUR if (iv["low"] > 0) == e["higher_is_better"]
                                                    else BASELINE_COLOUR)
                kind = "primary" if e.get("role") == "primary" else "secondary"
                bar = ax.errorbar(i + 0.3, p["mean"] * scale, yerr=[[(p["mean"] - iv["low"]) * scale],
                                                                     [(iv["high"] - p["mean"]) * scale]],
                                  fmt="o", color=colour, capsize=5, lw=2, zorder=4,
                                  label=None if kind in labelled else f"mean, {iv['kind']}")
                labelled.add(kind)
                if kind == "secondary":
                    bar[2][0].set_linestyle("--")
            else:
                ax.plot(i + 0.3, p["mean"] * scale, "o", color="0.25", zorder=4)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels(shown, rotation=30)
        ax.set_ylabel(f"FINE - baseline ({unit})")
        ax.grid(axis="y", alpha=0.3)
        if shown:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(_wrapped(title, int(11 * (4.2 * len(groups) + 1))), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
