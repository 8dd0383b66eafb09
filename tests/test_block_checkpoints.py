"""FINE blocks built before the K/V/eq. 10 biases were dropped: pickled whole (as ultralytics checkpoints hold them)
they run unchanged; their state dicts load into a current block by folding those biases into b_O.

``fixtures/fine_pre_bias_change.pt`` was written by the pre-change code (commit 0ef4774): two blocks with every
parameter, biases included, perturbed by N(0, 0.5) so that a mishandled bias shows, their inputs and their outputs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_block import reference_fine

from fine_yolo.nn.fine import FINE

FIXTURE = Path(__file__).parent / "fixtures" / "fine_pre_bias_change.pt"
CASES = ["proj_k1", "noproj_k2"]  # (16 <- 32 channels, k=1) with eq. 10; (16 <- 16, k=2) without
# The recorded outputs came from another machine's float32 kernels: equal up to summation order, not bit for bit
# (on the machine that wrote them, bit for bit). The perturbed weights give logits of order 10, so float32 summation
# order moves outputs by up to ~5e-5; comparisons of two computations are made in float64 instead.
TOL = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture
def old() -> dict:
    """A fresh copy per test (tests change the modules)."""
    return torch.load(FIXTURE, weights_only=False)


def _new_block(m_old: FINE) -> FINE:
    return FINE(m_old.c_low, m_old.c_high, k=m_old.k, r=m_old.r, head_dim=m_old.head_dim).eval()


@pytest.mark.parametrize("case", CASES)
def test_pickled_pre_change_block_runs_unchanged(old, case):
    item = old[case]
    m = item["module"]
    assert type(m) is FINE  # unpickled into the current class ...
    assert m.kv.bias is not None  # ... with its pre-change, biased convolutions
    assert (getattr(m.proj_high, "bias", None) is not None) == (case == "proj_k1")
    with torch.no_grad():
        torch.testing.assert_close(m(item["low"], item["high"]), item["out"], **TOL)
        m64, low, high = copy.deepcopy(m).double(), item["low"].double(), item["high"].double()
        torch.testing.assert_close(m64(low, high), reference_fine(m64, low, high), rtol=0, atol=1e-10)  # biases in
        m.out.bias.zero_()  # the check can fail: the biases are large enough to move every output
        assert not torch.allclose(m(item["low"], item["high"]), item["out"], **TOL)


@pytest.mark.parametrize("case", CASES)
def test_pickled_pre_change_block_exports_with_its_biases(old, case, tmp_path):
    item = old[case]
    path = tmp_path / f"{case}.onnx"
    torch.onnx.export(item["module"], (item["low"], item["high"]), str(path), input_names=["low", "high"],
                      output_names=["out"], opset_version=18, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"low": item["low"].numpy(), "high": item["high"].numpy()})[0]
    np.testing.assert_allclose(out, item["out"].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_pre_change_state_dict_folds_into_a_current_block(old, case):
    item = old[case]
    sd = item["module"].state_dict()
    assert "kv.bias" in sd and ("proj_high.bias" in sd) == (case == "proj_k1")
    m = _new_block(item["module"])
    assert m.kv.bias is None and set(m.state_dict()) < set(sd)  # the current block has no K/V/eq. 10 biases
    m.load_state_dict(sd)  # strict: folded, not reported as unexpected keys
    c = m.c_low
    w_v = sd["kv.weight"].flatten(1)[c:].double()
    offset = sd["kv.bias"][c:].double() + (w_v @ sd["proj_high.bias"].double() if case == "proj_k1" else 0)
    expected_b_o = sd["out.bias"].double() + sd["out.weight"].flatten(1).double() @ offset  # b_O + W_O c
    torch.testing.assert_close(m.out.bias.double(), expected_b_o, rtol=0, atol=1e-6)
    assert (m.out.bias - sd["out.bias"]).abs().max() > 0.1  # the fold moved b_O
    with torch.no_grad():
        torch.testing.assert_close(m(item["low"], item["high"]), item["out"], **TOL)
        low, high = item["low"].double(), item["high"].double()  # exact up to b_O's float32 rounding
        torch.testing.assert_close(m.double()(low, high), item["module"].double()(low, high), rtol=1e-6, atol=1e-6)


def test_fold_works_under_a_parent_prefix(old):
    """Inside a model the block's keys carry a prefix (``model.13.``); the caller's dict is left untouched."""
    m_old = old["proj_k1"]["module"]
    parent_old = torch.nn.Sequential(torch.nn.Identity(), m_old)
    sd = parent_old.state_dict()
    keys = set(sd)
    parent_new = torch.nn.Sequential(torch.nn.Identity(), _new_block(m_old))
    parent_new.load_state_dict(sd)
    assert set(sd) == keys  # torch loads from a copy: the fold does not edit the caller's state dict
    item = old["proj_k1"]
    with torch.no_grad():
        torch.testing.assert_close(parent_new[1](item["low"], item["high"]), item["out"], **TOL)


def test_fold_that_lacks_what_it_needs_is_an_error_naming_the_keys(old):
    sd = old["proj_k1"]["module"].state_dict()
    del sd["out.bias"]
    m = _new_block(old["proj_k1"]["module"])
    with pytest.raises(RuntimeError, match=r"'kv.bias', 'proj_high.bias'.*cannot be folded.*'out.bias' is missing"):
        m.load_state_dict(sd, strict=False)
    sd = old["proj_k1"]["module"].state_dict()
    sd["kv.bias"] = sd["kv.bias"][:8]
    with pytest.raises(RuntimeError, match=r"'kv.bias' has shape \(8,\), expected \(32,\)"):
        m.load_state_dict(sd)


def test_current_state_dict_into_a_pre_change_block_is_torchs_missing_key_error(old):
    m_old = old["proj_k1"]["module"]
    with pytest.raises(RuntimeError, match="Missing key.*kv.bias"):
        m_old.load_state_dict(_new_block(m_old).state_dict())


def test_the_dropped_k_bias_was_dead_and_the_v_bias_was_b_os(old):
    """Why the biases went: in a pre-change block any K bias leaves the output as it is (softmax ignores a per-query
    shift), and its gradient vanishes; a V bias equals b_O raised by W_O b_v."""
    item = old["noproj_k2"]
    m = item["module"]
    c = m.c_low
    with torch.no_grad():
        m.kv.bias[:c] += torch.randn(c) * 10
        torch.testing.assert_close(m(item["low"], item["high"]), item["out"], **TOL)
    m.zero_grad()
    m(item["low"], item["high"]).square().sum().backward()
    assert m.kv.bias.grad[:c].abs().max() < 1e-6 * m.kv.bias.grad[c:].abs().max()  # K's: zero up to rounding
    with torch.no_grad():
        b_v = m.kv.bias[c:].clone()
        m.out.bias += m.out.weight.flatten(1) @ b_v
        m.kv.bias[c:] = 0
        torch.testing.assert_close(m(item["low"], item["high"]), item["out"], **TOL)
