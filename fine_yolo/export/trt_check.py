"""Offline TensorRT 10.3 compatibility check of an ONNX file (no GPU, no TensorRT needed).

TensorRT 10.3 is the version JetPack 6.1/6.2 ships for the Jetson Orin family, so an ONNX file that passes here is
one the board's ``trtexec`` / ultralytics ``format=engine`` parses. The check runs, in order:

1. ``onnx.checker.check_model(full_check=True)`` — structurally valid model.
2. Strict shape inference (``strict_mode=True``, ``check_type=True``, ``data_prop=True``) — every shape resolves;
   TensorRT's parser needs them.
3. Default-domain opset <= 20: the parser of TensorRT 10.3 reads opsets 9-20. Any node of a non-default domain
   (``com.microsoft`` and friends) is an error: TensorRT only imports those as plugins.
4. Every op in the allow-list ``tensorrt_10_3_ops.json`` (onnx-tensorrt's published operator support table for
   TensorRT 10.3; the file names its source and how it was derived).
5. Policy denials on top of the table: no ``Attention`` (no importer before TensorRT ~10.15), no sequence ops, no
   ``Einsum``, ``Loop``, ``If`` (parsable in 10.3 but slow or fragile on Jetson; nothing in a YOLO needs them).
6. Attributes TensorRT implements differently from ONNX Runtime/PyTorch: ``AveragePool`` without ``ceil_mode``,
   dilations or padding; ``Resize`` only nearest / asymmetric / floor (what ``nn.Upsample(mode="nearest")`` and
   FINE's eq. 8 export to).
7. Attention form: each ``MatMul -> Softmax -> MatMul`` chain is reported with its head dim and whether it has the
   form TensorRT's fused multi-head-attention pass matches — the scale applied to Q *and* K (``Mul`` by a constant)
   before the first MatMul, and a head dim that is a multiple of 8 in 16..256. By default a chain in another form is a
   note (YOLO12's own area attention scales Q only); ``attention="require"`` makes it an error.

``fine-yolo check-onnx model.onnx`` (or ``model=model.onnx``; ``json=report.json``; ``attention=require``) prints the
report and exits 1 when there is an error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from fine_yolo.args import Command, Option
from fine_yolo.errors import FineYoloError

OPS_FILE = Path(__file__).with_name("tensorrt_10_3_ops.json")
# Ops the table lists as supported that we still refuse (see module doc, point 5).
DENIED_OPS = {
    "Attention": "ONNX Attention has no importer in TensorRT 10.3 (it appears around 10.15)",
    "Einsum": "Einsum is imported by a slow generic path; write MatMul/Transpose instead",
    "Loop": "control flow (Loop) is not allowed in a detector graph",
    "If": "control flow (If) is not allowed in a detector graph",
    "Scan": "control flow (Scan) is not allowed in a detector graph",
}
SEQUENCE_PREFIXES = ("Sequence", "SplitToSequence", "ConcatFromSequence")
DEFAULT_DOMAINS = {"", "ai.onnx"}
MHA_HEAD_DIM_RANGE = (16, 256)  # TensorRT fused MHA kernels: head size a multiple of 8 in this range


@dataclass
class Issue:
    """One finding. ``level`` is ``error`` (TensorRT 10.3 would reject or mis-run the graph) or ``note``."""

    level: str
    code: str
    message: str
    node: str = ""
    op: str = ""


@dataclass
class AttentionChain:
    """A ``MatMul -> Softmax -> MatMul`` chain found in the graph."""

    softmax: str  # name of the Softmax node (its scope names the module, e.g. ``/fine0/Softmax``)
    head_dim: int | None  # contracted dimension of the first MatMul, from shape inference
    q_scaled: bool  # the first MatMul's left input is ``Mul(x, constant)``
    k_scaled: bool  # ... and its right input too
    fused_form: bool  # q_scaled and k_scaled and head_dim a multiple of 8 within MHA_HEAD_DIM_RANGE


@dataclass
class CheckReport:
    """Result of :func:`check_onnx`. ``ok`` is true when there is no error (notes are allowed)."""

    path: str
    opset: int | None
    ops: dict[str, int] = field(default_factory=dict)
    attention: list[AttentionChain] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    tensorrt_version: str = ""

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def summary(self) -> str:
        """Human-readable report, one finding per line."""
        verdict = "PASS" if self.ok else "FAIL"
        lines = [
            f"{verdict}: {self.path} — TensorRT {self.tensorrt_version} offline check, opset {self.opset}, "
            f"{sum(self.ops.values())} nodes, {len(self.ops)} op types",
        ]
        for a in self.attention:
            form = "fused-MHA form" if a.fused_form else "NOT in fused-MHA form"
            lines.append(
                f"  attention {a.softmax}: head dim {a.head_dim}, scale on Q {a.q_scaled}, on K {a.k_scaled} -> {form}"
            )
        for i in self.issues:
            where = f" [{i.op} {i.node}]" if i.node or i.op else ""
            lines.append(f"  {i.level}: {i.code}{where}: {i.message}")
        return "\n".join(lines)


@lru_cache(maxsize=1)
def load_allowlist() -> dict[str, Any]:
    """The TensorRT 10.3 operator table shipped with the package (``tensorrt_10_3_ops.json``)."""
    return json.loads(OPS_FILE.read_text(encoding="utf-8"))


def _attr(node, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _check_attributes(node, issues: list[Issue]) -> None:
    """AveragePool and Resize attribute rules (module doc, point 6)."""
    if node.op_type == "AveragePool":
        if _attr(node, "ceil_mode", 0):
            issues.append(Issue("error", "avgpool-ceil-mode", "ceil_mode=1 pools differently in TensorRT; use floor "
                                "mode (ceil_mode=0)", node.name, node.op_type))
        dil = _attr(node, "dilations")
        if dil and any(d != 1 for d in dil):
            issues.append(Issue("error", "avgpool-dilations", f"dilations {list(dil)} are not supported by TensorRT",
                                node.name, node.op_type))
        pads = _attr(node, "pads")
        auto_pad = _attr(node, "auto_pad", "NOTSET")
        if (pads and any(pads)) or auto_pad not in ("NOTSET", "VALID"):
            issues.append(Issue("error", "avgpool-padding", f"padding (pads={list(pads or [])}, auto_pad={auto_pad}) "
                                "averages differently in TensorRT; pool without padding", node.name, node.op_type))
    elif node.op_type == "Resize":
        mode = _attr(node, "mode", "nearest")
        ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
        nearest = _attr(node, "nearest_mode", "round_prefer_floor")
        if (mode, ctm, nearest) != ("nearest", "asymmetric", "floor"):
            issues.append(Issue("error", "resize-mode", f"Resize mode={mode}, coordinate_transformation_mode={ctm}, "
                                f"nearest_mode={nearest}; only nearest/asymmetric/floor is accepted", node.name,
                                node.op_type))


def _is_const(name: str, producers: dict, initializers: set[str], shapes: dict) -> bool:
    """Whether tensor ``name`` is known before run time: an initializer, a ``Constant``, the ``Shape`` of a tensor of
    static shape, or computed from those alone (TensorRT folds such subgraphs; an export without onnxslim leaves
    SDPA's scale as ``Sqrt(Div(1, Sqrt(Cast(Shape(q)[-1]))))``). Each tensor of the subgraph is visited once."""
    todo, seen = [name], set()
    while todo:
        t = todo.pop()
        if t in seen or t in initializers:
            continue
        seen.add(t)
        p = producers.get(t)
        if p is None or p.op_type.startswith("Random"):  # a graph input, or not deterministic
            return False
        if p.op_type == "Shape":
            dims = _shape_of(p.input[0], shapes)
            if dims is None or None in dims or 0 in dims:
                return False
        elif p.op_type != "Constant":
            if not p.input:
                return False
            todo.extend(i for i in p.input if i)
    return True


def _scaled(name: str, producers: dict, initializers: set[str], shapes: dict) -> bool:
    """Whether tensor ``name`` is ``Mul(x, constant)`` (the scale folded onto Q or K)."""
    p = producers.get(name)
    return p is not None and p.op_type == "Mul" and any(_is_const(i, producers, initializers, shapes) for i in p.input)


def _shape_of(name: str, shapes: dict) -> list[int | None] | None:
    t = shapes.get(name)
    if t is None or not t.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.type.tensor_type.shape.dim]


