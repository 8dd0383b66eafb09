"""FINE's two forms of eq. 5-7 (``form="tokens"``, ``"conv"``), the switch that sets them, the gain tap, and the
block under CPU bfloat16 autocast in either form."""

from __future__ import annotations

import pytest
import torch
from helpers import random_fine, reference_fine

from fine_yolo.nn.fine import FINE, FORMS, block_form


@pytest.mark.parametrize(
    ("c_low", "c_high", "k", "kw", "hw_low", "hw_high"),
    [(32, 64, 1, {}, (16, 16), (8, 8)), (32, 64, 2, {}, (16, 24), (8, 12)), (32, 32, 2, {}, (8, 8), (4, 4)),
     (48, 64, 2, {}, (18, 13), (9, 7)),  # sizes r*k does not divide
     (32, 64, 2, {"pool": "max"}, (16, 16), (8, 8)), (32, 64, 1, {"attention": "vanilla"}, (8, 12), (4, 6))],
)
def test_both_forms_compute_the_reference(c_low, c_high, k, kw, hw_low, hw_high):
    m = random_fine(c_low, c_high, k, **kw)
    torch.manual_seed(1)
    low, high = torch.randn(2, c_low, *hw_low).double(), torch.randn(2, c_high, *hw_high).double()
    outs = {}
    for form in FORMS:
        m.form = form
        outs[form] = m(low, high)
    torch.testing.assert_close(outs["conv"], outs["tokens"], rtol=0, atol=1e-12)  # float64: summation order only
    if not kw:
        torch.testing.assert_close(outs["tokens"], reference_fine(m, low, high), rtol=0, atol=1e-10)
    assert (outs["tokens"] - low).abs().max() > 1e-3  # the block modulates: agreement is not two identities


def _ops(m: FINE, low: torch.Tensor, high: torch.Tensor) -> set[str]:
    with torch.profiler.profile() as prof:
        m(low, high)
    return {e.key for e in prof.key_averages()}


def test_the_form_picks_the_kernels_and_defaults_to_tokens():
    m = random_fine(32, 64, 2)
    low, high = torch.randn(1, 32, 16, 16).double(), torch.randn(1, 64, 8, 8).double()
    assert m.form == "tokens" and FINE(16, 16).form == "tokens"
    tokens = _ops(m, low, high)
    assert "aten::linear" in tokens and "aten::conv2d" not in tokens
    m.form = "conv"
    conv = _ops(m, low, high)
    assert "aten::conv2d" in conv and "aten::linear" not in conv
    assert "form=conv" in repr(m) and "form" not in repr(FINE(16, 16))


def test_block_form_sets_every_block_and_restores_each_ones_own():
    net = torch.nn.Sequential(FINE(16, 32), torch.nn.Conv2d(16, 16, 1), torch.nn.Sequential(FINE(16, 16)))
    a, b = net[0], net[2][0]
    b.form = "conv"
    with block_form(net, "conv") as blocks:
        assert blocks == [a, b] and (a.form, b.form) == ("conv", "conv")
    assert (a.form, b.form) == ("tokens", "conv")
    with pytest.raises(RuntimeError, match="boom"), block_form(net, "tokens"):
        assert (a.form, b.form) == ("tokens", "tokens")
        raise RuntimeError("boom")
    assert (a.form, b.form) == ("tokens", "conv")  # restored on the way out of an exception too
    with block_form(torch.nn.Conv2d(3, 3, 1), "conv") as blocks:
        assert blocks == []


def test_a_bad_form_is_one_sentence_naming_it():
    with pytest.raises(ValueError, match=r"FINE form='onnx' is not one of tokens, conv"), \
            block_form(FINE(16, 16), "onnx"):
        pass
    m = FINE(16, 16)
    m.form = "graph"
    with pytest.raises(ValueError, match=r"FINE form='graph' is not one of tokens, conv"):
        m(torch.randn(1, 16, 8, 8), torch.randn(1, 16, 4, 4))


@pytest.mark.parametrize(("k", "hw_low"), [(1, (8, 12)), (2, (18, 13))])
def test_gain_tap_hook_sees_one_plus_m_hat_on_the_token_grid(k, hw_low):
    m = random_fine(32, 64, k)
    low = torch.randn(1, 32, *hw_low).double()
    high = torch.randn(1, 64, hw_low[0] // 2, hw_low[1] // 2).double()
    seen = []
    handle = m.gain_tap.register_forward_hook(lambda mod, args, out: seen.append(out))
    out = m(low, high)
    handle.remove()
    rk = 2 * k
    (gain,) = seen
    assert gain.shape == (1, 32, hw_low[0] // rk, hw_low[1] // rk)
    torch.testing.assert_close(gain, m._gain(low, high), rtol=0, atol=0)
    h, w = gain.shape[-2] * rk, gain.shape[-1] * rk  # eq. 8-9 by hand from the tapped gain
    up = gain.repeat_interleave(rk, -2).repeat_interleave(rk, -1)
    torch.testing.assert_close(out[..., :h, :w], low[..., :h, :w] * up, rtol=0, atol=1e-12)
    assert torch.equal(FINE(32, 64, k).double()._gain(low, high), torch.ones_like(gain))  # identity start: 1 + 0
    assert not m.gain_tap._forward_hooks and not list(m.gain_tap.parameters())


def test_runs_shapes_on_the_meta_device():
    """A non-CPU device end to end (meta: shapes only), in both forms."""
    with torch.device("meta"):
        m = FINE(32, 64, k=2)
        for form in FORMS:
            m.form = form
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


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("c_low", "c_high", "k"), [(64, 128, 1), (64, 128, 2), (64, 64, 1)])
def test_bfloat16_autocast_matches_float32_within_bfloat16_precision(form, c_low, c_high, k):
    torch.manual_seed(0)
    m = FINE(c_low, c_high, k=k, zero_init=False).eval()
    m.form = form
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
