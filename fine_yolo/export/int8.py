"""Post-training INT8 on the CPU — ONNX Runtime QDQ and OpenVINO NNCF — with FINE kept in higher precision on request.

Both quantisers start from ultralytics' own FP32 exports (``format=onnx simplify=True`` / ``format=openvino``) and
calibrate on the same images: :func:`calibration_arrays` letterboxes ``calib`` images of a split (``train`` by
default: calibrating on val would tune the ranges on the images the accuracy is measured on) to the export size,
exactly as ultralytics' predictor feeds a static-shape export (RGB, CHW, /255).

* :func:`quantize_onnx` — ``onnxruntime.quantization.quantize_static``, QDQ format (the explicit-quantisation form
  TensorRT's ONNX parser consumes), symmetric INT8 activations and per-channel symmetric INT8 weights (TensorRT
  accepts only zero points of 0), MinMax calibration. Quantised: the weighted ops (Conv, MatMul, Gemm) — ultralytics'
  own rule for ``format=onnx int8=True``, which keeps the box/score decode in float (one scale spanning pixels and
  probabilities would round every score to 0); everything else is in ``nodes_to_exclude``.
* :func:`quantize_openvino` — ``nncf.quantize`` with ultralytics' ``int8=True`` settings: preset MIXED (symmetric
  weights, asymmetric activations), the head's Sigmoid and box decode in the ignored scope.

``keep=`` names FINE node groups to leave in floating point: ``fine<i>`` for the FINE of fusion row i (module
``model.<i>.fine``; yolov8: ``fine11``, ``fine14``), ``fine`` for all of them, ``none``. In ONNX Runtime they join
``nodes_to_exclude``, in NNCF the ``IgnoredScope``. :func:`fine_nodes` lists the nodes of each group in an exported
graph (ONNX ``/model.11/fine/...``, OpenVINO ``__module.model.11.fine/...``), so every excluded name exists in the
graph it is applied to.

TensorRT. An engine built from the QDQ file runs INT8 exactly where the Q/DQ pairs are and FP16 elsewhere, so
:func:`engine_from_qdq` (ultralytics' ``onnx2engine`` on that file: it detects the Q/DQ nodes and builds an
explicitly quantised engine, no calibrator) *is* the recipe for ``format=engine``. For the implicit path
(``format=engine int8=True data=...``, TensorRT's own calibrator), :func:`trt_layer_precisions` gives the
``--layerPrecisions`` list (ONNX node names are the parser's layer names) and :func:`apply_layer_precisions` applies
it to an ``INetworkDefinition`` before the build (with ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fine_yolo.errors import FineYoloError, UsageError
from fine_yolo.export.openvino import fine_group, openvino_xml

QUANTIZED_OPS = frozenset({"Conv", "MatMul", "Gemm"})  # ultralytics' onnx_int8_quantize rule


class Int8Error(FineYoloError, RuntimeError):
    """A model or calibration set that cannot be quantised as asked; the message names the file or key."""


# --- calibration -----------------------------------------------------------------------------------------------------

def calibration_files(data: str | Path, split: str = "train", n: int = 0, seed: int = 0) -> list[Path]:
    """``n`` image files of ``split`` (0: all), a seeded random subset in the split's own order."""
    import numpy as np

    from fine_yolo.data.coco_gt import split_images

    files = split_images(data, split)
    if not files:
        raise Int8Error(f"data {data}: split '{split}' has no images to calibrate on")
    if 0 < n < len(files):
        keep = np.sort(np.random.default_rng(seed).choice(len(files), size=n, replace=False))
        files = [files[i] for i in keep]
    return list(files)


def calibration_arrays(files: Sequence[str | Path], imgsz: int) -> list[Any]:
    """Each image letterboxed to ``imgsz`` square (ultralytics' LetterBox, ``auto=False``) as (1, 3, H, W) float32
    RGB in [0, 1]: what ``predict`` feeds a static-shape export."""
    import cv2
    import numpy as np
    from ultralytics.data.augment import LetterBox

    box = LetterBox(new_shape=(imgsz, imgsz), auto=False, stride=32)
    out = []
    for f in files:
        img = cv2.imread(str(f))
        if img is None:
            raise Int8Error(f"calibration image {f}: cannot read")
        x = box(image=img)[..., ::-1].transpose(2, 0, 1)  # BGR HWC -> RGB CHW
        out.append(np.ascontiguousarray(x, dtype=np.float32)[None] / 255.0)
    return out


