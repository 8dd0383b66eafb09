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

Twelve metrics tested at 95% each would show one "difference" in two comparisons of identical models, so only one
metric, the **primary** (chosen before the data), gets that verdict. Every other metric gets its paired t-test
p-value adjusted by Holm's step-down over the m secondary metrics (:func:`holm`) and a Bonferroni-widened interval
at 1 - 0.05/m (:func:`secondary_verdict`); together the m intervals cover all true differences with probability at
least 95%.

Planning (:func:`power`, :func:`mdd`, :func:`seeds_needed`): a two-sided paired t-test at level alpha on n seeds
whose differences have SD sigma detects a true difference delta with probability

    power = P(|T'| > t_{1-alpha/2, n-1}),   T' ~ noncentral t(df = n - 1, nc = delta * sqrt(n) / sigma)

(the exact law of the t statistic under the alternative; the normal approximation overstates the power at 2-10
seeds, where it matters). The minimum detectable difference is the delta with power 80%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _scipy_stats
from scipy.optimize import brentq

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE  # level of every test and of the Holm / Bonferroni family
POWER = 0.8  # the power at which the minimum detectable difference and the seeds needed are computed
MAX_SEEDS = 10_000  # seeds_needed gives up beyond this


@dataclass(frozen=True)
class Paired:
    """Summary of paired differences FINE - baseline over seeds (``low``/``high`` None when n < 2)."""

    n: int
    mean: float
    sd: float | None  # sample standard deviation of the differences (ddof=1)
    low: float | None
    high: float | None
    t: float | None  # the t quantile used, t_{0.975, n-1}
    p: float | None = None  # two-sided paired t-test p-value of "mean difference = 0"

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
    if sd == 0:  # every seed moved by the same amount: t is infinite (or 0/0 when nothing moved)
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(_scipy_stats.ttest_rel(np.asarray(fine, dtype=np.float64), np.asarray(baseline, dtype=np.float64))
                  .pvalue)
    return Paired(n, mean, sd, mean - half, mean + half, t, p)


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


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of m p-values, returned in the input order.

    Sort ascending, p_(1) <= ... <= p_(m); the adjusted p_(i) = max over j <= i of min(1, (m - j + 1) * p_(j)). A
    hypothesis is rejected at level alpha when its adjusted p-value is <= alpha, which controls the chance of any
    false rejection among the m at alpha, whatever their dependence (the 12 metrics are strongly correlated), and
    never rejects less than Bonferroni (m * p). scipy has no Holm (``false_discovery_control`` is BH/BY).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"Holm needs p-values between 0 and 1, got {list(pvalues)}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return out.tolist()


def fmt_p(p: float) -> str:
    """A p-value as printed: two significant digits, ``< 0.001`` below 0.001."""
    return "< 0.001" if p < 0.001 else f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def secondary_verdict(
    name: str, p: Paired, widened: Paired, p_holm: float, m: int, higher_is_better: bool = True,
    scale: float = 1.0, digits: int = 1, unit: str = "",
) -> str:
    """One sentence for a secondary metric, e.g. ``AP50 +0.4 [-1.4, +2.2] points (Bonferroni 99.5%), Holm p = 0.42:
    no measurable difference at 4 seeds``.

    ``widened`` is :func:`paired` at confidence 1 - alpha/m. A direction is called only when that interval excludes 0
    (then Holm p <= m * p < alpha as well); a Holm p below alpha whose interval still holds 0 stays "no measurable
    difference" and says so.
    """
    seeds = f"{p.n} seed{'s' if p.n != 1 else ''}"
    if p.low is None or widened.low is None:
        return verdict(name, p, higher_is_better, scale, digits, unit)
    conf = f"{(1 - ALPHA / m) * 100:.3g}%"
    head = (f"{name} {fmt_diff(p.mean, scale, digits)} [{fmt_diff(widened.low, scale, digits)}, "
            f"{fmt_diff(widened.high, scale, digits)}]{' ' + unit if unit else ''} (Bonferroni {conf}), "
            f"Holm p {'' if fmt_p(p_holm).startswith('<') else '= '}{fmt_p(p_holm)}")
    if widened.contains_zero():
        note = f" (Holm p < {ALPHA:g} but the Bonferroni interval contains 0)" if p_holm < ALPHA else ""
        return f"{head}: no measurable difference at {seeds}{note}"
    higher = widened.low > 0
    direction = f"FINE {'higher' if higher else 'lower'} ({'better' if higher == higher_is_better else 'worse'})"
    return f"{head}: {direction} at {seeds} (Bonferroni interval excludes 0)"


def _check_plan_inputs(sd: float, n: int | None = None, effect: float | None = None) -> None:
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"the SD of the paired differences must be a positive number, got {sd}")
    if n is not None and n < 2:
        raise ValueError(f"a paired t-test needs at least 2 seeds, got {n}")
    if effect is not None and not (math.isfinite(effect) and effect != 0):
        raise ValueError(f"the difference to detect must be a nonzero number, got {effect}")


def _power_nc(nc: float, n: int, alpha: float) -> float:
    df = n - 1
    crit = float(_scipy_stats.t.ppf(1 - alpha / 2, df))
    # P(T' < -crit) written as P(T'(-nc) > crit): scipy's nct.cdf returns NaN deep in the lower tail (df=1, nc=8)
    return float(_scipy_stats.nct.sf(crit, df, nc) + _scipy_stats.nct.sf(crit, df, -nc))


def power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` seeds against a true mean difference
    ``effect`` when the differences have SD ``sd`` (noncentral t, see the module docstring)."""
    _check_plan_inputs(sd, n)
    return _power_nc(abs(effect) * math.sqrt(n) / sd, n, alpha)


def mdd(sd: float, n: int, target: float = POWER, alpha: float = ALPHA) -> float:
    """Minimum detectable difference: the true difference that ``n`` seeds detect with power ``target``.

    Power rises monotonically with the noncentrality nc = delta * sqrt(n) / sd from alpha at nc = 0, so the nc with
    power ``target`` is bracketed by doubling and found by Brent's method; delta = nc * sd / sqrt(n).
    """
    _check_plan_inputs(sd, n)
    hi = 1.0
    while _power_nc(hi, n, alpha) < target:
        hi *= 2
    nc = brentq(lambda x: _power_nc(x, n, alpha) - target, 0.0, hi, xtol=1e-10)
    return nc * sd / math.sqrt(n)


def seeds_needed(effect: float, sd: float, target: float = POWER, alpha: float = ALPHA,
                 max_seeds: int = MAX_SEEDS) -> int:
    """Fewest seeds (>= 2) whose paired t-test detects ``effect`` with power ``target`` (power rises with n, so the
    first n found by doubling and bisection is the answer); ValueError beyond ``max_seeds``."""
    _check_plan_inputs(sd, effect=effect)
    if power(effect, sd, max_seeds, alpha) < target:
        raise ValueError(f"a difference of {effect:g} with SD {sd:g} needs more than {max_seeds} seeds")
    lo, hi = 1, 2  # power(lo) < target (n = 1 has no test), power(hi) >= target once found
    while power(effect, sd, hi, alpha) < target:
        lo, hi = hi, min(2 * hi, max_seeds)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if power(effect, sd, mid, alpha) < target else (lo, mid)
    return hi
