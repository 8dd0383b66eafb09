"""`fine-yolo export`: the engine header, the clear no-GPU answer, ONNX exports (static/dynamic, FP32/FP16) and, on a
GPU with TensorRT, a real FP16 engine run by the runtime."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import onnx
import pytest
from conftest import offline_env
from onnx import TensorProto, helper

from fine_yolo.export.engine import export_model
from fine_yolo.export.preflight import EngineUnavailableError, engine_preflight
from fine_yolo.export.trt_check import check_onnx
from fine_yolo.export.trt_runtime import engine_bytes, read_engine_header, strip_engine_header
from fine_yolo.glue.onnx_order import toposort_onnx


def write_engine(path, engine: bytes, metadata: dict | None = None):
    """Write ``engine`` as ultralytics' exporter does: a metadata header when ``metadata`` is given, else plain.

    The length is that of the *encoded* JSON (``ensure_ascii`` keeps it equal to the character count ultralytics
    writes), so files round-trip through ultralytics' own reader.
    """
    with open(path, "wb") as f:
        if metadata is not None:
            meta = json.dumps(metadata, ensure_ascii=True).encode("utf-8")
            f.write(len(meta).to_bytes(4, byteorder="little", signed=True))
            f.write(meta)
        f.write(engine)
    return path


ENGINE = bytes(range(256)) * 8  # stands in for a serialized engine: binary, not JSON
META = {"description": "Ultralytics yolov8n-fine model", "stride": 32, "imgsz": [640, 640], "names": {"0": "person"}}


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# --- header ---------------------------------------------------------------------------------------------------------


def test_header_round_trip(tmp_path):
    path = write_engine(tmp_path / "m.engine", ENGINE, META)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:4], "little", signed=True)
    assert json.loads(raw[4 : 4 + n]) == META  # ultralytics' layout: 4-byte LE length, JSON, engine
    offset, meta = read_engine_header(path)
    assert (offset, meta) == (4 + n, META)
    assert engine_bytes(path) == (ENGINE, META)


def test_header_is_compatible_with_ultralytics_reader(tmp_path):
    base = pytest.importorskip("ultralytics.nn.backends.base", reason="ultralytics < 8.4 has no BaseBackend")
    path = write_engine(tmp_path / "m.engine", ENGINE, META)
    assert base.BaseBackend.engine_header(path) == read_engine_header(path)


def test_plain_engine_has_no_header(tmp_path):
    path = write_engine(tmp_path / "plain.plan", ENGINE)
    assert read_engine_header(path) == (0, {})
    assert engine_bytes(path) == (ENGINE, {})


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01\x02", (10**6).to_bytes(4, "little") + b"{}", (2).to_bytes(4, "little") + b"\xff\xfe" + ENGINE,
     (4).to_bytes(4, "little") + b"[12]" + ENGINE],  # empty, short, overrunning length, not UTF-8, JSON non-object
)
def test_malformed_headers_read_as_plain_engines(tmp_path, data):
    path = tmp_path / "x.engine"
    path.write_bytes(data)
    assert read_engine_header(path) == (0, {})


def test_strip_header_for_trtexec(tmp_path):
    src = write_engine(tmp_path / "m.engine", ENGINE, META)
    plan = strip_engine_header(src)
    assert plan == tmp_path / "m.plan" and plan.read_bytes() == ENGINE
    assert strip_engine_header(plan, tmp_path / "again.plan").read_bytes() == ENGINE  # idempotent on plain files


# --- no GPU / no TensorRT -------------------------------------------------------------------------------------------


@pytest.mark.skipif(_has_cuda(), reason="checks the answer on a machine without CUDA")
def test_preflight_without_cuda_is_one_sentence():
    with pytest.raises(EngineUnavailableError) as e:
        engine_preflight("yolov8s-fine.yaml", None, 640)
    msg = str(e.value)
    assert "no CUDA GPU" in msg and "format=onnx" in msg and "imgsz=640" in msg and "trtexec" in msg
    assert "\n" not in msg and msg.endswith(".")


def test_preflight_rejects_cpu_device_everywhere():
    with pytest.raises(EngineUnavailableError, match="cannot use device=cpu"):
        engine_preflight("yolov8s-fine.yaml", "cpu")


@pytest.mark.skipif(_has_cuda(), reason="checks the answer on a machine without CUDA")
def test_cli_engine_without_gpu_ends_with_a_sentence_not_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fine_yolo.cli", "export", "model=yolov8n-fine.yaml", "format=engine", "imgsz=320"],
        cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("fine-yolo export:")]
    assert len(lines) == 1 and "no CUDA GPU" in lines[0], proc.stderr
    assert not list(tmp_path.glob("*.onnx"))  # refused before exporting anything


def test_int8_needs_calibration_data():
    with pytest.raises(ValueError, match="data="):
        export_model("yolov8n-fine.yaml", "onnx", int8=True)


# --- ONNX through the wrapper --------------------------------------------------------------------------------------


def test_fine_fp16_onnx_export_through_ultralytics_api_is_valid_onnx(tmp_path, monkeypatch):
    """The glue's export_onnx repair reaches FINE models exported through ultralytics' own API (plain models are left
    to ultralytics: tests/test_glue.py checks their file is the same with the hook on and off)."""
    from ultralytics import YOLO

    from fine_yolo.glue import register

    register()
    monkeypatch.chdir(tmp_path)
    path = YOLO("yolov8n-fine.yaml").export(format="onnx", half=True, imgsz=64, device="cpu")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)  # raises on out-of-order nodes
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # keep_io_types: FP32 in/out
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)  # the weights are FP16


def test_toposort_repairs_node_order():
    relu = helper.make_node("Relu", ["x"], ["a"], name="first")
    neg = helper.make_node("Neg", ["a"], ["y"], name="second")
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph([neg, relu], "g", vi[:1], vi[1:]),
                              opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    assert toposort_onnx(model) is True
    assert [n.name for n in model.graph.node] == ["first", "second"]
    onnx.checker.check_model(model, full_check=True)
    assert toposort_onnx(model) is False  # already sorted: untouched


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    cwd = os.getcwd()
    os.chdir(d)
    yield d
    os.chdir(cwd)


@pytest.mark.parametrize(("dynamic", "half"), [(False, False), (True, False), (False, True), (True, True)])
def test_onnx_export_static_dynamic_fp32_fp16(export_dir, dynamic, half, capsys):
    path = export_model("yolov8n-fine.yaml", "onnx", imgsz=160, dynamic=dynamic, half=half)
    assert "PASS" in capsys.readouterr().out  # the wrapper printed the offline check
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)  # FP16 included: the Casts are back in topological order
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_value == 0 for d in dims[2:]) == dynamic  # symbolic H, W only when dynamic
    elem = {i.data_type for i in model.graph.initializer if "11.fine.q.weight" in i.name}
    assert elem == {TensorProto.FLOAT16 if half else TensorProto.FLOAT}
    report = check_onnx(path)
    assert report.ok, report.summary()
    assert [a.fused_form for a in report.attention if "fine" in a.softmax.lower()] == [True, True]
    path.unlink()


def test_cli_export_onnx(export_dir, capsys):
    from fine_yolo.cli import run_subcommand

    assert run_subcommand("export", ["model=yolov8n-fine.yaml", "format=onnx", "imgsz=128", "opset=17"]) == 0
    out = capsys.readouterr().out
    (summary,) = [line for line in out.splitlines() if line.startswith(("PASS: ", "FAIL: "))]
    assert re.fullmatch(r"PASS: .*yolov8n-fine\.onnx — TensorRT 10\.3 offline check, opset 17, \d+ nodes, \d+ op types",
                        summary), summary
    assert (export_dir / "yolov8n-fine.onnx").is_file()


# --- GPU + TensorRT -------------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_fp16_engine_builds_and_runs(export_dir):
    if not _has_cuda():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    pytest.importorskip("tensorrt", reason="needs the TensorRT Python package (JetPack or `pip install tensorrt`)")
    from fine_yolo.export.trt_runtime import TRTRunner

    path = export_model("yolov8n-fine.yaml", "engine", imgsz=160, half=True, plain=True, verbose=False)
    offset, meta = read_engine_header(path)
    assert offset > 0 and meta["imgsz"] == [160, 160]
    assert path.with_suffix(".plan").read_bytes() == path.read_bytes()[offset:]
    for graph in (False, True):
        runner = TRTRunner(path, imgsz=160, cuda_graph=graph)
        ms = [runner() for _ in range(5)]
        assert all(0 < t < 1000 for t in ms)
        out = next(iter(runner.outputs.values()))
        assert tuple(out.shape) == (1, 84, 525)  # 160/8, /16, /32 -> 400 + 100 + 25 anchors


# TensorRT against PyTorch (CPU, float32) on a model whose FINE blocks move boxes by pixels (helpers.live_model
# with head=True). Tolerances, per element, |engine - torch| <= rel * |torch| + abs, chosen from the arithmetic (not
# yet measured on a GPU: no GPU has been lent to this project):
# * FP32 engine: TensorRT builds FP32 engines with TF32 allowed on Ampere and later (10-bit mantissa inputs to every
#   convolution and MatMul, ~5e-4 relative each, over ~60 layers): rel 1e-2; boxes abs 0.5 px, scores abs 1e-4.
# * FP16 engine: 11-bit significands for activations and weights throughout: rel 3e-2; boxes abs 2 px, scores 5e-4.
# And the mean box error must stay under a quarter of FINE's mean effect, so an engine that lost FINE's modulation
# (computed the identity) fails even where each element is within tolerance.
@pytest.mark.gpu
@pytest.mark.parametrize(("half", "rel", "box_abs", "score_abs"), [(False, 1e-2, 0.5, 1e-4), (True, 3e-2, 2.0, 5e-4)])
def test_engine_outputs_match_pytorch(tmp_path, monkeypatch, half, rel, box_abs, score_abs):
    if not _has_cuda():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    pytest.importorskip("tensorrt", reason="needs the TensorRT Python package (JetPack or `pip install tensorrt`)")
    import torch
    from helpers import fine_effect, live_model
    from ultralytics import YOLO

    from fine_yolo.export.trt_runtime import TRTRunner

    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "live.pt"
    live_model("yolov8n-fine.yaml", 160, head=True).save(ckpt)
    path = export_model(str(ckpt), "engine", imgsz=160, half=half, verbose=False)
    runner = TRTRunner(path, imgsz=160)
    ((_, image),) = runner.inputs.items()
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    image.copy_(x.to(image.device, image.dtype))
    runner()
    out = next(iter(runner.outputs.values())).float().cpu()
    net = YOLO(str(ckpt)).model.float().eval()
    with torch.no_grad():
        ref = net(x)[0]
    assert out.shape == ref.shape == (1, 84, 525)
    err = (out - ref).abs()
    for rows, absolute in ((slice(0, 4), box_abs), (slice(4, None), score_abs)):
        bound = rel * ref[:, rows].abs() + absolute
        assert (err[:, rows] <= bound).all(), f"max error / bound = {(err[:, rows] / bound).max().item():.3f}"
    effect = fine_effect(net, x)
    assert effect[:, :4].mean() > 0.5  # FINE matters in this model (pixels) ...
    assert err[:, :4].mean() < 0.25 * effect[:, :4].mean()  # ... and the engine computes it
