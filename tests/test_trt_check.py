"""The offline TensorRT 10.3 check: its data, each rule on hand-built graphs, and every shipped FINE model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import in_depth
from onnx import TensorProto, helper, numpy_helper

from fine_yolo.cli import run_subcommand
from fine_yolo.export.trt_check import check_onnx, load_allowlist

F32 = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=18, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    imports = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=imports, ir_version=9)


def _vi(name, shape):
    return helper.make_tensor_value_info(name, F32, shape)


def _codes(report, level="error"):
    return sorted(i.code for i in report.issues if i.level == level)


def _attention_model(head_dim=16, scale_q=True, scale_k=True, n=10, heads=2, scale_from_shape=False, batch=1):
    """Q (b,h,n,d) x K^T (b,h,d,n) -> Softmax -> x V (b,h,n,d), scales as constants; with ``scale_from_shape`` the
    scale is what torch's SDPA export leaves without onnxslim: Sqrt(Div(1, Sqrt(Cast(Slice(Shape(q), -1)))))."""
    s = np.array(head_dim ** -0.25, dtype=np.float32)
    inits = [numpy_helper.from_array(s, "s")]
    nodes, q, k = [], "q", "kt"
    if scale_from_shape:
        inits = [numpy_helper.from_array(np.array(v, dtype=dt), name) for v, dt, name in
                 (([-1], np.int64, "last"), ([2**62], np.int64, "end"), (1.0, np.float32, "one"))]
        nodes += [helper.make_node("Shape", ["q"], ["shape"]),
                  helper.make_node("Slice", ["shape", "last", "end"], ["d"]),
                  helper.make_node("Cast", ["d"], ["df"], to=TensorProto.FLOAT),
                  helper.make_node("Sqrt", ["df"], ["sd"]),
                  helper.make_node("Div", ["one", "sd"], ["inv"]),
                  helper.make_node("Sqrt", ["inv"], ["s"])]
    if scale_q:
        nodes.append(helper.make_node("Mul", ["q", "s"], ["qs"], name="/fine0/Mul"))
        q = "qs"
    if scale_k:
        nodes.append(helper.make_node("Mul", ["kt", "s"], ["ks"], name="/fine0/Mul_1"))
        k = "ks"
    nodes += [
        helper.make_node("MatMul", [q, k], ["scores"], name="/fine0/MatMul"),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1, name="/fine0/Softmax"),
        helper.make_node("MatMul", ["p", "v"], ["o"], name="/fine0/MatMul_1"),
    ]
    ins = [_vi("q", [batch, heads, n, head_dim]), _vi("kt", [batch, heads, head_dim, n]),
           _vi("v", [batch, heads, n, head_dim])]
    return _model(nodes, ins, [_vi("o", [batch, heads, n, head_dim])], inits)


def test_allowlist_names_its_source_and_version():
    table = load_allowlist()
    assert table["tensorrt_version"] == "10.3"
    assert table["opset_max"] == 20 and table["opset_min"] == 9
    assert table["source"].startswith("https://github.com/onnx/onnx-tensorrt/") and "10.3" in table["source"]
    assert "10.1-GA" in table["derivation"] and "Changelog" in table["derivation"]
    sup = table["supported"]
    for op in ("Conv", "MatMul", "Softmax", "Resize", "AveragePool", "Concat", "Split", "Sigmoid", "MaxPool"):
        assert "FP16" in sup[op], op
    assert "Attention" not in sup  # no importer before ~10.15
    assert {"SequenceConstruct", "SplitToSequence", "STFT", "Unique"} <= set(table["unsupported"])
    assert not set(sup) & set(table["unsupported"])
    assert len(sup) == 150


def test_fused_attention_form_is_recognised():
    r = check_onnx(_attention_model())
    assert r.ok, r.summary()
    assert len(r.attention) == 1
    a = r.attention[0]
    assert (a.head_dim, a.q_scaled, a.k_scaled, a.fused_form) == (16, True, True, True)
    assert r.ops == {"MatMul": 2, "Mul": 2, "Softmax": 1}


