"""The export seam that sets FINE's form (:mod:`fine_yolo.glue.export_form`): ``conv`` while ultralytics records
ONNX or TensorRT, ``tokens`` for every other format, each block's own form back afterwards, other models untouched."""

from __future__ import annotations

from types import SimpleNamespace

import onnx
import pytest
from torch import nn

from fine_yolo.glue.export_form import wrap_exporter_call
from fine_yolo.nn.fine import FINE, form_for


class _Exporter:
    """Stands in for ultralytics' ``Exporter``: ``__call__(model)`` reads ``self.args.format``."""

    def __init__(self, fmt: str, fail: bool = False) -> None:
        self.args, self.fail, self.seen = SimpleNamespace(format=fmt), fail, None

    def __call__(self, model):
        self.seen = [m.form for m in model.modules() if isinstance(m, FINE)]
        if self.fail:
            raise RuntimeError("export failed")
        return "exported"


_Exporter.__call__ = wrap_exporter_call(_Exporter.__call__)


@pytest.mark.parametrize(("fmt", "form"), [("onnx", "conv"), ("engine", "conv"), ("TensorRT", "conv"),
                                           ("trt", "conv"), ("openvino", "tokens"), ("torchscript", "tokens"),
                                           ("coreml", "tokens")])
def test_each_format_records_its_form_and_every_block_gets_its_own_back(fmt, form):
    net = nn.Sequential(FINE(16, 32), nn.Sequential(FINE(16, 16)))
    net[1][0].form = "conv"  # a user's own setting, restored after the export
    exporter = _Exporter(fmt)
    assert exporter(net) == "exported" and exporter.seen == [form, form] and form_for(fmt) == form
    assert [m.form for m in (net[0], net[1][0])] == ["tokens", "conv"]
    failing = _Exporter(fmt, fail=True)
    with pytest.raises(RuntimeError, match="export failed"):
        failing(net)
    assert failing.seen == [form, form] and [m.form for m in (net[0], net[1][0])] == ["tokens", "conv"]


def test_a_model_without_fine_and_a_non_module_go_to_the_original_untouched():
    plain = nn.Conv2d(3, 3, 1)
    before = dict(plain.__dict__)
    exporter = _Exporter("onnx")
    assert exporter(plain) == "exported" and exporter.seen == [] and plain.__dict__ == before
    with pytest.raises(AttributeError):  # the original's own error for a non-module
        _Exporter("onnx")(object())
    assert wrap_exporter_call(_Exporter.__call__) is _Exporter.__call__  # wrapping twice wraps once


def test_hook_wraps_ultralytics_exporter_and_plain_onnx_export_records_the_conv_form(tmp_path, monkeypatch):
    """``YOLO(...).export(format="onnx")`` with nothing but the hook: FINE's nodes are the conv form's (its Q, K/V and
    W_O convolutions, no GEMM), and the model's blocks are back to ``tokens`` afterwards."""
    from ultralytics import YOLO
    from ultralytics.engine.exporter import Exporter

    from fine_yolo._hook import PATCHES

    assert ("ultralytics.engine.exporter", "fine_yolo.glue.export_form") in {row[:2] for row in PATCHES}
    assert "fine_yolo.glue.export_form" in Exporter.__call__.__code__.co_filename.replace("/", ".")
    monkeypatch.chdir(tmp_path)
    model = YOLO("yolov8n-fine.yaml", verbose=False)
    path = model.export(format="onnx", imgsz=64, simplify=False, device="cpu")
    nodes = [n for n in onnx.load(path).graph.node if "fine" in n.name.lower()]
    ops = [n.op_type for n in nodes]
    assert ops.count("Conv") == 6 and "Gemm" not in ops and ops.count("Softmax") == 2  # 2 blocks x (q, kv, out)
    assert {m.form for m in model.model.modules() if isinstance(m, FINE)} == {"tokens"}


def test_fine_yolo_export_sets_the_form_itself_without_the_seam(tmp_path, monkeypatch):
    """``fine-yolo export`` (:func:`export_model`) sets the form explicitly: with ultralytics' own ``__call__`` back in
    place of the seam, its ONNX file still holds the conv form."""
    from ultralytics.engine.exporter import Exporter

    from fine_yolo.export.engine import export_model

    monkeypatch.setattr(Exporter, "__call__", Exporter.__call__.__wrapped__)
    monkeypatch.chdir(tmp_path)
    path = export_model("yolov8n-fine.yaml", "onnx", check=False, verbose=False, imgsz=64, simplify=False)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node if "fine" in n.name.lower()]
    assert ops.count("Conv") == 6 and "Gemm" not in ops


def test_bench_records_the_form_its_pytorch_model_runs():
    from fine_yolo.bench.backends import prepare_torch

    fine = prepare_torch("yolov8n-fine.yaml", imgsz=64, e2e=False)
    assert fine.info["fine_form"] == "tokens" and fine.network() > 0
    assert "fine_form" not in prepare_torch("yolov8n.yaml", imgsz=64, e2e=False).info
