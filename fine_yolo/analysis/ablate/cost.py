"""The cost columns of the ablation tables, without data: params, GFLOPs, the FINE blocks' GFLOPs and peak activation
memory, and interleaved CPU latency of the baseline and every distinct variant (batch 1, at ``imgsz``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fine_yolo.analysis.ablate.variants import Stage, Variant

if TYPE_CHECKING:
    import torch


def block_inputs(net: torch.nn.Module, imgsz: int) -> list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor]]:
    """``(block, low, high)`` for every FINE block of ``net``, with the maps it sees at ``imgsz`` (one forward)."""
    import torch

    from fine_yolo.analysis.taps import record

    return [(s.block, s.low, s.high) for s in record(net, torch.zeros(1, 3, imgsz, imgsz))]


def measure_cost(model: str, imgsz: int) -> dict[str, Any]:
    """Params and GFLOPs of ``model``; for a FINE model also its blocks' GFLOPs and peak activation memory.

    Raises ValueError (from the block) when a map is too small for the variant at ``imgsz``.
    """
    import torch
    from ultralytics.utils.torch_utils import get_num_params

    from fine_yolo.analysis.attention_cost import block_cost
    from fine_yolo.bench.complexity import torch_gflops
    from fine_yolo.models import build

    net = build(model).model.eval()
    out: dict[str, Any] = {"params": get_num_params(net), "gflops": torch_gflops(net, imgsz)}
    blocks = []
    for m, low, high in block_inputs(net, imgsz):
        torch.manual_seed(0)  # random maps of the right shapes: cost does not depend on the values
        g, peak = block_cost(m, torch.randn_like(low), torch.randn_like(high))
        blocks.append({"maps": f"{low.shape[2]}x{low.shape[3]}x{low.shape[1]} <- "
                               f"{high.shape[2]}x{high.shape[3]}x{high.shape[1]}", "module": m.extra_repr(),
                       "params": sum(p.numel() for p in m.parameters()), "gflops": g, "peak_mb": peak})
    if blocks:
        out.update(fine_gflops=sum(b["gflops"] for b in blocks), fine_peak_mb=max(b["peak_mb"] for b in blocks),
                   fine_params=sum(b["params"] for b in blocks), blocks=blocks)
    return out


def measure_latency(models: dict[str, str], imgsz: int, iters: int, block: int = 4) -> dict[str, list[float]]:
    """Interleaved eager CPU latency samples (ms) of every model, batch 1 (``bench``'s preparation and loop)."""
    from fine_yolo.bench.backends import prepare_torch
    from fine_yolo.bench.stats import interleave

    runners = {name: prepare_torch(src, imgsz=imgsz, device="cpu", e2e=False).network for name, src in models.items()}
    return interleave(runners, iters=iters, warmup=1, block=block, desc="latency")


def cost_rows(model: str, baseline: str, variants: list[Variant], stages: list[Stage], paths: dict[str, Path],
              imgsz: int, iters: int) -> dict[str, Any]:
    """Measure the baseline and every distinct variant; return ``{"baseline": ..., "variants": {name: ...}}``."""
    import statistics

    from tqdm import tqdm

    base = measure_cost(baseline, imgsz)
    measured: dict[tuple, dict[str, Any]] = {}  # by what the variant builds: shared rows are measured once
    rows: dict[str, dict[str, Any]] = {}
    for v in tqdm(variants, desc="cost", unit="variant"):
        key = v.key(stages)
        if key not in measured:
            try:
                measured[key] = {"source": str(paths[v.name]), **measure_cost(str(paths[v.name]), imgsz)}
            except ValueError as e:  # e.g. a map too small for r*k at this imgsz: say so, measure the rest
                measured[key] = {"source": str(paths[v.name]), "error": str(e)}
        row = dict(measured[key])
        if "error" not in row:
            row.update(d_params=row["params"] - base["params"], d_gflops=row["gflops"] - base["gflops"])
        rows[v.name] = {**asdict(v), "stage_args": [v.stage_args(s) for s in stages], **row}
    if iters > 0:
        sources = {"baseline": baseline}
        first: dict[tuple, str] = {}
        for v in variants:
            if "error" not in rows[v.name]:
                first.setdefault(v.key(stages), v.name)
        sources.update({name: rows[name]["source"] for name in first.values()})
        samples = measure_latency(sources, imgsz, iters)
        base["latency_ms"] = statistics.median(samples["baseline"])
        base["latency_samples_ms"] = samples["baseline"]
        for v in variants:
            name = first.get(v.key(stages))
            if name is not None:
                rows[v.name].update(latency_ms=statistics.median(samples[name]), latency_samples_ms=samples[name])
                rows[v.name].update(speed_ratio_of(base, rows[v.name]))
    return {"baseline": {"model": baseline, **base}, "variants": rows}


def speed_ratio_of(base: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """``speed_ratio`` (median baseline / median variant latency) and its 95% bootstrap interval over the interleaved
    rounds (``fine_yolo.bench.stats.speed_ratio``: samples of one round resampled together)."""
    from fine_yolo.bench.stats import speed_ratio

    r = speed_ratio(base["latency_samples_ms"], row["latency_samples_ms"])
    return {"speed_ratio": r.of_medians, "speed_ratio_ci95": list(r.ci95)}