def test_a_scale_computed_from_a_static_shape_counts_as_constant():
    """An export without onnxslim computes SDPA's scale from Shape(q); TensorRT folds it where the shape is static."""
    a = check_onnx(_attention_model(scale_from_shape=True)).attention[0]
    assert (a.q_scaled, a.k_scaled, a.fused_form) == (True, True, True)
    # a dynamic batch: the checker claims no folding it cannot see (conservative: it only reads whole static shapes)
    a = check_onnx(_attention_model(scale_from_shape=True, batch=None)).attention[0]
    assert (a.q_scaled, a.k_scaled, a.fused_form) == (False, False, False)


@pytest.mark.parametrize(("kwargs", "why"), [({"scale_k": False}, "scale on Q only"), ({"head_dim": 12}, "d % 8")])
def test_other_attention_forms_are_notes_or_errors_on_request(kwargs, why):
    m = _attention_model(**kwargs)
    r = check_onnx(m)
    assert r.ok and not r.attention[0].fused_form, why
    assert _codes(r, "note") == ["attention-form"]
    strict = check_onnx(m, attention="require")
    assert not strict.ok and _codes(strict) == ["attention-form"]


def test_opset_above_20_is_an_error():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [1, 4])], [_vi("y", [1, 4])], opset=21)
    r = check_onnx(m)
    assert r.opset == 21 and _codes(r) == ["opset"]
    assert check_onnx(m, opset_max=21).ok


@pytest.mark.parametrize(
    ("op", "code"),
    [("Einsum", "denied-op"), ("SequenceConstruct", "sequence-op"), ("Unique", "unsupported-op")],
)
def test_denied_sequence_and_unlisted_ops(op, code):
    if op == "Einsum":
        node = helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->ij")
        out = _vi("y", [2, 2])
    elif op == "SequenceConstruct":
        node = helper.make_node("SequenceConstruct", ["x"], ["y"])
        out = helper.make_tensor_sequence_value_info("y", F32, [2, 2])
    else:
        node = helper.make_node("Unique", ["x"], ["y"], sorted=1)
        out = _vi("y", None)
    r = check_onnx(_model([node], [_vi("x", [2, 2])], [out]))
    assert code in _codes(r), r.summary()
    assert any(i.op == op for i in r.errors)


def test_loop_if_and_attention_are_denied_by_name():
    # Parsed by TensorRT 10.3 (If/Loop) or not at all (Attention); the check refuses all three on their op type,
    # before looking at anything else. Only the op-type rule is exercised, so minimal nodes suffice.
    from fine_yolo.export.trt_check import DENIED_OPS

    assert {"Attention", "Einsum", "Loop", "If"} <= set(DENIED_OPS)
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "b", [], [_vi("z", [2])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch, name="the_if")
    r = check_onnx(_model([node], [cond, _vi("x", [2])], [_vi("y", [2])]))
    assert [(i.code, i.node) for i in r.errors if i.code == "denied-op"] == [("denied-op", "the_if")]


def test_foreign_domain_is_an_error():
    node = helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft")
    m = _model([node], [_vi("x", [2, 2])], [_vi("y", [2, 2])], extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    assert "foreign-domain" in _codes(check_onnx(m))


@pytest.mark.parametrize(
    ("attrs", "code"),
    [({"ceil_mode": 1}, "avgpool-ceil-mode"), ({"dilations": [2, 2]}, "avgpool-dilations"),
     ({"pads": [1, 1, 1, 1]}, "avgpool-padding"), ({}, None)],
)
def test_average_pool_attributes(attrs, code):
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], **attrs)
    r = check_onnx(_model([node], [_vi("x", [1, 1, 8, 8])], [_vi("y", None)]))
    assert [c for c in _codes(r) if c.startswith("avgpool")] == ([code] if code else [])


