"""OpenVINO: ultralytics' export of FINE models against PyTorch, the precision the plugin runs, bench format=openvino,
and plain ``yolo export format=openvino int8=True`` offline (NNCF calibration from a local data YAML)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("openvino", reason="OpenVINO tests need openvino (pip install -e '.[dev]')")

from conftest import offline_env  # noqa: E402
from helpers import (  # noqa: E402
    FINE_MARGIN,
    assert_parity,
    detection_groups,
    fine_effect,
    float64_twin,
    live_model,
    output_tensors,
)

from fine_yolo.data.synthetic import generate, write_data_yaml  # noqa: E402
from fine_yolo.export.int8 import fine_nodes  # noqa: E402
from fine_yolo.export.openvino import (  # noqa: E402
    attention_nodes,
    compile_config,
    compile_openvino,
    exec_groups,
    fine_group,
    openvino_xml,
    plugin_info,
)
from fine_yolo.nn import FINEConcat  # noqa: E402

IMGSZ = 64
YOLO_CLI = str(Path(sys.executable).with_name("yolo"))


def _export_ir(yaml: str, tmp: Path) -> tuple[Path, torch.nn.Module]:
    from ultralytics import YOLO

    model = live_model(yaml, IMGSZ, head=True)  # O(1) activations, FINE as after training (W_O != 0)
    ckpt = tmp / yaml.replace(".yaml", ".pt")
    model.save(ckpt)
    model = YOLO(str(ckpt))
    path = Path(model.export(format="openvino", imgsz=IMGSZ, device="cpu"))
    return path, model.model.float().eval()


@pytest.mark.parametrize("yaml", ["yolov8n-fine.yaml", "yolov10n-fine.yaml", "yolo12n-fine.yaml"])
def test_openvino_export_of_fine_models_matches_pytorch_at_f32(tmp_path, yaml):
    ir, net = _export_ir(yaml, tmp_path)
    rows = {f"fine{m.i}" for m in net.model if isinstance(m, FINEConcat)}  # fine<fusion row>: yolov8 fine11, fine14
    assert len(rows) == 2 and set(fine_nodes(ir)) == rows  # both FINE blocks made it into the IR under their names
    compiled = compile_openvino(ir, precision="f32", threads=1)
    info = plugin_info(compiled)
    assert info["precision_hint"] == "f32" and set(info["executed_precisions"]) <= {"f32", "i32", "i64", "u8"}
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the decoded (1, 4 + nc, anchors) output: boxes in pixels, sigmoid scores
        ref, ref64 = output_tensors(net(x))[0].numpy(), output_tensors(float64_twin(net)(x.double()))[0].numpy()
    effect = fine_effect(net, x).numpy()
    got = compiled(x.numpy())[0]
    assert got.shape == ref.shape == (1, 84, 84)
    for group, channels in detection_groups(84, 80).items():  # tolerances derived as in tests/helpers.py
        tol = assert_parity(got[:, channels], ref[:, channels], ref64[:, channels], f"OpenVINO f32 {group}")
        assert effect[:, channels].max() > FINE_MARGIN * tol, (group, effect[:, channels].max(), tol)  # FINE checked
    # the executable graph's FINE nodes include what the plugin made of the attention, whatever its names
    groups = exec_groups(compiled)
    assert set(groups.values()) == rows and set(groups) >= {
        op.get_friendly_name() for op in compiled.get_runtime_model().get_ops() if fine_group(op.get_friendly_name())}
    # the token-major form's Transpose-MatMul-Softmax-MatMul-Transpose is compiled into one fused attention kernel
    # per block (a Snippets Subgraph), not into separate MatMul and Softmax nodes with the logits in memory
    attention = attention_nodes(compiled, groups)
    assert sorted(groups[n] for n in attention) == sorted(rows) and set(attention.values()) == {"Subgraph"}
    types = {op.get_friendly_name(): op.get_rt_info()["layerType"].astype(str)
             for op in compiled.get_runtime_model().get_ops()}
    assert not {types[n] for n in groups} & {"Softmax", "MatMul"}


def test_fine_group_reads_every_exporters_spelling():
    assert fine_group("__module.model.11.fine/aten::scaled_dot_product_attention/ScaledDotProductAttention") == "fine11"
    assert fine_group("self.model.14.fine.q.weight") == "fine14"
    assert fine_group("/model.14/fine/MatMul_1") == "fine14" and fine_group("/model.112/fine/q/Conv") == "fine112"
    assert fine_group("/model.11/Slice") is None  # the fusion row's own strided slice is not FINE's
    assert fine_group("__module.model.13/aten::upsample_nearest2d/Interpolate") is None
    assert fine_group("/model.2/refine3/Conv") is None and fine_group("/model.finetune/Conv") is None


def test_compile_config_and_bad_precision():
    from fine_yolo.export.openvino import OpenVINOError

    assert compile_config("f32", 2) == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
                                        "INFERENCE_NUM_THREADS": "2", "INFERENCE_PRECISION_HINT": "f32"}
    assert "INFERENCE_PRECISION_HINT" not in compile_config("default")
    with pytest.raises(OpenVINOError, match="precision=fp8 is not one of default, f32, bf16, f16"):
        compile_config("fp8")
    with pytest.raises(OpenVINOError, match="not an OpenVINO"):
        openvino_xml(Path(__file__))


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ovdata") / "data"
    generate(root, seed=0, n_train=4, n_val=2, imgsz=128, verbose=False)
    return write_data_yaml(root, "detect")


def test_plain_yolo_export_openvino_int8_runs_offline_and_bench_times_it(tmp_path, data_yaml):
    """``yolo export format=openvino int8=True`` (ultralytics' NNCF path) with no network and no pip installs, then
    ``fine-yolo bench format=openvino`` on the FP32 IR pair records the precision the plugin ran."""
    env = offline_env()
    proc = subprocess.run([YOLO_CLI, "export", "model=yolov8n-fine.yaml", "format=openvino", f"imgsz={IMGSZ}",
                           "int8=True", f"data={data_yaml}", "split=train", "batch=1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    ir = tmp_path / "yolov8n-fine_int8_openvino_model"
    import openvino as ov

    model = ov.Core().read_model(str(openvino_xml(ir)))
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) > 20  # NNCF did quantise
    assert set(fine_nodes(model)) == {"fine11", "fine14"}
    assert "pip install" not in out.lower() and "downloading" not in out.lower()

    # bench: the INT8 IR against a copy of itself, f32 requested for what is not INT8
    from fine_yolo.bench.latency import run_bench
    from fine_yolo.bench.report import markdown

    shutil.copytree(ir, tmp_path / "copy_openvino_model")
    result = run_bench(str(ir), baseline=str(tmp_path / "copy_openvino_model"), imgsz=IMGSZ, format="openvino",
                       precision="f32", iters=4, warmup=1, block=2, e2e=False, threads=1, flops=False,
                       out=str(tmp_path / "bench"), progress=False)
    info = result["models"]["fine"]["info"]
    assert info["precision"] == "f32" and info["precision_hint"] == "f32" and info["inference_threads"] == 1
    assert {"u8", "i8"} & set(info["executed_precisions"])  # INT8 kernels ran
    assert len(result["models"]["fine"]["samples_ms"]) >= 4
    assert "OpenVINO" in markdown(result) and "plugin ran f32" in markdown(result)
    json.dumps(result)  # the bench JSON record holds plain values


def test_bench_precision_key_is_checked():
    from fine_yolo.bench.latency import BenchArgumentError, run_bench

    with pytest.raises(BenchArgumentError, match="precision=f8 is not one of"):
        run_bench("yolov8n-fine.yaml", format="openvino", precision="f8")
    with pytest.raises(BenchArgumentError, match="applies to format=openvino"):
        run_bench("yolov8n-fine.yaml", format="onnx", precision="f32")


def test_fine_yolo_export_openvino_int8_without_data_says_so():
    from fine_yolo.export.engine import ExportArgumentError, export_model

    with pytest.raises(ExportArgumentError, match="data=<dataset YAML>"):
        export_model("yolov8n-fine.yaml", "openvino", int8=True)
