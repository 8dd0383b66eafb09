"""Paired differences over seeds, their 95% t-interval, and the one verdict sentence per metric.

Each seed trains both arms with the same seed, data order and initial baseline weights, so seed ``i`` gives one
paired difference ``d_i = FINE_i - baseline_i``. Over ``n`` seeds:

    mean = (1/n) * sum(d_i),   s = sqrt(sum((d_i - mean)^2) / (n - 1)),   se = s / sqrt(n)
    95% interval = mean -/+ t_{0.975, n-1} * se          (Student's t, n - 1 degrees of freedom)

The t-interval assumes the d_i are independent draws from a roughly normal distribution; seeds are independent by
construction, and with 3-10 seeds nothing better is identifiable. One seed gives no interval at all.

The verdict never calls a difference an improvement when its interval contains 0: that is "no measurable
difference at n seeds". Only an interval entirely on one side of 0 gets a direction ("FINE higher"/"FINE lower"),
and "better"/"worse" follows from whether the metric is higher-is-better (AP, TP, precision) or lower-is-better
(FP, FN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _scipy_stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Paired:
    """Summary of paired differences FINE - baseline over seeds (``low``/``high`` None when n < 2)."""

    n: int
    mean: float
    sd: float | None  # sample standard deviation of the differences (ddof=1)
    low: float | None
    high: float | None
    t: float | None  # the t quantile used, t_{0.975, n-1}

    def contains_zero(self) -> bool:
        return self.low is None or self.low <= 0.0 <= self.high

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """``t_{(1+confidence)/2, n-1}``: 12.706 for n=2, 4.303 for n=3, 2.776 for n=5 (two-sided 95%)."""
    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 seeds, got {n}")
    return float(_scipy_stats.t.ppf((1 + confidence) / 2, n - 1))


def paired(fine: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE) -> Paired:
    """Mean of ``fine[i] - baseline[i]`` with its two-sided t-interval (see the module docstring)."""
    if len(fine) != len(baseline):
        raise ValueError(f"paired values need one FINE value per baseline value, got {len(fine)} and {len(baseline)}")
    if not fine:
        raise ValueError("paired differences of no seeds")
    d = np.asarray(fine, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if not np.all(np.isfinite(d)):
        raise ValueError(f"paired differences must be finite numbers, got {d.tolist()}")
    n, mean = len(d), float(d.mean())
    if n < 2:
        return Paired(n, mean, None, None, None, None)
    sd = float(d.std(ddof=1))
    t = t_quantile(n, confidence)
    half = t * sd / math.sqrt(n)
    return Paired(n, mean, sd, mean - half, mean + half, t)


def fmt_diff(x: float, scale: float = 1.0, digits: int = 1) -> str:
    """A difference as printed: ``x * scale`` with its sign (``+0.8``, ``-1.2``), and ``0.0`` (no sign, never
    ``-0.0``) when it rounds to zero."""
    v = x * scale
    return f"{v:+.{digits}f}" if round(v, digits) != 0 else f"{0:.{digits}f}"


def verdict(
    name: str, p: Paired, higher_is_better: bool = True, scale: float = 1.0, digits: int = 1, unit: str = ""
) -> str:
    """One sentence, e.g. ``AP50:95 +0.8 [-0.3, +1.9] points: no measurable difference at 3 seeds``.

    ``scale`` turns the stored values into what is printed (100 for AP in percentage points); ``unit`` follows the
    interval.
    """
    seeds = f"{p.n} seed{'s' if p.n != 1 else ''}"
    head = f"{name} {fmt_diff(p.mean, scale, digits)}"
    if p.low is None:
        return f"{head}{' ' + unit if unit else ''}: {seeds}, no interval (a single seed cannot tell a difference)"
    head += f" [{fmt_diff(p.low, scale, digits)}, {fmt_diff(p.high, scale, digits)}]{' ' + unit if unit else ''}"
    if p.contains_zero():
        return f"{head}: no measurable difference at {seeds} (95% t-interval contains 0)"
    higher = p.low > 0
    better = higher == higher_is_better
    direction = f"FINE {'higher' if higher else 'lower'} ({'better' if better else 'worse'})"
    return f"{head}: {direction} at {seeds} (95% t-interval excludes 0)"