@pytest.mark.parametrize(
    ("attrs", "ok"),
    [({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, True),
     ({"mode": "linear", "coordinate_transformation_mode": "asymmetric"}, False),
     ({"mode": "nearest", "coordinate_transformation_mode": "half_pixel", "nearest_mode": "floor"}, False),
     ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric"}, False)],  # default round_prefer_floor
)
def test_resize_must_be_nearest_asymmetric_floor(attrs, ok):
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)
    r = check_onnx(_model([node], [_vi("x", [1, 1, 4, 4])], [_vi("y", None)], [scales]))
    assert ("resize-mode" not in _codes(r)) == ok


def test_broken_shapes_fail_strict_inference():
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    r = check_onnx(_model([node], [_vi("a", [2, 3]), _vi("b", [4, 5])], [_vi("y", None)]))
    assert "shape-inference" in _codes(r)


def test_cli_exit_codes_and_json(tmp_path, capsys):
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(_attention_model(), good)
    onnx.save(_model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [1])], [_vi("y", [1])], opset=21), bad)
    out_json = tmp_path / "r.json"
    assert run_subcommand("check-onnx", [str(good), f"json={out_json}"]) == 0
    assert "PASS" in capsys.readouterr().out
    data = json.loads(out_json.read_text())
    assert data["ok"] is True and data["attention"][0]["fused_form"] is True
    assert run_subcommand("check-onnx", [f"model={bad}"]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert run_subcommand("check-onnx", [str(tmp_path / "none.onnx")]) == 2
    assert f"model={tmp_path / 'none.onnx'}: no such file" in capsys.readouterr().err


# --- every shipped FINE YAML, exported by ultralytics -------------------------------------------------------------

# One model per shipped YAML file; yolov8-fine.yaml and yolo12-fine.yaml hold all their scales (same structure), so
# their n scale stands for them. The yolov10 YAMLs differ per scale and are exported as they are, at a small size.
SHIPPED = {
    "yolov8-fine.yaml": "yolov8n-fine.yaml",
    **{f"yolov10{s}-fine.yaml": f"yolov10{s}-fine.yaml" for s in "nsmblx"},
    "yolo12-fine.yaml": "yolo12n-fine.yaml",
}
IMGSZ = 128  # a multiple of 32 whose P3..P5 maps (16, 8, 4) hold whole AATS cells
SLIMMED = ("yolov8n-fine.yaml", "yolov10n-fine.yaml", "yolo12n-fine.yaml")


def test_every_shipped_yaml_is_covered():
    """The yolov8/v10/12 detection YAMLs here; every other family and task in tests/test_families_export.py."""
    here = {n for n, m in in_depth().items() if m.family in ("YOLOv8", "YOLOv10", "YOLO12") and m.task == "detect"}
    assert set(SHIPPED) == here


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export each FINE model to ONNX once (static, FP32) through the export wrapper: simplified (ultralytics'
    default) for yolov8n, yolov10n and yolo12n; the per-scale yolov10 s..x, whose FINE subgraph is yolov10n's at other
    widths, as exported without onnxslim (half their export time; the check reads the same fused form in both)."""
    import os

    from fine_yolo.export.engine import export_model

    out = tmp_path_factory.mktemp("onnx")
    cwd = os.getcwd()
    os.chdir(out)  # ultralytics writes a YAML model's export into the working directory
    try:
        return {y: export_model(m, "onnx", check=False, verbose=False, imgsz=IMGSZ, simplify=m in SLIMMED)
                for y, m in SHIPPED.items()}
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("yaml_name", sorted(SHIPPED))
def test_shipped_model_passes_the_tensorrt_check(exported, yaml_name):
    r = check_onnx(exported[yaml_name])
    assert r.ok, r.summary()
    assert r.opset is not None and r.opset <= 20
    fine = [a for a in r.attention if "fine" in a.softmax.lower()]
    assert len(fine) == 2, r.summary()  # one per top-down stage
    for a in fine:  # FINE's attention in the form TensorRT's fused-MHA pass matches
        assert (a.head_dim, a.q_scaled, a.k_scaled, a.fused_form) == (16, True, True, True), a
    assert r.ops.get("AveragePool", 0) >= 2 and r.ops.get("Resize", 0) >= 2
