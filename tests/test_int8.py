"""INT8 for FINE models: ONNX Runtime QDQ and OpenVINO NNCF end to end on a tiny model, FINE kept in float on
request, exclusion lists that name nodes of the graph they are applied to, and the TensorRT layer-precision list."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from helpers import ort_session

from fine_yolo.data.synthetic import generate, write_data_yaml
from fine_yolo.errors import UsageError
from fine_yolo.export import int8
from fine_yolo.nn import FINE

IMGSZ = 64


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("int8data") / "data"
    generate(root, seed=0, n_train=4, n_val=2, imgsz=128, verbose=False)
    return write_data_yaml(root, "detect")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """yolov8n-fine with a non-identity FINE, exported by ultralytics to FP32 ONNX and OpenVINO at 64 px."""
    from ultralytics import YOLO

    tmp = tmp_path_factory.mktemp("int8model")
    torch.manual_seed(0)
    model = YOLO("yolov8n-fine.yaml", verbose=False)
    for m in model.model.modules():
        if isinstance(m, FINE):
            torch.nn.init.normal_(m.out.weight, std=0.05)
    model.save(tmp / "fine.pt")
    model = YOLO(str(tmp / "fine.pt"))
    return {"onnx": Path(model.export(format="onnx", imgsz=IMGSZ, simplify=True)),
            "openvino": Path(model.export(format="openvino", imgsz=IMGSZ))}


@pytest.fixture(scope="module")
def calib(data_yaml) -> list[np.ndarray]:
    return int8.calibration_arrays(int8.calibration_files(data_yaml, "train", n=2), IMGSZ)


def test_calibration_images_are_a_seeded_subset_letterboxed_like_predict(data_yaml):
    files = int8.calibration_files(data_yaml, "train", n=2, seed=3)
    assert len(files) == 2 and files == int8.calibration_files(data_yaml, "train", n=2, seed=3)
    assert all("train" in str(f) for f in files) and len(int8.calibration_files(data_yaml, "train")) == 4
    (x,) = int8.calibration_arrays(files[:1], 96)
    assert x.shape == (1, 3, 96, 96) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    import cv2

    img = cv2.imread(str(files[0]))  # 128x128 -> 96x96: a plain resize, no padding; channel 0 is red
    ref = cv2.resize(img, (96, 96), interpolation=cv2.INTER_LINEAR)[..., ::-1].transpose(2, 0, 1) / 255.0
    # the same 8-bit pixels / 255, up to float32 rounding (u = 1.2e-7 at values <= 1; measured 3e-8)
    np.testing.assert_allclose(x[0], ref, rtol=0, atol=float(np.finfo(np.float32).eps))


def test_group_names_and_keep():
    names = ["/model.11/fine/q/Conv", "/model.11/fine/MatMul_1", "/model.14/fine/Softmax", "/model.12/Conv",
             "/model.2/refine3/Conv", "/model.11/Slice"]
    groups = int8.group_names(names)  # fine<fusion row>: the FINE inside model.<row> (the row's own Slice is not)
    assert groups == {"fine11": ["/model.11/fine/q/Conv", "/model.11/fine/MatMul_1"],
                      "fine14": ["/model.14/fine/Softmax"]}
    assert int8.resolve_keep("fine", groups) == ["fine11", "fine14"]
    assert int8.resolve_keep("none", groups) == [] and int8.resolve_keep("", groups) == []
    assert int8.resolve_keep("fine14", groups) == ["fine14"]
    with pytest.raises(UsageError, match=r"keep=fine7: no FINE group fine7 in the graph \(known: fine, none, fine11"):
        int8.resolve_keep("fine7", groups)
    with pytest.raises(UsageError, match="this graph has no FINE node"):
        int8.resolve_keep("fine11", {})


def _fed_by_dq(model: onnx.ModelProto, node_names: set[str]) -> set[str]:
    """Nodes among ``node_names`` with at least one input produced by a DequantizeLinear."""
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if n.name in node_names and set(n.input) & dq_out}


def test_onnx_qdq_quantises_fine_unless_kept(tmp_path, exported, calib):
    fp32 = onnx.load(str(exported["onnx"]))
    groups = int8.fine_nodes(fp32)
    assert set(groups) == {"fine11", "fine14"}
    weighted = {n.name for n in fp32.graph.node if n.name in set(sum(groups.values(), []))
                and n.op_type in {"Conv", "MatMul"}}
    assert len(weighted) == 2 * (3 + 2)  # per block: q, kv, out convs and the two attention MatMuls

    excl = int8.onnx_exclusions(fp32, ["fine11", "fine14"])
    assert set(excl) <= {n.name for n in fp32.graph.node}  # every excluded name exists in the graph
    assert weighted <= set(excl) and not {n.name for n in fp32.graph.node if n.op_type == "Conv"
                                          and not int8.fine_group(n.name)} & set(excl)

    results = {}
    for keep in ("none", "fine"):
        info = int8.quantize_onnx(exported["onnx"], tmp_path / f"{keep}.onnx", calib, keep=keep)
        q = onnx.load(info["path"])
        results[keep] = (info, q)
        assert {p.key: p.value for p in q.metadata_props}["names"] == {
            p.key: p.value for p in fp32.metadata_props}["names"]  # YOLO(q) keeps the class names
        sess = ort_session(info["path"])
        out = sess.run(None, {sess.get_inputs()[0].name: calib[0]})[0]
        assert out.shape == (1, 84, 84) and np.isfinite(out).all()  # 4 box + 80 classes, 8²+4²+2² anchors
    info_none, q_none = results["none"]
    info_fine, q_fine = results["fine"]
    assert _fed_by_dq(q_none, weighted) == weighted  # every FINE conv/matmul reads INT8 (dequantised) inputs
    assert _fed_by_dq(q_fine, weighted) == set()  # kept: no FINE conv/matmul reads a dequantised tensor
    assert info_fine["kept"] == ["fine11", "fine14"] and set(info_fine["excluded_fine_nodes"]) >= weighted
    assert info_fine["quantize_linear_nodes"] < info_none["quantize_linear_nodes"]
    # the rest of the network is quantised the same way in both
    others = {n.name for n in fp32.graph.node if n.op_type == "Conv" and not int8.fine_group(n.name)}
    assert _fed_by_dq(q_fine, others) == _fed_by_dq(q_none, others) == others


_SHAPE_ONLY = {"Reshape", "Transpose", "Squeeze", "Unsqueeze"}


def _reads_fq(op) -> list[bool]:
    """For each input of ``op``: whether it reads a FakeQuantize, directly or through shape-only ops (NNCF places
    the quantiser of a tensor before the Reshape/Transpose that feeds it to a MatMul)."""
    found = []
    for i in op.inputs():
        node = i.get_source_output().get_node()
        while node.get_type_name() in _SHAPE_ONLY:
            node = node.input(0).get_source_output().get_node()
        found.append(node.get_type_name() == "FakeQuantize")
    return found


def _int8_weights(op) -> bool:
    """Whether the weight input (1) of a MatMul/Convolution is an INT8 constant dequantised on the fly."""
    node = op.input(1).get_source_output().get_node()
    while node.get_type_name() in {"Multiply", "Subtract", "Convert", "Transpose"}:
        node = node.input(0).get_source_output().get_node()
    return node.get_type_name() == "Constant" and node.get_element_type().get_type_name() in {"i8", "u8"}


def test_nncf_quantises_fine_unless_kept(tmp_path, exported, calib):
    pytest.importorskip("nncf", reason="NNCF tests need nncf (pip install -e '.[dev]')")
    import openvino as ov

    from fine_yolo.export.openvino import openvino_xml

    fp32 = ov.Core().read_model(str(openvino_xml(exported["openvino"])))
    groups = int8.fine_nodes(fp32)
    assert set(groups) == {"fine11", "fine14"}
    head = int8.head_ignored(fp32)
    every = {op.get_friendly_name() for op in fp32.get_ordered_ops()}
    assert head and set(head) <= every and any("Sigmoid" in n for n in head)  # the ignored scope names real nodes
    # the token-major form records eq. 10, Q, K/V and W_O as 4 MatMuls with constant weights per block
    fine_linear = {op.get_friendly_name() for op in fp32.get_ordered_ops() if int8.fine_group(op.get_friendly_name())
                   and op.get_type_name() == "MatMul" and op.input(1).get_source_output().get_node().get_type_name()
                   == "Constant"}
    assert len(fine_linear) == 8
    models = {}
    for keep in ("none", "fine"):
        info = int8.quantize_openvino(exported["openvino"], tmp_path / f"{keep}_openvino_model", calib, keep=keep)
        models[keep] = ov.Core().read_model(str(openvino_xml(info["path"])))
        assert (Path(info["path"]) / "metadata.yaml").is_file()
        out = ov.Core().compile_model(models[keep], "CPU")(calib[0])[0]
        assert out.shape == (1, 84, 84) and np.isfinite(out).all()
    ops = {k: {op.get_friendly_name(): op for op in m.get_ordered_ops() if op.get_friendly_name() in fine_linear}
           for k, m in models.items()}
    # NNCF's MIXED preset: every FINE projection (W_O included) gets INT8 weights and INT8 activations; kept in
    # float, none of them is touched
    assert len(ops["none"]) == len(ops["fine"]) == 8
    assert all(_int8_weights(op) and _reads_fq(op) == [True, False] for op in ops["none"].values())
    assert not any(_int8_weights(op) or any(_reads_fq(op)) for op in ops["fine"].values())


def test_trt_layer_precisions_name_nodes_of_the_graph(exported):
    fp32 = onnx.load(str(exported["onnx"]))
    names = {n.name for n in fp32.graph.node}
    lp = int8.trt_layer_precisions(exported["onnx"], "fine")
    assert lp and all(x.endswith(":fp16") and x.rsplit(":", 1)[0] in names for x in lp)
    assert {x.rsplit(":", 1)[0] for x in lp} == set(sum(int8.fine_nodes(fp32).values(), []))
    assert int8.trt_layer_precisions(exported["onnx"], "fine14", "fp32") == [
        f"{n}:fp32" for n in int8.fine_nodes(fp32)["fine14"]]


class _Layer:
    def __init__(self, name: str, outputs: int = 1) -> None:
        self.name, self.num_outputs, self.precision, self.out_types = name, outputs, None, {}

    def set_output_type(self, i: int, dtype) -> None:
        self.out_types[i] = dtype


def test_apply_layer_precisions_sets_layer_and_output_types():
    layers = [_Layer("/model.0/conv/Conv"), _Layer("/fine0/MatMul_1"), _Layer("/fine0/Split", outputs=2)]
    network = SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    trt = SimpleNamespace(float32="f32", float16="f16", bfloat16="bf16")
    done = int8.apply_layer_precisions(network, ["/fine0/MatMul_1:fp16", "/fine0/Split:fp32", "/absent:fp16"], trt)
    assert done == ["/fine0/MatMul_1", "/fine0/Split"]
    assert layers[0].precision is None and layers[1].precision == "f16" and layers[1].out_types == {0: "f16"}
    assert layers[2].out_types == {0: "f32", 1: "f32"}
    with pytest.raises(UsageError, match="must be fp32, fp16 or bf16"):
        int8.apply_layer_precisions(network, ["/fine0/MatMul_1:int4"], trt)


def test_engine_from_qdq_stops_with_one_sentence_without_a_gpu(exported):
    from fine_yolo.export.preflight import EngineUnavailableError

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the engine build itself is covered by the gpu-marked engine tests")
    with pytest.raises(EngineUnavailableError, match="format=onnx"):
        int8.engine_from_qdq(exported["onnx"], IMGSZ)
    from fine_yolo.export.int8_eval import run_int8

    with pytest.raises(EngineUnavailableError):  # before any export or calibration starts
        run_int8("absent.pt", "absent.yaml", engine=True)


def test_int8_command_scores_fp32_and_int8_with_pycocotools(tmp_path, exported, data_yaml):
    """``fine-yolo int8``'s pipeline: export, INT8 with FINE kept (both runtimes), val + pycocotools, table."""
    from fine_yolo.export.int8_eval import markdown, run_int8

    pt = exported["onnx"].with_suffix(".pt")
    result = run_int8(str(pt), str(data_yaml), imgsz=IMGSZ, keep=("fine",), calib=2, out=tmp_path / "out")
    variants = {(v["runtime"], v["precision"], v["keep"]): v for v in result["variants"]}
    assert set(variants) == {(rt, p, k) for rt in ("onnx", "openvino") for p, k in (("fp32", None), ("int8", "fine"))}
    assert result["args"]["calib"] == 2
    for v in variants.values():
        ap = v["metrics"]["coco"]["AP50:95"]
        assert 0.0 <= ap <= 1.0
    assert Path(result["trt_layer_precisions"]).read_text().count(":fp16") == sum(result["fine_groups"].values())
    table = markdown(result)
    assert "| ONNX Runtime | FP32 |" in table and "INT8, keep=fine" in table and "calibrated on 2 train" in table
    assert "| OpenVINO | FP32 IR (run at the plugin's default precision) |" in table