# --- FINE node groups -------------------------------------------------------------------------------------------------

def group_names(names: Iterable[str]) -> dict[str, list[str]]:
    """Node names grouped by the FINE module they belong to (``fine11``, ``fine14``, ...); others are left out."""
    groups: dict[str, list[str]] = {}
    for name in names:
        g = fine_group(name)
        if g:
            groups.setdefault(g, []).append(name)
    return dict(sorted(groups.items()))


def fine_nodes(model: Any) -> dict[str, list[str]]:
    """FINE's nodes per group in an exported graph: an ONNX path/ModelProto or an OpenVINO xml/folder/``ov.Model``."""
    if isinstance(model, (str, Path)) and str(model).endswith(".onnx"):
        import onnx

        model = onnx.load(str(model), load_external_data=False)
    if hasattr(model, "graph"):
        return group_names(n.name for n in model.graph.node)
    if isinstance(model, (str, Path)):
        import openvino as ov

        model = ov.Core().read_model(str(openvino_xml(model)))
    return group_names(op.get_friendly_name() for op in model.get_ordered_ops())


def resolve_keep(keep: str | Sequence[str], groups: dict[str, list[str]]) -> list[str]:
    """Group names from ``keep`` (``"fine"``: all, ``"none"``/``""``: none, or a list such as ``"fine11,fine14"``)."""
    items = [k.strip() for k in (keep.split(",") if isinstance(keep, str) else keep) if k.strip()]
    if not items or items == ["none"]:
        return []
    if items == ["fine"]:
        return list(groups)
    unknown = [k for k in items if k not in groups]
    if unknown:
        known = ", ".join(["fine", "none", *groups]) if groups else "none (this graph has no FINE node)"
        raise UsageError(f"keep={','.join(items)}: no FINE group {', '.join(unknown)} in the graph (known: {known})")
    return items


# --- ONNX Runtime -----------------------------------------------------------------------------------------------------

class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over in-memory arrays."""

    def __init__(self, input_name: str, arrays: Sequence[Any]) -> None:
        self.input_name, self.arrays, self.i = input_name, list(arrays), 0

    def get_next(self) -> dict[str, Any] | None:
        if self.i >= len(self.arrays):
            return None
        self.i += 1
        return {self.input_name: self.arrays[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


def onnx_exclusions(model: Any, keep_groups: Sequence[str] = ()) -> list[str]:
    """``nodes_to_exclude``: every node that is not Conv/MatMul/Gemm, plus every node of the kept FINE groups."""
    groups = fine_nodes(model)
    kept = {n for g in keep_groups for n in groups[g]}
    return [n.name for n in model.graph.node if n.op_type not in QUANTIZED_OPS or n.name in kept]


def quantize_onnx(fp32: str | Path, out: str | Path, arrays: Sequence[Any], keep: str | Sequence[str] = "none",
                  per_channel: bool = True, symmetric: bool = True) -> dict[str, Any]:
    """QDQ INT8 copy of ``fp32`` at ``out`` (module doc); returns what was kept and quantised.

    ultralytics' metadata (names, stride, imgsz) is copied over, so ``YOLO(out)`` predicts and validates like the
    FP32 file.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if not arrays:
        raise Int8Error("no calibration images")
    model = onnx.load(str(fp32))
    keep_groups = resolve_keep(keep, fine_nodes(model))
    exclude = onnx_exclusions(model, keep_groups)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(fp32), str(out), _Reader(model.graph.input[0].name, arrays), quant_format=QuantFormat.QDQ,
        per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude,
        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
    )
    q = onnx.load(str(out))
    have = {p.key for p in q.metadata_props}
    for p in model.metadata_props:
        if p.key not in have:
            q.metadata_props.add(key=p.key, value=p.value)
    onnx.save(q, str(out))
    n_q = sum(n.op_type == "QuantizeLinear" for n in q.graph.node)
    return {"path": str(out), "kept": keep_groups, "excluded_fine_nodes": sorted(set(exclude) & {
        n for g in keep_groups for n in fine_nodes(model)[g]}), "quantize_linear_nodes": n_q}


# --- OpenVINO / NNCF --------------------------------------------------------------------------------------------------