def _attention_chains(graph, shapes: dict) -> list[AttentionChain]:
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    initializers = {t.name for t in graph.initializer}
    chains = []
    for n in graph.node:
        if n.op_type != "Softmax":
            continue
        first = producers.get(n.input[0])
        if first is None or first.op_type != "MatMul":
            continue
        if not any(c.op_type == "MatMul" and c.input[0] == n.output[0] for c in consumers.get(n.output[0], [])):
            continue
        a_shape = _shape_of(first.input[0], shapes)
        head_dim = a_shape[-1] if a_shape else None
        q_s = _scaled(first.input[0], producers, initializers, shapes)
        k_s = _scaled(first.input[1], producers, initializers, shapes)
        lo, hi = MHA_HEAD_DIM_RANGE
        fused = q_s and k_s and head_dim is not None and head_dim % 8 == 0 and lo <= head_dim <= hi
        chains.append(AttentionChain(n.name, head_dim, q_s, k_s, fused))
    return chains


def check_onnx(model: str | Path | Any, attention: str = "report", opset_max: int | None = None) -> CheckReport:
    """Run the offline TensorRT 10.3 check on an ONNX file path (or a loaded ``onnx.ModelProto``).

    Args:
        model: path of the ``.onnx`` file, or a ``ModelProto``.
        attention: ``"report"`` (attention chains not in fused-MHA form are notes) or ``"require"`` (errors).
        opset_max: highest default-domain opset accepted; default: the table's (20 for TensorRT 10.3).
    """
    import onnx

    if attention not in {"report", "require"}:
        raise ValueError(f"attention must be 'report' or 'require', got {attention!r}")
    table = load_allowlist()
    opset_max = table["opset_max"] if opset_max is None else opset_max
    path = str(model) if isinstance(model, (str, Path)) else "<ModelProto>"
    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    report = CheckReport(path=path, opset=None, tensorrt_version=table["tensorrt_version"])
    issues = report.issues

    # 1. full checker (a path lets it handle models over 2 GB with external data)
    try:
        onnx.checker.check_model(str(model) if isinstance(model, (str, Path)) else proto, full_check=True)
    except Exception as e:  # onnx raises ValidationError / InferenceError subclasses; report them all the same way
        issues.append(Issue("error", "onnx-checker", f"onnx.checker (full_check) failed: {str(e).strip()[:500]}"))

    # 2. strict shape inference
    shapes: dict = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
        g = inferred.graph
        shapes = {v.name: v for v in [*g.value_info, *g.input, *g.output]}
    except Exception as e:
        issues.append(Issue("error", "shape-inference", f"strict shape inference failed: {str(e).strip()[:500]}"))

    # 3. opset of the default domain, foreign domains
    for imp in proto.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            report.opset = int(imp.version)
    if report.opset is None:
        issues.append(Issue("error", "opset-missing", "the model imports no default-domain opset"))
    elif not table["opset_min"] <= report.opset <= opset_max:
        issues.append(Issue("error", "opset", f"default-domain opset {report.opset} is outside "
                            f"{table['opset_min']}..{opset_max} (TensorRT {table['tensorrt_version']}'s parser); "
                            f"re-export with opset={min(max(report.opset, table['opset_min']), opset_max)}"))

    # 4-6. op by op (functions and subgraphs are not expected; a graph attribute is reported by its node's op type)
    supported = table["supported"]
    for node in proto.graph.node:
        report.ops[node.op_type] = report.ops.get(node.op_type, 0) + 1
        if node.domain not in DEFAULT_DOMAINS:
            issues.append(Issue("error", "foreign-domain", f"op of domain '{node.domain}' needs a TensorRT plugin",
                                node.name, node.op_type))
            continue
        if node.op_type in DENIED_OPS:
            issues.append(Issue("error", "denied-op", DENIED_OPS[node.op_type], node.name, node.op_type))
        elif node.op_type.startswith(SEQUENCE_PREFIXES):
            issues.append(Issue("error", "sequence-op", "sequence ops are not supported by TensorRT", node.name,
                                node.op_type))
        elif node.op_type not in supported:
            issues.append(Issue("error", "unsupported-op", f"not in the TensorRT {table['tensorrt_version']} operator "
                                f"table ({table['source']})", node.name, node.op_type))
        _check_attributes(node, issues)
    report.ops = dict(sorted(report.ops.items()))

    # 7. attention form
    report.attention = _attention_chains(proto.graph, shapes)
    for a in report.attention:
        if not a.fused_form:
            level = "error" if attention == "require" else "note"
            issues.append(Issue(level, "attention-form", f"head dim {a.head_dim}, scale on Q {a.q_scaled}, on K "
                                f"{a.k_scaled}: TensorRT's fused-MHA pass may not match it", a.softmax, "Softmax"))
    return report


class CheckOnnxInputError(FineYoloError, ValueError):
    """The file to check does not exist."""

    exit_code = 2


def _run(args: dict, extra: dict) -> int:
    path = Path(str(args["model"]))
    if not path.is_file():
        raise CheckOnnxInputError(f"model={path}: no such file")
    report = check_onnx(path, attention=str(args["attention"]), opset_max=int(args["opset_max"]) or None)
    print(report.summary())
    if args["json"]:
        Path(str(args["json"])).write_text(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1


COMMAND = Command(
    options={
        "model": Option("", "the ONNX file (also accepted as the first bare argument)", required=True),
        "attention": Option("report", "require: fail unless FINE's attention has the fused-MHA form",
                            choices=("report", "require")),
        "opset_max": Option(0, "highest opset allowed (0: TensorRT 10.3's, 20)"),
        "json": Option("", "write the report as JSON here"),
    },
    run=_run,
    example="fine-yolo check-onnx yolov8s-fine.onnx attention=require",
    positional="model",
)
