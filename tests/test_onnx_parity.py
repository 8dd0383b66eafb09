"""ONNX export of FINE (the block and a whole FINE model through ultralytics) against PyTorch, with ONNX Runtime.

Every tolerance is derived from PyTorch's own float32 error against a float64 run of the same weights
(``helpers.assert_parity``, per output group: boxes in pixels, sigmoid scores), and each test asserts that FINE moves
the checked output by far more than that tolerance, so an export that loses or changes FINE fails."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from helpers import (
    FINE_MARGIN,
    assert_block_parity,
    assert_parity,
    detection_groups,
    fine_effect,
    float64_twin,
    live_model,
    ort_run,
)

from fine_yolo.nn import FINE
from fine_yolo.nn.fine import block_form


def _export_block(m: FINE, low, high, path, dynamic: bool) -> None:
    """The block in its ONNX form (``form="conv"``, what ultralytics' ONNX export records)."""
    axes = {"low": {0: "b", 2: "h", 3: "w"}, "high": {0: "b", 2: "hh", 3: "ww"}, "out": {0: "b", 2: "h", 3: "w"}}
    with block_form(m, "conv"):
        torch.onnx.export(
            m, (low, high), str(path), input_names=["low", "high"], output_names=["out"], opset_version=18,
            dynamo=False, dynamic_axes=axes if dynamic else None,
        )


def _ort(path, low, high) -> np.ndarray:
    return ort_run(path, low, high)[0]


def _trained_block(k: int) -> FINE:
    torch.manual_seed(0)
    return FINE(64, 128, k=k, zero_init=False).eval()


@pytest.mark.parametrize("k", [1, 2])
def test_block_static_and_dynamic_export_match_pytorch(tmp_path, k):
    m = _trained_block(k)
    low, high = torch.randn(1, 64, 32, 40), torch.randn(1, 128, 16, 20)
    for dynamic in (False, True):
        path = tmp_path / f"fine_k{k}_{dynamic}.onnx"
        _export_block(m, low, high, path, dynamic)
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert not ops & {"Attention", "Einsum", "Loop", "If", "SequenceConstruct", "SplitToSequence"}
        assert_block_parity(_ort(path, low, high), m, low, high)
        if dynamic:  # another (divisible) size and batch through the same dynamic graph
            low2, high2 = torch.randn(2, 64, 16, 24), torch.randn(2, 128, 8, 12)
            assert_block_parity(_ort(path, low2, high2), m, low2, high2)


def test_block_export_at_a_size_rk_does_not_divide_matches_pytorch(tmp_path):
    m = _trained_block(2)
    low, high = torch.randn(1, 64, 18, 13), torch.randn(1, 128, 9, 7)
    path = tmp_path / "fine_odd.onnx"
    _export_block(m, low, high, path, dynamic=False)
    out = _ort(path, low, high)
    assert_block_parity(out, m, low, high)
    np.testing.assert_array_equal(out[..., 16:, :], low.numpy()[..., 16:, :])  # the uncovered border passes through


def test_fine_model_exported_by_ultralytics_matches_pytorch(tmp_path):
    """A FINE checkpoint saved, reloaded and exported by ultralytics at 256 px runs like PyTorch. At PyTorch's
    initialisation FINE barely moves this output (see ``helpers.live_model``): the live test below checks FINE."""
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO("yolov8n-fine.yaml", verbose=False)
    for m in model.model.modules():  # a non-identity FINE, as after training
        if isinstance(m, FINE):
            torch.nn.init.normal_(m.out.weight, std=0.05)
    ckpt = tmp_path / "yolov8n-fine.pt"
    model.save(ckpt)
    model = YOLO(str(ckpt))
    onnx_path = model.export(format="onnx", imgsz=256, simplify=True)
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    net = model.model.float().eval()
    with torch.no_grad():
        ref, ref64 = net(x)[0].numpy(), float64_twin(net)(x.double())[0].numpy()
    out = ort_run(onnx_path, x)[0]
    assert out.shape == ref.shape == (1, 84, 1344)
    for group, rows in detection_groups(84, 80).items():
        assert_parity(out[:, rows], ref[:, rows], ref64[:, rows], group)


@pytest.mark.parametrize("dynamic", [False, True])
def test_block_without_projection_export_matches_pytorch(tmp_path, dynamic):
    """c_low == c_high (yolo12's second stage, v8 l/x): no eq. 10 conv, K/V straight from the pooled high map."""
    torch.manual_seed(0)
    m = FINE(64, 64, k=2, zero_init=False).eval()
    assert isinstance(m.proj_high, torch.nn.Identity)
    low, high = torch.randn(1, 64, 32, 40), torch.randn(1, 64, 16, 20)
    path = tmp_path / f"fine_noproj_{dynamic}.onnx"
    _export_block(m, low, high, path, dynamic)
    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    assert len(convs) == 3  # q, kv, out: nothing for eq. 10
    assert_block_parity(_ort(path, low, high), m, low, high)


# Ops that only FINE's "tokens" form produces when an exporter records it (its GEMMs).
_EAGER_ONLY_ONNX = {"Gemm", "Expand", "Gather", "Einsum"}


@pytest.mark.parametrize(("c_high", "k"), [(128, 1), (128, 2), (64, 2)])
def test_dynamo_onnx_export_records_the_conv_form_and_matches_pytorch(tmp_path, c_high, k):
    """``torch.onnx.export(dynamo=True)`` (torch's default from 2.9) records the form set on the block."""
    pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript (pip install onnxscript)")
    torch.manual_seed(0)
    m = FINE(64, c_high, k=k, zero_init=False).eval()
    low, high = torch.randn(1, 64, 32, 40), torch.randn(1, c_high, 16, 20)
    path = tmp_path / "fine_dynamo.onnx"
    with block_form(m, "conv"):
        torch.onnx.export(m, (low, high), str(path), input_names=["low", "high"], output_names=["out"],
                          opset_version=18, dynamo=True, verbose=False)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("AveragePool") == (2 if k > 1 else 1) and "Resize" in ops and ops.count("Conv") == 3
    assert not set(ops) & (_EAGER_ONLY_ONNX | {"Attention", "Loop", "If"})
    assert_block_parity(_ort(path, low, high), m, low, high)


def test_torch_export_records_the_token_major_form_and_runs_like_eager():
    """``torch.export`` (like TorchScript, read by OpenVINO's frontend) records the default ``"tokens"`` form: the
    projections and W_O as linear layers, and the plain pooling / upsampling kernels."""
    torch.manual_seed(0)
    m = FINE(64, 128, k=2, zero_init=False).eval()
    low, high = torch.randn(1, 64, 32, 40), torch.randn(1, 128, 16, 20)
    ep = torch.export.export(m, (low, high))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count("aten.linear.default") == 4  # eq. 10, Q, K/V, W_O
    assert {"aten.avg_pool2d.default", "aten.upsample_nearest2d.vec"} <= set(targets)
    assert not set(targets) & {"aten.conv2d.default", "aten.baddbmm.default", "aten.repeat_interleave.self_int"}
    with torch.no_grad():
        assert_block_parity(ep.module()(low, high), m, low, high)


def test_fine_model_with_live_activations_exported_by_ultralytics_matches_pytorch(tmp_path):
    """Whole-model parity where FINE matters: FINE moves boxes by ~35 px at most, far beyond the derived tolerance
    (PyTorch's own float32 error on boxes of up to ~600 px is ~1e-3 px)."""
    model = live_model("yolov8n-fine.yaml", 160, head=True)
    ckpt = tmp_path / "live.pt"
    model.save(ckpt)
    from ultralytics import YOLO

    model = YOLO(str(ckpt))
    net = model.model.float().eval()
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    effect = fine_effect(net, x).numpy()
    onnx_path = model.export(format="onnx", imgsz=160, simplify=True)
    with torch.no_grad():
        ref, ref64 = net(x)[0].numpy(), float64_twin(net)(x.double())[0].numpy()
    out = ort_run(onnx_path, x)[0]
    assert out.shape == ref.shape == (1, 84, 525)
    assert effect[:, :4].max() > 1.0 and effect[:, :4].mean() > 0.1  # pixels
    for group, rows in detection_groups(84, 80).items():  # boxes (pixels), class scores (sigmoid)
        tol = assert_parity(out[:, rows], ref[:, rows], ref64[:, rows], group)
        assert effect[:, rows].max() > FINE_MARGIN * tol, (group, effect[:, rows].max(), tol)
