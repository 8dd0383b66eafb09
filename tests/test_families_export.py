"""ONNX export of every new FINE family and task through ultralytics: ONNX Runtime parity where FINE matters (for the
NMS-free end-to-end heads of YOLOv10/YOLO26, on the raw one-to-one head output they rank), and the offline TensorRT
10.3 check (yolov8/12 detection: tests/test_trt_check.py and tests/test_onnx_parity.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import output_tensors

from fine_yolo.export.trt_check import check_onnx
from fine_yolo.models import FINE_MODELS, baseline_name, build, is_rtdetr, scales
from fine_yolo.nn import FINE

# v10 detection is exported there too, but its NMS-free head's raw outputs are compared only here.
_COVERED_ELSEWHERE = {"YOLOv8": ("detect",), "YOLO12": ("detect",)}
# One model per family, task and placement (rtdetr-resnet101 has resnet50's neck), at its smallest scale.
EXPORTED = list({(m.family, m.task, m.stages): scales(name)[0] for name, m in reversed(FINE_MODELS.items())
                 if m.task not in _COVERED_ELSEWHERE.get(m.family, ())}.values())[::-1]
IMGSZ = 128  # P3..P5 maps 16, 8, 4 hold whole AATS cells; RT-DETR's 300 queries need >= 300 anchors (336 here)


def live(name: str):
    """``name`` built with O(1) activations and FINE blocks that visibly modulate (see test_onnx_parity's
    ``live_fine_model``): BatchNorm statistics re-estimated on one batch through every layer but the head, then
    W_O ~ N(0, 0.05). Without this, activations at PyTorch's initialisation shrink ~3x per layer and any parity check
    of FINE passes trivially."""
    torch.manual_seed(0)
    model = build(name)
    net = model.model.float()
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics
    net.train()
    y, x = [], torch.rand(4, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        for m in net.model[:-1]:  # the head's own training path would need targets (RT-DETR's denoising)
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x)
    net.eval()
    for m in net.modules():
        if isinstance(m, FINE):
            torch.nn.init.normal_(m.out.weight, std=0.05)
    return model


_tensors = output_tensors


def _fine_effect(net, x) -> float:
    """Largest change of the first output that FINE makes (against the same net with every W_O zeroed)."""
    fines = [m for m in net.modules() if isinstance(m, FINE)]
    with torch.no_grad():
        out = _tensors(net(x))[0]
        saved = [m.out.weight.clone() for m in fines]
        for m in fines:
            m.out.weight.zero_()
        identity = _tensors(net(x))[0]
        for m, w in zip(fines, saved):
            m.out.weight.copy_(w)
    return float((out - identity).abs().max())


def test_the_exported_set_covers_every_new_file_family_and_task():
    covered = {(FINE_MODELS[_file(n)].family, FINE_MODELS[_file(n)].task) for n in EXPORTED}
    new = {(m.family, m.task) for m in FINE_MODELS.values() if m.task not in _COVERED_ELSEWHERE.get(m.family, ())}
    assert covered == new and len(EXPORTED) == 21  # v9 and RT-DETR: one per placement (t, m, e; l, x, R50)


def _file(model_name: str) -> str:
    return next(name for name in FINE_MODELS if model_name in scales(name))


@pytest.mark.parametrize("name", EXPORTED)
def test_onnx_export_matches_pytorch_and_passes_the_tensorrt_check(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # ultralytics writes a YAML model's export into the working directory
    model = live(name)
    net = model.model
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    assert _fine_effect(net, x) > 1e-2  # FINE moves the outputs, so parity below tests FINE too
    with torch.no_grad():
        ref = [t.numpy() for t in _tensors(net(x))]
    path = model.export(format="onnx", imgsz=IMGSZ, simplify=True, device="cpu")

    report = check_onnx(path)
    errors = {(i.code, i.node) for i in report.errors}
    if errors:  # allowed only where the baseline's own export has them (yolo26-sem's bilinear head), never in FINE
        base = build(baseline_name(name)).export(format="onnx", imgsz=IMGSZ, simplify=True, device="cpu")
        assert errors == {(i.code, i.node) for i in check_onnx(base).errors}, report.summary()
        assert not any("fine" in str(node).lower() for _, node in errors), report.summary()
    assert report.opset is not None and report.opset <= 20
    fine = [a for a in report.attention if "fine" in a.softmax.lower()]
    head_dims = [s.head_dim for s in FINE_MODELS[_file(name)].stages]
    assert sorted(a.head_dim for a in fine) == sorted(head_dims), report.summary()  # one per top-down stage
    assert all(a.q_scaled and a.k_scaled and a.fused_form for a in fine), report.summary()

    head = net.model[-1]
    if getattr(head, "end2end", False):  # NMS-free: the exported output is a top-k of the raw one-to-one output
        raw = _raw_one2one(net, x)
        raw_onnx, outs = _run_with_intermediate(path, x, "Transpose", raw.shape)  # postprocess(y.permute(0, 2, 1))
        np.testing.assert_allclose(raw_onnx, raw, rtol=0, atol=1e-4 * max(1.0, float(np.abs(raw).max())))
    elif FINE_MODELS[_file(name)].task == "semantic":  # the export bakes in upsampling + argmax: a class map
        logits_onnx, outs = _run_with_intermediate(path, x, "Resize", ref[0].shape)  # the logits it upsamples
        np.testing.assert_allclose(logits_onnx, ref[0], rtol=0, atol=1e-4 * max(1.0, float(np.abs(ref[0]).max())))
        head.export, head.format = True, "onnx"
        with torch.no_grad():
            classes = net(x).numpy()
        head.export = False
        assert outs[0].shape == classes.shape == (1, IMGSZ, IMGSZ)
        assert (outs[0] == classes).mean() > 0.999  # the same class per pixel (bar exact logit ties)
        return
    else:
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    if getattr(head, "end2end", False) or is_rtdetr(name):  # (1, max_det, 6 + extra) detections after a top-k
        final = next(i for i, o in enumerate(outs) if o.ndim == 3 and o.shape[1] == head.max_det)
        _assert_same_detections(outs[final][0], ref[0][0])
        outs, ref = outs[:final] + outs[final + 1 :], ref[1:]
    unused = list(ref)
    for out in outs:  # each exported output is one of the PyTorch outputs (heads return more in eager mode)
        match = next((r for r in unused if r.shape == out.shape), None)
        assert match is not None, (out.shape, [r.shape for r in ref])
        unused.remove(match)
        scale = max(1.0, float(np.abs(match).max()))
        np.testing.assert_allclose(out, match, rtol=0, atol=1e-4 * scale)  # boxes in pixels, scores in [0, 1]


def _assert_same_detections(out: np.ndarray, ref: np.ndarray) -> None:
    """The same (max_det, 6 + extra) detections up to order: rows whose scores tie to ~1e-7 may swap places in a
    top-k, and at its boundary a row may give way to one whose score ties the last kept score."""
    atol = 1e-4 * max(1.0, float(np.abs(ref).max()))
    used, unmatched = np.zeros(len(ref), dtype=bool), []
    for row in out:
        d = np.abs(ref - row).max(axis=1)
        d[used] = np.inf
        j = int(d.argmin())
        if d[j] <= atol:
            used[j] = True
        else:
            unmatched.append(row)
    assert len(unmatched) <= 2, f"{len(unmatched)} of {len(out)} exported detections have no PyTorch twin"
    assert all(abs(row[4] - ref[:, 4].min()) <= 1e-5 for row in unmatched)  # boundary ties only


def _raw_one2one(net, x: torch.Tensor) -> np.ndarray:
    """PyTorch's raw one-to-one head output (B, 4 + nc + extra, anchors): what an end-to-end head's top-k ranks."""
    with torch.no_grad():
        out = net(x)
        preds = next(d for d in _dicts(out) if "one2one" in d)
        return net.model[-1]._inference(preds["one2one"]).numpy()


def _dicts(out):
    if isinstance(out, dict):
        yield out
    elif isinstance(out, (list, tuple)):
        for v in out:
            yield from _dicts(v)


def _run_with_intermediate(path: str, x: torch.Tensor, op_type: str, shape) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run the exported graph with the input of its one ``op_type`` node that reads a tensor of ``shape`` (the
    end-to-end head's top-k input, the semantic head's logits) added as an output; return (that tensor, the graph's
    own outputs)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    infos = {vi.name: vi for vi in model.graph.value_info}
    dims = {name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for name, vi in infos.items()}
    found = [n.input[0] for n in model.graph.node if n.op_type == op_type and dims.get(n.input[0]) == list(shape)]
    assert len(found) == 1, found
    model.graph.output.append(infos[found[0]])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    *outs, inner = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    return inner, outs
