"""FINE's eager kernels chosen by device, and the block under CPU bfloat16 autocast.

No GPU is needed: the non-CPU (standard-kernel) path is forced on CPU through ``fine._TUNED_DEVICES``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_block import _random_fine, reference_fine

import fine_yolo.nn.fine as fine
from fine_yolo.nn.fine import FINE


@pytest.fixture
def standard_kernels(monkeypatch):
    """Run the block as on a non-CPU device: PyTorch's avg_pool2d and interpolate + multiply."""
    monkeypatch.setattr(fine, "_TUNED_DEVICES", frozenset())


def _count_calls(monkeypatch, name: str) -> list[int]:
    """Count calls of ``torch.nn.functional.<name>`` (the module object fine.py calls through)."""
    calls = [0]
    original = getattr(F, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(F, name, counted)
    return calls


@pytest.mark.parametrize(
    ("c_low", "c_high", "k", "hw_low", "hw_high"),
    [(32, 64, 1, (16, 16), (8, 8)), (32, 64, 2, (16, 24), (8, 12)), (32, 32, 2, (8, 8), (4, 4)),
     (48, 64, 2, (18, 13), (9, 7))],  # the last: sizes r*k does not divide (the tuned multiply falls back there too)
)
def test_standard_kernels_agree_with_cpu_tuned_kernels(monkeypatch, c_low, c_high, k, hw_low, hw_high):
    m = _random_fine(c_low, c_high, k)
    torch.manual_seed(1)
    low, high = torch.randn(2, c_low, *hw_low).double(), torch.randn(2, c_high, *hw_high).double()
    tuned = m(low, high)
    monkeypatch.setattr(fine, "_TUNED_DEVICES", frozenset())
    standard = m(low, high)
    torch.testing.assert_close(standard, tuned, rtol=0, atol=1e-12)  # float64: only summation order differs
    torch.testing.assert_close(standard, reference_fine(m, low, high), rtol=0, atol=1e-10)


def test_the_seam_selects_the_kernels(monkeypatch):
    """CPU: no avg_pool2d/interpolate call (strided sums, broadcast multiply); standard: both, once per use."""
    m = _random_fine(32, 64, 2)
    low, high = torch.randn(1, 32, 16, 16).double(), torch.randn(1, 64, 8, 8).double()
    pools, ups = _count_calls(monkeypatch, "avg_pool2d"), _count_calls(monkeypatch, "interpolate")
    m(low, high)
    assert (pools[0], ups[0]) == (0, 0)
    monkeypatch.setattr(fine, "_TUNED_DEVICES", frozenset())
    m(low, high)
    assert (pools[0], ups[0]) == (2, 1)  # low by r*k and high by k; eq. 8 once


def test_tuned_kernels_are_chosen_by_the_tensor_device():
    assert fine._tuned(torch.zeros(1))
    assert not fine._tuned(torch.zeros(1, device="meta"))  # any non-CPU device takes the standard path


def test_standard_kernels_run_shapes_on_the_meta_device():
    """A non-CPU device end to end (meta: shapes only), through the standard kernels chosen by device."""
    with torch.device("meta"):
        m = FINE(32, 64, k=2)
        out = m(torch.empty(2, 32, 18, 13), torch.empty(2, 64, 9, 7))
    assert out.shape == (2, 32, 18, 13) and out.device.type == "meta"


# --- autocast ---------------------------------------------------------------------------------------------------------
# Tolerance under CPU bfloat16 autocast. The GEMMs and SDPA run in bfloat16 (8 significant bits) and the gain
# 1 + M^ (the residual folded into W_O's bias) comes out as a bfloat16 number near 1, where bfloat16's spacing is
# 2^-7 (on [1, 2)): rounding it costs up to 2^-8 of |low|, and the bfloat16 error of M itself (inputs, weights,
# softmax rounded to 8 bits) about as much again. We allow four such half-spacings, |out - out_fp32| <= 2^-6 |low|
# per element (measured: 0.49 of that), plus 2^-8 |out| where the output itself is bfloat16. The mean error must stay
# below 10% of the mean modulation |low * M| (measured 3-4%): a block that dropped M would score 100%.
_BF16_GAIN_TOL = 2.0**-6
_BF16_OUT_TOL = 2.0**-8


def _check_bf16(out: torch.Tensor, ref: torch.Tensor, low: torch.Tensor) -> None:
    err = (out.float() - ref).abs()
    bound = low.abs() * _BF16_GAIN_TOL + (ref.abs() * _BF16_OUT_TOL if out.dtype == torch.bfloat16 else 0)
    assert (err <= bound).all(), f"max error / bound = {(err / bound).max().item():.3f}"
    assert err.mean() < 0.1 * (ref - low).abs().mean()


@pytest.mark.parametrize("kernels", ["tuned", "standard"])
@pytest.mark.parametrize(("c_low", "c_high", "k"), [(64, 128, 1), (64, 128, 2), (64, 64, 1)])
def test_bfloat16_autocast_matches_float32_within_bfloat16_precision(request, kernels, c_low, c_high, k):
    if kernels == "standard":
        request.getfixturevalue("standard_kernels")
    torch.manual_seed(0)
    m = FINE(c_low, c_high, k=k, zero_init=False).eval()
    low, high = torch.randn(2, c_low, 32, 32), torch.randn(2, c_high, 16, 16)
    with torch.no_grad():
        ref = m(low, high)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(low, high)  # float32 maps in (the block's own arithmetic in bfloat16)
            out_bf16 = m(low.bfloat16(), high.bfloat16())  # bfloat16 maps in, as from autocast convolutions
        ref_bf16 = m(low.bfloat16().float(), high.bfloat16().float())  # float32 on the same rounded inputs
    assert out.dtype == torch.float32 and out_bf16.dtype == torch.bfloat16
    _check_bf16(out, ref, low)
    _check_bf16(out_bf16, ref_bf16, low.bfloat16().float())


def test_bfloat16_autocast_backward_reaches_every_parameter():
    torch.manual_seed(0)
    m = FINE(32, 64, k=2, zero_init=False)
    low, high = torch.randn(2, 32, 16, 16), torch.randn(2, 64, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m(low, high).float().square().mean()
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
