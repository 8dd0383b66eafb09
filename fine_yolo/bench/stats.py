"""Latency statistics (numpy) and the interleaved timing loop (no model needed)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass
class LatencyStats:
    """Summary of latency samples in milliseconds; ``fps = 1000 / median`` (batch 1)."""

    n: int
    median: float
    mean: float
    p90: float
    p99: float
    min: float
    max: float
    std: float
    fps: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(samples_ms: list[float]) -> LatencyStats:
    """Median, mean, p90, p99 (numpy's linear interpolation), min, max, population std and FPS of ``samples_ms``."""
    if not len(samples_ms):
        raise ValueError("no latency samples")
    xs = np.asarray(samples_ms, dtype=np.float64)
    med = float(np.median(xs))
    p90, p99 = np.percentile(xs, [90, 99])
    return LatencyStats(
        n=int(xs.size),
        median=med,
        mean=float(xs.mean()),
        p90=float(p90),
        p99=float(p99),
        min=float(xs.min()),
        max=float(xs.max()),
        std=float(xs.std()),
        fps=1000.0 / med if med > 0 else math.inf,
    )


@dataclass
class Ratio:
    """Speed of FINE relative to its baseline: ``baseline / FINE`` latency (1.0 = same speed, 0.97 = 3% slower)."""

    of_medians: float  # median(baseline) / median(FINE): the headline number
    paired_median: float  # median over rounds of baseline_i / FINE_i (each pair ran back to back: drift cancels)
    ci95: tuple[float, float]  # bootstrap 95% interval of of_medians, resampling rounds (pairs kept together)

    def to_dict(self) -> dict[str, object]:
        return {"of_medians": self.of_medians, "paired_median": self.paired_median, "ci95": list(self.ci95)}


_BOOT_CHUNK = 1 << 22  # resampled indices held at once (32 MiB of int64), however many samples a long run took


def speed_ratio(baseline_ms: list[float], fine_ms: list[float], n_boot: int = 1000, seed: int = 0) -> Ratio:
    """Ratio baseline/FINE of interleaved samples (same length: sample i of each ran in round i).

    The interval is the percentile bootstrap (2.5th and 97.5th percentiles of ``n_boot`` resampled ratios of
    medians); each resample draws rounds with replacement, keeping both models' samples of a round together.
    """
    base, fine = np.asarray(baseline_ms, dtype=np.float64), np.asarray(fine_ms, dtype=np.float64)
    if not base.size or base.shape != fine.shape:
        raise ValueError(f"need paired samples, got {base.size} baseline and {fine.size} FINE")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = base.size
    rows = max(1, _BOOT_CHUNK // n)
    boots = []
    for start in range(0, n_boot, rows):
        idx = rng.integers(0, n, size=(min(rows, n_boot - start), n))
        boots.append(np.median(base[idx], axis=1) / np.median(fine[idx], axis=1))
    lo, hi = np.percentile(np.concatenate(boots), [2.5, 97.5])
    return Ratio(float(np.median(base) / np.median(fine)), float(np.median(base / fine)), (float(lo), float(hi)))


def interleave(
    runners: dict[str, Callable[[], float]],
    iters: int = 100,
    seconds: float = 0.0,
    warmup: int = 10,
    block: int = 1,
    progress: bool = True,
    desc: str = "bench",
    max_iters: int = 1_000_000,
) -> dict[str, list[float]]:
    """Time ``runners`` interleaved and return each one's samples (ms), ``iters`` or more per runner.

    Each runner returns the latency of one run in milliseconds (it times itself, so a GPU runner can use CUDA
    events). ``warmup`` untimed rounds (A B) come first. Then, in rounds, every runner takes a turn:

    * ``block=1``: one timed run per turn, A B A B ... Every run follows a run of the *other* model, so every sample
      includes the switch (weights and activations pulled back into the caches).
    * ``block=k > 1``: one untimed settling run, then ``k`` timed runs per turn (A A A A A B B B B B ...): the
      steady-state latency a deployed model has, still with both models timed under the same machine state.

    Rounds continue until every runner has at least ``iters`` samples *and* ``seconds`` seconds have passed
    (``max_iters`` caps the samples). Interleaving puts both models under the same clocks, thermal state and other
    load, which on a shared or throttling machine matters more than the number of samples.
    """
    if not runners:
        raise ValueError("nothing to time")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    names = list(runners)
    for _ in range(max(0, warmup)):
        for name in names:
            runners[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=iters if seconds <= 0 else None, desc=desc, unit="run", leave=False)
    start = time.perf_counter()
    done = 0
    try:
        while done < max_iters and (done < iters or time.perf_counter() - start < seconds):
            for name in names:
                if block > 1:
                    runners[name]()  # settle after the switch, untimed
                for _ in range(block):
                    samples[name].append(float(runners[name]()))
            done += block
            if bar is not None:
                bar.update(block)
                if (done // block) % 10 == 0:
                    bar.set_postfix(**{n: f"{np.median(s):.2f}ms" for n, s in samples.items()})
    finally:
        if bar is not None:
            bar.close()
    return samples
