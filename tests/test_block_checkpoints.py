"""What a FINE block stores: its state dict (no K, V or eq. 10 biases, nothing for the gain tap), a pickled block
(as ultralytics checkpoints hold them) that runs unchanged, and why the K/V/eq. 10 biases are not stored."""

from __future__ import annotations

import io

import pytest
import torch
from helpers import random_fine, reference_fine

from fine_yolo.nn.fine import FINE


@pytest.mark.parametrize(("c_high", "k"), [(64, 1), (32, 2)])
def test_state_dict_holds_exactly_the_stored_parameters(c_high, k):
    keys = set(FINE(32, c_high, k).state_dict())
    expected = {"q.weight", "q.bias", "kv.weight", "out.weight", "out.bias"}
    assert keys == expected | ({"proj_high.weight"} if c_high != 32 else set())


def test_pickled_block_round_trips_with_its_form():
    m = random_fine(32, 64, 2).float().eval()
    m.form = "conv"
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    low, high = torch.randn(1, 32, 16, 16), torch.randn(1, 64, 8, 8)
    assert type(loaded) is FINE and loaded.form == "conv" and isinstance(loaded.gain_tap, torch.nn.Identity)
    with torch.no_grad():
        assert torch.equal(loaded(low, high), m(low, high))


def _with_kv_bias(m: FINE, bias: torch.Tensor) -> FINE:
    """``m`` with a K/V bias attached: the block's own forms ignore it, :func:`reference_fine` applies it."""
    m.kv.bias = torch.nn.Parameter(bias)
    return m


def test_a_k_bias_is_dead_and_a_v_bias_is_b_o_raised_by_w_o_b_v():
    """Why the block stores no K/V bias (module doc, "Biases"): in eq. 5-7 written out per head, a K bias leaves the
    output unchanged (softmax ignores a per-query shift) and a V bias equals b_O raised by W_O b_v."""
    m = random_fine(32, 32, 2)
    c = m.c_low
    torch.manual_seed(1)
    low, high = torch.randn(2, c, 16, 16).double(), torch.randn(2, c, 8, 8).double()
    plain = reference_fine(m, low, high)
    torch.testing.assert_close(m(low, high), plain, rtol=0, atol=1e-10)
    b_k = torch.zeros(2 * c, dtype=torch.float64)
    b_k[:c] = torch.randn(c, dtype=torch.float64) * 10
    m_k = _with_kv_bias(random_fine(32, 32, 2), b_k)
    torch.testing.assert_close(reference_fine(m_k, low, high), plain, rtol=0, atol=1e-10)
    b_v = torch.zeros(2 * c, dtype=torch.float64)
    b_v[c:] = torch.randn(c, dtype=torch.float64)
    biased = reference_fine(_with_kv_bias(random_fine(32, 32, 2), b_v), low, high)
    assert (biased - plain).abs().max() > 1e-2  # the V bias moves the output ...
    with torch.no_grad():
        m.out.bias += m.out.weight.flatten(1) @ b_v[c:]
    torch.testing.assert_close(m(low, high), biased, rtol=0, atol=1e-10)  # ... exactly as b_O + W_O b_v does
