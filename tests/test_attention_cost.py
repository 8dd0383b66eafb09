"""The Table 3 micro-benchmark: the peak-memory tracker, FLOPs of AATS vs vanilla attention, and the report."""

from __future__ import annotations

import pytest
import torch

from fine_yolo.analysis.attention_cost import (
    Stage,
    block_cost,
    compare_stage,
    model_stages,
    peak_activation_bytes,
    reductions,
    table,
)
from fine_yolo.nn import FINE


def test_peak_memory_tracker_counts_live_intermediates():
    x = torch.zeros(1000)  # 4000 bytes, excluded as an input
    assert peak_activation_bytes(lambda t: t.view(10, 100), x) == 0  # a view allocates nothing
    assert peak_activation_bytes(lambda t: t * 2, x) == 4000
    assert peak_activation_bytes(lambda t: (t * 2) + 1, x) == 8000  # t*2 is alive while +1 is written

    def chain(t):  # each intermediate dies before the next-but-one is made: never more than two alive
        for _ in range(5):
            t = t * 2
        return t

    assert peak_activation_bytes(chain, x) == 8000


def test_vanilla_attention_costs_its_quadratic_term():
    stage = Stage("s", c_low=32, c_high=64, hw_low=(16, 16), hw_high=(8, 8), k=2)
    low, high = torch.randn(1, 32, 16, 16), torch.randn(1, 64, 8, 8)
    g_aats, m_aats = block_cost(FINE(32, 64, k=2, r=2, zero_init=False), low, high)
    g_van, m_van = block_cost(FINE(32, 64, k=1, r=1, zero_init=False), low, high)
    n_low, n_high, c = 16 * 16, 8 * 8, 32
    # vanilla: QK^T and PV over all pixels, 2 FLOPs per multiply-accumulate; AATS: 4x4 and 2x2 pooled tokens
    assert g_van * 1e9 >= 2 * 2 * n_low * n_high * c
    assert g_aats < g_van / 5  # 16 queries x 16 keys instead of 256 x 64; the 1x1 projections dominate what is left
    assert m_van > 2 * (n_low * n_high * (c // 16)) * 4 / 2**20 * 0.99  # the (heads, N_low, N_high) scores, fp32
    assert m_aats < m_van / 5  # at this toy size the full-resolution output and gain dominate what is left
    row = compare_stage(stage, iters=2, warmup=0)
    assert row["aats"]["gflops"] == pytest.approx(g_aats) and row["vanilla"]["gflops"] == pytest.approx(g_van)
    assert row["aats"]["latency_ms"] > 0 and row["vanilla"]["latency_ms"] > 0
    red = reductions(row["aats"], row["vanilla"])
    assert red["gflops"] == pytest.approx(1 - g_aats / g_van) and red["peak_mb"] == pytest.approx(1 - m_aats / m_van)


def test_model_stages_and_table():
    stages = model_stages("yolov8n-fine.yaml", imgsz=128)
    assert [(s.k, s.hw_low, s.hw_high) for s in stages] == [(1, (8, 8), (4, 4)), (2, (16, 16), (8, 8))]
    assert [(s.c_low, s.c_high) for s in stages] == [(128, 256), (64, 128)]
    rows = [compare_stage(s, iters=0) for s in stages]
    text = table(rows)
    assert text.count("| vanilla |") == 2 and text.count("| aats |") == 2
    total = {n: {"gflops": sum(r[n]["gflops"] for r in rows), "peak_mb": max(r[n]["peak_mb"] for r in rows)}
             for n in ("aats", "vanilla")}
    red = reductions(total["aats"], total["vanilla"])
    all_row = next(ln for ln in text.splitlines() if ln.startswith("| **all stages** |"))
    assert f"**-{100 * red['gflops']:.1f}%**" in all_row and f"**-{100 * red['peak_mb']:.1f}%**" in all_row
    assert "| -93.3% | -99.9% | 80 -> 78 FPS vs 80 -> 57 FPS |" in text  # the paper's row, derived from its values
