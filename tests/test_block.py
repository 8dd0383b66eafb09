"""The FINE block against the paper's equations 4-10, its AATS structure, and its initial state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import random_fine, reference_fine

from fine_yolo.nn import FINE


@pytest.mark.parametrize(
    ("c_low", "c_high", "k", "hw_low", "hw_high"),
    [
        (32, 64, 1, (16, 16), (8, 8)),  # P4<-P5 setting
        (32, 64, 2, (16, 24), (8, 12)),  # P3<-P4 setting, rectangular
        (32, 32, 1, (8, 8), (4, 4)),  # equal channels: no projection (eq. 10 not needed)
        (48, 64, 2, (18, 13), (9, 7)),  # sizes that r*k=4 (and k=2) do not divide
    ],
)
def test_matches_per_head_reference(c_low, c_high, k, hw_low, hw_high):
    m = random_fine(c_low, c_high, k)
    torch.manual_seed(1)
    low, high = torch.randn(2, c_low, *hw_low).double(), torch.randn(2, c_high, *hw_high).double()
    out = m(low, high)
    assert out.shape == low.shape
    # float64 throughout: both sides round at ~1e-16 per step over sums of <= 64 O(1) terms (~1e-14); 1e-10 leaves
    # margin for any summation order, and any change to the equations moves O(1e-2..1) outputs
    torch.testing.assert_close(out, reference_fine(m, low, high), rtol=0, atol=1e-10)
    assert m.heads == c_low // 16
    assert isinstance(m.proj_high, torch.nn.Conv2d) == (c_low != c_high)


def test_list_call_form_equals_two_argument_form():
    m = random_fine()
    low, high = torch.randn(1, 32, 8, 8).double(), torch.randn(1, 64, 4, 4).double()
    assert torch.equal(m([low, high]), m(low, high))


def test_non_divisible_border_passes_through_unchanged():
    m = random_fine(k=2)
    low, high = torch.randn(1, 32, 10, 9).double(), torch.randn(1, 64, 5, 5).double()
    out = m(low, high)
    # rk=4: rows 8,9 and column 8 are in no token, so their modulation is 0 and they pass through
    assert torch.equal(out[..., 8:, :], low[..., 8:, :])
    assert torch.equal(out[..., :, 8:], low[..., :, 8:])
    assert not torch.allclose(out[..., :8, :8], low[..., :8, :8])


@pytest.mark.parametrize("k", [1, 2])
def test_aats_low_cell_locality(k):
    """A change inside one (r*k)x(r*k) cell of low changes the output only inside that cell."""
    m = random_fine(k=k)
    rk = 2 * k
    low, high = torch.randn(1, 32, 4 * rk, 4 * rk).double(), torch.randn(1, 64, 2 * rk, 2 * rk).double()
    changed = low.clone()
    cell = (slice(rk, 2 * rk), slice(2 * rk, 3 * rk))  # cell (1, 2)
    changed[..., cell[0], cell[1]] += torch.randn(1, 32, rk, rk).double()
    diff = (m(changed, high) - m(low, high)).abs().sum(1)[0]
    inside = torch.zeros_like(diff, dtype=torch.bool)
    inside[cell] = True
    assert diff[inside].min() > 0
    assert diff[~inside].max() == 0


@pytest.mark.parametrize("k", [1, 2])
def test_aats_high_cell_zero_mean_change_is_invisible_but_any_change_reaches_every_cell(k):
    m = random_fine(k=k)
    rk = 2 * k
    low, high = torch.randn(1, 32, 4 * rk, 4 * rk).double(), torch.randn(1, 64, 2 * rk, 2 * rk).double()
    base = m(low, high)
    # zero-mean change inside one k x k cell of high: its pooled token is unchanged
    zero_mean = torch.randn(1, 64, k, k).double()
    zero_mean -= zero_mean.mean(dim=(2, 3), keepdim=True)
    if k == 1:
        zero_mean.zero_()  # a 1x1 cell has no non-trivial zero-mean change
    changed = high.clone()
    changed[..., k : 2 * k, 0:k] += zero_mean
    torch.testing.assert_close(m(low, changed), base, rtol=0, atol=1e-12)
    # a change anywhere in high (one pixel) reaches every (rk x rk) cell of the output
    changed = high.clone()
    changed[0, :, -1, -1] += 1.0
    diff = (m(low, changed) - base).abs().sum(1)[0]
    per_cell = diff.unfold(0, rk, rk).unfold(1, rk, rk).sum((-1, -2))
    assert per_cell.shape == (4, 4)
    assert per_cell.min() > 0


def test_identity_at_init_and_every_parameter_learns():
    torch.manual_seed(0)
    m = FINE(32, 64, k=2)
    low, high = torch.randn(2, 32, 16, 16), torch.randn(2, 64, 8, 8)
    assert torch.equal(m(low, high), low)  # W_O = 0 -> M = 0 -> exactly low
    assert torch.count_nonzero(m.out.weight) == 0 and torch.count_nonzero(m.out.bias) == 0
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    target = torch.randn_like(low)
    for _ in range(2):  # after one optimiser step W_O is non-zero, so the next gradient reaches every parameter
        opt.zero_grad()
        F.mse_loss(m(low, high), target).backward()
        opt.step()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not torch.equal(m(low, high), low)


def test_standard_init_option_is_not_identity():
    torch.manual_seed(0)
    m = FINE(32, 64, zero_init=False)
    low, high = torch.randn(1, 32, 8, 8), torch.randn(1, 64, 4, 4)
    assert m.out.weight.abs().sum() > 0
    assert not torch.allclose(m(low, high), low)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"c_low": 40, "c_high": 64, "head_dim": 16}, "not divisible by head_dim"),
        ({"c_low": 8, "c_high": 64}, "neither 16 nor a larger multiple of 8 divides it; give head_dim"),
        ({"c_low": 32, "c_high": 64, "k": 0}, "k must be a positive integer"),
        ({"c_low": 32, "c_high": 64, "r": 1.5}, "r must be a positive integer"),
        ({"c_low": 32, "c_high": 64, "head_dim": True}, "head_dim must be a positive integer"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FINE(**kwargs)


def test_too_small_map_raises_clearly():
    m = FINE(32, 64, k=2)
    with pytest.raises(ValueError, match="at least one token"):
        m(torch.randn(1, 32, 3, 3), torch.randn(1, 64, 2, 2))
