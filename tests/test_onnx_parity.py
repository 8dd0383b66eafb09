"""ONNX export of FINE (the block and a whole FINE model through ultralytics) against PyTorch, with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

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
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"low": low.numpy(), "high": high.numpy()})[0]


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
        with torch.no_grad():
            np.testing.assert_allclose(_ort(path, low, high), m(low, high).numpy(), rtol=1e-4, atol=1e-5)
        if dynamic:  # another (divisible) size and batch through the same dynamic graph
            low2, high2 = torch.randn(2, 64, 16, 24), torch.randn(2, 128, 8, 12)
            with torch.no_grad():
                np.testing.assert_allclose(_ort(path, low2, high2), m(low2, high2).numpy(), rtol=1e-4, atol=1e-5)


def test_block_export_at_a_size_rk_does_not_divide_matches_pytorch(tmp_path):
    m = _trained_block(2)
    low, high = torch.randn(1, 64, 18, 13), torch.randn(1, 128, 9, 7)
    path = tmp_path / "fine_odd.onnx"
    _export_block(m, low, high, path, dynamic=False)
    with torch.no_grad():
        ref = m(low, high).numpy()
    out = _ort(path, low, high)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out[..., 16:, :], low.numpy()[..., 16:, :])  # the uncovered border passes through


def test_fine_model_exported_by_ultralytics_matches_pytorch(tmp_path):
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
    x = torch.rand(1, 3, 256, 256)
    net = model.model.float().eval()
    with torch.no_grad():
        ref = net(x)[0].numpy()
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert out.shape == ref.shape == (1, 84, 1344)
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)


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
    with torch.no_grad():
        np.testing.assert_allclose(_ort(path, low, high), m(low, high).numpy(), rtol=1e-4, atol=1e-5)


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
    with torch.no_grad():
        np.testing.assert_allclose(_ort(path, low, high), m(low, high).numpy(), rtol=1e-4, atol=1e-5)


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
        torch.testing.assert_close(ep.module()(low, high), m(low, high), rtol=1e-5, atol=1e-5)


def live_fine_model(imgsz: int, std: float = 0.05):
    """A yolov8n-fine ``YOLO`` whose activations are O(1) and whose FINE blocks visibly modulate.

    At PyTorch's initialisation with BatchNorm's default running statistics, activations shrink by ~3x per layer
    (yolov8n's FINE inputs are ~1e-5 and ~1e-8 at 160 px), so FINE, however its weights are set, changes the output
    by ~1e-11 and any parity check of it passes trivially. Re-estimating every BatchNorm's statistics on one batch
    (what training would do) restores unit-scale activations; W_O ~ N(0, std) then makes FINE move boxes by pixels.
    """
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO("yolov8n-fine.yaml", verbose=False)
    net = model.model.float()
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics outright
    net.train()
    with torch.no_grad():
        net(torch.rand(4, 3, imgsz, imgsz))
    net.eval()
    for m in net.modules():
        if isinstance(m, FINE):
            torch.nn.init.normal_(m.out.weight, std=std)
    return model


def fine_effect(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """How much FINE moves the output: |out - out with every W_O zeroed| (the identity block)."""
    fines = [m for m in net.modules() if isinstance(m, FINE)]
    with torch.no_grad():
        out = net(x)[0]
        weights = [m.out.weight.clone() for m in fines]
        for m in fines:
            m.out.weight.zero_()
        identity = net(x)[0]
        for m, w in zip(fines, weights):
            m.out.weight.copy_(w)
    return (out - identity).abs()


def test_fine_model_with_live_activations_exported_by_ultralytics_matches_pytorch(tmp_path):
    """Whole-model parity where FINE matters: FINE moves boxes by ~35 px at most, the export agrees with PyTorch to
    1e-4 relative (measured: 0.003 px on boxes of up to ~600 px, 2e-7 on class scores)."""
    model = live_fine_model(160)
    ckpt = tmp_path / "live.pt"
    model.save(ckpt)
    from ultralytics import YOLO

    model = YOLO(str(ckpt))
    net = model.model.float().eval()
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    effect = fine_effect(net, x)
    assert effect[:, :4].max() > 1.0 and effect[:, :4].mean() > 0.1  # pixels
    onnx_path = model.export(format="onnx", imgsz=160, simplify=True)
    with torch.no_grad():
        ref = net(x)[0].numpy()
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert out.shape == ref.shape == (1, 84, 525)
    np.testing.assert_allclose(out[:, :4], ref[:, :4], rtol=1e-4, atol=1e-3)  # boxes, pixels
    np.testing.assert_allclose(out[:, 4:], ref[:, 4:], rtol=1e-3, atol=1e-6)  # class scores (sigmoid)
