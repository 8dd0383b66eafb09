"""ONNX export of every new FINE family and task through ultralytics: ONNX Runtime parity where FINE matters, and the
offline TensorRT 10.3 check (yolov8/12 detection: tests/test_trt_check.py and tests/test_onnx_parity.py). YOLOv10 and
YOLO26 export their one-to-many head here (ultralytics 8.4 exports the NMS-free one-to-one head only with
``nms=False``); the end-to-end branch below (raw one-to-one output, then its top-k) is for such an export.

Tolerances are derived per output group (boxes, scores, task extras) from PyTorch's own float32 error against a
float64 run of the same weights (``helpers.assert_parity``): decoded boxes and keypoints carry the strides' x8-x32
amplification and the random neck's conditioning, which a fixed ``1e-4 * max`` did not (it failed on AVX-512 for
yolo26n-pose by 0.2 px of 609, PyTorch's own float32 error there being 0.16 px)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from helpers import (
    FINE_MARGIN,
    assert_parity,
    detection_groups,
    float64_twin,
    in_depth,
    live_model,
    ort_run,
    output_tensors,
    parity_tolerance,
    same_top_k,
    without_fine,
)

from fine_yolo.export.trt_check import check_onnx
from fine_yolo.models import baseline_name, build, is_rtdetr, scales
from fine_yolo.nn import FINEConcat

FINE_MODELS = in_depth()

# yolov8 and yolo12 detection are exported in tests/test_onnx_parity.py and tests/test_trt_check.py.
_COVERED_ELSEWHERE = {"YOLOv8": ("detect",), "YOLO12": ("detect",)}
# One model per family, task and placement (rtdetr-resnet101 has resnet50's neck), at its smallest scale.
# (yolov9m too: its 360-channel P4 map gets head dim 24, the one head dim other than 16 in these models)
EXPORTED = list({(m.family, m.task, m.stages, name == "yolov9m-fine.yaml"): scales(name)[0]
                 for name, m in reversed(FINE_MODELS.items())
                 if m.task not in _COVERED_ELSEWHERE.get(m.family, ())}.values())[::-1]
IMGSZ = 128  # P3..P5 maps 16, 8, 4 hold whole AATS cells; RT-DETR's 300 queries need >= 300 anchors (336 here)
# onnxslim (ultralytics' simplify=True default) costs time with the graph's size: 33 s of rtdetr-x's 39 s export here.
# FINE's slimmed subgraph (its fused-MHA form included) is checked on every YOLO family below; these large graphs
# are checked as exported: parity, the TensorRT op check, FINE's two attention chains and their head dims.
UNSLIMMED = ("rtdetr-l-fine.yaml", "rtdetr-x-fine.yaml", "rtdetr-resnet50-fine.yaml", "yolov9e-fine.yaml")


def test_the_exported_set_covers_every_new_file_family_and_task():
    covered = {(FINE_MODELS[_file(n)].family, FINE_MODELS[_file(n)].task) for n in EXPORTED}
    new = {(m.family, m.task) for m in FINE_MODELS.values() if m.task not in _COVERED_ELSEWHERE.get(m.family, ())}
    assert covered == new and len(EXPORTED) == 21  # v9 and RT-DETR: one per placement (t, m, e; l, x, R50)


def _file(model_name: str) -> str:
    return next(name for name in FINE_MODELS if model_name in scales(name))


@pytest.mark.parametrize("name", EXPORTED)
def test_onnx_export_matches_pytorch_and_passes_the_tensorrt_check(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # ultralytics writes a YAML model's export into the working directory
    model = live_model(name, IMGSZ)
    net = model.model
    twin = float64_twin(net)  # the same weights in float64: the exact values both float32 runs are judged against
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), same_top_k() as top_k:  # float64 (and FINE-less) runs select the rows float32 selected
        ref = [t.numpy() for t in output_tensors(net(x))]
        top_k.replay()
        ref64 = [t.numpy() for t in output_tensors(twin(x.double()))]
        top_k.replay()
        identity = without_fine(net, lambda: output_tensors(net(x))[0].numpy())
    # FINE moves the output far beyond the parity tolerance, so an export that loses FINE fails the parity below
    effect, tol = float(np.abs(ref[0] - identity).max()), parity_tolerance(ref[0], ref64[0])
    assert effect > FINE_MARGIN * tol, (effect, tol)
    path = model.export(format="onnx", imgsz=IMGSZ, simplify=name not in UNSLIMMED, device="cpu")

    report = check_onnx(path)
    errors = {(i.code, i.node) for i in report.errors}
    if errors:  # allowed only where the baseline's own export has them (yolo26-sem's bilinear head), never in FINE
        base = build(baseline_name(name)).export(format="onnx", imgsz=IMGSZ, simplify=name not in UNSLIMMED,
                                                 device="cpu")
        assert errors == {(i.code, i.node) for i in check_onnx(base).errors}, report.summary()
        assert not any("fine" in str(node).lower() for _, node in errors), report.summary()
    assert report.opset is not None and report.opset <= 20
    fine = [a for a in report.attention if "fine" in a.softmax.lower()]
    head_dims = [m.fine.head_dim for m in net.model if isinstance(m, FINEConcat)]
    assert len(head_dims) == len(FINE_MODELS[_file(name)].stages)
    assert sorted(a.head_dim for a in fine) == sorted(head_dims), report.summary()  # one per top-down stage
    if name not in UNSLIMMED:  # unslimmed, SDPA's scale is computed from shapes that inference leaves open here
        assert all(a.q_scaled and a.k_scaled and a.fused_form for a in fine), report.summary()

    head = net.model[-1]
    nc = getattr(head, "nc", 0)
    if getattr(head, "end2end", False):  # NMS-free: the exported output is a top-k of the raw one-to-one output
        raw, raw64 = _raw_one2one(net, x), _raw_one2one(twin, x.double())
        raw_onnx, outs = _run_with_intermediate(path, x, "Transpose", raw.shape)  # postprocess(y.permute(0, 2, 1))
        _assert_head_output(raw_onnx, raw, raw64, nc, "raw one-to-one output")
        top_k_tol = parity_tolerance(raw, raw64)  # the detections are rows of it
    elif FINE_MODELS[_file(name)].task == "semantic":  # the export bakes in upsampling + argmax: a class map
        logits_onnx, outs = _run_with_intermediate(path, x, "Resize", ref[0].shape)  # the logits it upsamples
        assert_parity(logits_onnx, ref[0], ref64[0], "logits")
        head.export, head.format = True, "onnx"
        with torch.no_grad():
            classes = net(x).numpy()
        head.export = False
        assert outs[0].shape == classes.shape == (1, IMGSZ, IMGSZ)
        assert (outs[0] == classes).mean() > 0.999  # the same class per pixel (bar exact logit ties)
        return
    else:
        outs = ort_run(path, x)
        top_k_tol = parity_tolerance(ref[0], ref64[0])  # RT-DETR: its decoder's (B, queries, 4 + nc) output
    if getattr(head, "end2end", False) or is_rtdetr(name):  # (1, max_det, 6 + extra) detections after a top-k
        final = next(i for i, o in enumerate(outs) if o.ndim == 3 and o.shape[1] == head.max_det)
        _assert_same_detections(outs[final][0], ref[0][0], top_k_tol)
        outs, ref, ref64 = outs[:final] + outs[final + 1 :], ref[1:], ref64[1:]
    unused = list(range(len(ref)))
    for out in outs:  # each exported output is one of the PyTorch outputs (heads return more in eager mode)
        j = next((j for j in unused if ref[j].shape == out.shape), None)
        assert j is not None, (out.shape, [r.shape for r in ref])
        unused.remove(j)
        _assert_head_output(out, ref[j], ref64[j], nc, f"output {j} {out.shape}")


def _assert_head_output(out: np.ndarray, ref: np.ndarray, ref64: np.ndarray, nc: int, what: str) -> None:
    """Parity per channel group of a decoded (B, 4 + nc + extra, anchors) head output (boxes and keypoints in pixels,
    sigmoid scores), each against its own float32 floor; any other tensor (segmentation prototypes) as a whole."""
    if out.ndim == 3 and nc and out.shape[1] < out.shape[2]:
        for group, rows in detection_groups(out.shape[1], nc).items():
            assert_parity(out[:, rows], ref[:, rows], ref64[:, rows], f"{what} {group}")
    else:
        assert_parity(out, ref, ref64, what)


def _assert_same_detections(out: np.ndarray, ref: np.ndarray, atol: float) -> None:
    """The same (max_det, 6 + extra) detections up to order, each within ``atol`` (the derived tolerance of the
    tensor the top-k selects from): rows whose scores tie to ~1e-7 may swap places in a top-k, and at its boundary
    a row may give way to one whose score ties the last kept score."""
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
    *outs, inner = ort_run(model.SerializeToString(), x)
    return inner, outs