def head_ignored(ov_model: Any) -> list[str]:
    """ultralytics' ``int8=True`` ignored scope for a Detect head: every Sigmoid, and the head's own decode nodes
    (named ``<head>/...`` or ``<head>.dfl...``, the head being the module holding the last Sigmoid)."""
    ops = ov_model.get_ordered_ops()
    sigmoids = [op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"]
    if not sigmoids:
        return []
    head = sigmoids[-1].split("/", 1)[0]
    return [op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"
            or op.get_friendly_name().startswith((f"{head}/", f"{head}.dfl"))]


def quantize_openvino(fp32: str | Path, out_dir: str | Path, arrays: Sequence[Any], keep: str | Sequence[str] = "none",
                      ) -> dict[str, Any]:
    """NNCF INT8 copy of the IR ``fp32`` (folder or xml) in ``out_dir`` (module doc); returns what was kept.

    ``metadata.yaml`` (ultralytics' names, stride, imgsz) is copied beside the new xml.
    """
    import logging

    import nncf
    import openvino as ov

    if not arrays:
        raise Int8Error("no calibration images")
    nncf.set_log_level(logging.WARNING)  # NNCF logs one INFO line per node it leaves alone
    xml = openvino_xml(fp32)
    model = ov.Core().read_model(str(xml))
    groups = fine_nodes(model)
    keep_groups = resolve_keep(keep, groups)
    ignored = head_ignored(model) + [n for g in keep_groups for n in groups[g]]
    q = nncf.quantize(model, nncf.Dataset(list(arrays)), preset=nncf.QuantizationPreset.MIXED,
                      subset_size=len(arrays), ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / xml.name
    ov.save_model(q, str(out), compress_to_fp16=False)
    if (xml.parent / "metadata.yaml").is_file():
        shutil.copy(xml.parent / "metadata.yaml", out_dir / "metadata.yaml")
    n_fq = sum(op.get_type_name() == "FakeQuantize" for op in q.get_ops())
    return {"path": str(out_dir), "kept": keep_groups, "ignored": len(ignored), "fake_quantize_nodes": n_fq}


# --- TensorRT ---------------------------------------------------------------------------------------------------------

def trt_layer_precisions(onnx_path: str | Path, keep: str | Sequence[str] = "fine", precision: str = "fp16",
                         ) -> list[str]:
    """``name:precision`` for every node of the kept FINE groups that TensorRT turns into a layer (shape-only
    Reshape/Squeeze/Transpose included, as the parser names them), for ``trtexec --layerPrecisions=...
    --precisionConstraints=obey`` or :func:`apply_layer_precisions`."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    groups = fine_nodes(model)
    return [f"{n}:{precision}" for g in resolve_keep(keep, groups) for n in groups[g]]


def apply_layer_precisions(network: Any, layer_precisions: Sequence[str], trt: Any) -> list[str]:
    """Set ``layer.precision`` and its output types for each ``name:precision`` found in ``network`` (a TensorRT
    ``INetworkDefinition``; ``trt`` the ``tensorrt`` module); return the layer names set. The builder config then
    needs ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS`` (or ``PREFER_...``)."""
    wanted = dict(lp.rsplit(":", 1) for lp in layer_precisions)
    dtypes = {"fp32": trt.float32, "fp16": trt.float16, "bf16": getattr(trt, "bfloat16", None)}
    done = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        p = wanted.get(layer.name)
        if p is None:
            continue
        if dtypes.get(p) is None:
            raise UsageError(f"layer precision '{layer.name}:{p}': precision must be fp32, fp16 or bf16")
        layer.precision = dtypes[p]
        for j in range(layer.num_outputs):
            layer.set_output_type(j, dtypes[p])
        done.append(layer.name)
    return done


def engine_from_qdq(qdq_onnx: str | Path, imgsz: int, device: str = "0", workspace: float | None = None) -> Path:
    """Build an explicitly quantised TensorRT engine from a QDQ file (INT8 where Q/DQ are, FP16 elsewhere) with
    ultralytics' ``onnx2engine``, header and metadata included; stops first, with one sentence, where no engine can
    be built (:func:`fine_yolo.export.preflight.engine_preflight`)."""
    import onnx

    from fine_yolo.export.preflight import engine_preflight

    engine_preflight(str(qdq_onnx), device, imgsz)
    from ultralytics.utils.export.engine import onnx2engine

    meta = {p.key: p.value for p in onnx.load(str(qdq_onnx), load_external_data=False).metadata_props}
    out = Path(qdq_onnx).with_suffix(".engine")
    onnx2engine(str(qdq_onnx), out, workspace=workspace, quantize=8, shape=(1, 3, imgsz, imgsz), metadata=meta)
    return out
