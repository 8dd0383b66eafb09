"""``fine-yolo export``: ultralytics' own ``model.export`` for FINE models, with TensorRT made explicit.

Everything is ultralytics' exporter (``YOLO(model).export(**kwargs)``); this wrapper adds only what FINE users need
on top of it:

* ``model=yolov8s-fine.yaml`` works with the start-up hook disabled (importing fine_yolo registers FINE).
* ``format=engine`` (TensorRT; ``half=True`` FP16, ``int8=True data=<dataset YAML>`` INT8 calibration, ``workspace=``
  GiB, ``device=dla:0`` DLA) is checked *before* anything runs: without a CUDA GPU, without the ``tensorrt`` package,
  or with a DLA core the GPU does not have, it ends with one sentence saying so and what to run instead (ultralytics
  would raise ``Invalid CUDA 'device=0' requested`` or try to pip-install TensorRT; plain ``yolo export format=engine``
  keeps that upstream behaviour, for FINE models too). Then the ONNX graph is exported
  and put through the offline TensorRT 10.3 check (:mod:`fine_yolo.export.trt_check`) so an incompatible graph fails
  in seconds, not after a long engine build. ``plain=True`` also writes the bare engine (``.plan``, header removed)
  that ``trtexec --loadEngine`` accepts.
* ``format=onnx`` runs the same offline check on the result and prints it. ultralytics' CPU FP16 conversion
  (``onnxruntime.transformers.float16``, ``keep_io_types=True``) appends the input/output Casts at the end of the node
  list, which ``onnx.checker`` rejects as not topologically sorted; for FINE models the glue's
  ``Exporter.export_onnx`` wrapper re-sorts the nodes (same graph, :mod:`fine_yolo.glue.onnx_order`) so the file is
  valid ONNX, for ``yolo export`` too.
* FINE blocks are recorded in their format's form (:func:`fine_yolo.nn.fine.form_for`: ``conv`` for ONNX and
  TensorRT, ``tokens`` otherwise), set here explicitly, as the hook's ``export_form`` seam does for ``yolo export``.
* ``half=`` / ``int8=`` are passed as ultralytics 8.4's ``quantize=16|8`` when that argument exists (no deprecation
  warning), as themselves on older releases.

Every other ``key=value`` goes to ``model.export`` unchanged (``imgsz``, ``dynamic``, ``batch``, ``opset``,
``simplify``, ``nms``, ...). Python: :func:`export_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fine_yolo.args import Command, Option
from fine_yolo.errors import FineYoloError
from fine_yolo.export.preflight import ENGINE_ALIASES, engine_preflight
from fine_yolo.nn.fine import block_form, form_for


class ExportCheckError(FineYoloError, RuntimeError):
    """The exported ONNX graph fails the offline TensorRT check; the message holds the check's report."""

    def __init__(self, report: str) -> None:
        super().__init__(f"the ONNX graph fails the offline TensorRT check, no engine built:\n{report}")


class ExportArgumentError(FineYoloError, ValueError):
    """Export arguments that cannot work together (e.g. int8 without calibration data)."""

    exit_code = 2


def precision_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Translate half/int8 to ultralytics 8.4's ``quantize`` when it exists (older releases take half/int8)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    kw = dict(kwargs)
    if "quantize" not in DEFAULT_CFG_DICT or "quantize" in kw:
        return kw
    half, int8 = kw.pop("half", None), kw.pop("int8", None)
    if int8:
        kw["quantize"] = 8
    elif half:
        kw["quantize"] = 16
    return kw


def _is_int8(kwargs: dict[str, Any]) -> bool:
    return bool(kwargs.get("int8")) or str(kwargs.get("quantize", "")).lower() in {"8", "int8", "w8a8"}


def export_model(model: str, format: str = "onnx", check: bool = True, plain: bool = False, verbose: bool = True,
                 **kwargs: Any) -> Path:
    """Export ``model`` (YAML name, ``.pt``) with ultralytics; return the exported file's path.

    Args:
        model: anything ``YOLO(model)`` loads (``yolov8s-fine.yaml``, ``runs/.../best.pt``).
        format: any ultralytics format; ``engine``/``tensorrt``/``trt`` get the TensorRT handling of the module doc.
        check: run the offline TensorRT check on the ONNX graph (``onnx`` and ``engine``).
        plain: for ``engine``, also write the header-less ``.plan`` beside the ``.engine``.
        verbose: print the check's report.
        **kwargs: passed to ``model.export`` (``imgsz``, ``half``, ``int8``, ``data``, ``workspace``, ``device``, ...).

    Raises:
        EngineUnavailableError: ``format=engine`` on a machine that cannot build engines.
        ExportCheckError: ``format=engine`` and the ONNX graph fails the offline check.
        ExportArgumentError: ``int8`` without ``data``.
    """
    fmt = str(format).lower()
    is_engine = fmt in ENGINE_ALIASES
    if is_engine:
        fmt = "engine"
        engine_preflight(model, kwargs.get("device"), kwargs.get("imgsz"))
        kwargs.setdefault("device", 0)
    if _is_int8(kwargs) and fmt in {"engine", "onnx", "openvino"} and not kwargs.get("data"):
        raise ExportArgumentError("int8=True calibrates on images: pass data=<dataset YAML> (ultralytics warns "
                                  "below 300)")
    from ultralytics import YOLO

    yolo = YOLO(model)
    kwargs = precision_kwargs(kwargs)
    if is_engine and check:
        # The graph TensorRT will parse: same shape arguments, FP32 (ultralytics builds FP16/INT8 from an FP32 ONNX).
        onnx_kw = {k: v for k, v in kwargs.items() if k in {"imgsz", "dynamic", "batch", "opset", "simplify", "nms"}}
        with block_form(yolo.model, form_for("onnx")):
            report = _check(Path(yolo.export(format="onnx", device="cpu", **onnx_kw)).resolve(), verbose)
        if not report.ok:
            raise ExportCheckError(report.summary())
    with block_form(yolo.model, form_for(fmt)):  # what the hook's export_form seam sets too, said here explicitly
        out = Path(yolo.export(format=fmt, **kwargs)).resolve()  # ultralytics returns it relative to the cwd
    if fmt == "onnx" and out.suffix == ".onnx" and check:  # node order already repaired by the glue's export_onnx
        _check(out, verbose)
    if is_engine and plain:
        from fine_yolo.export.trt_runtime import strip_engine_header

        plan = strip_engine_header(out)
        if verbose:
            print(f"bare engine for trtexec: {plan}")
    return out


def _check(path: Path, verbose: bool):
    from fine_yolo.export.trt_check import check_onnx

    report = check_onnx(path)
    if verbose:
        print(report.summary())
    return report


def _run(args: dict[str, Any], extra: dict[str, Any]) -> int:
    out = export_model(str(args["model"]), str(args["format"]), check=bool(args["check"]), plain=bool(args["plain"]),
                       **extra)
    print(out)
    return 0


COMMAND = Command(
    options={
        "model": Option("", "anything YOLO() loads: a FINE YAML name or a checkpoint", required=True),
        "format": Option("onnx", "any ultralytics export format; engine/tensorrt/trt: TensorRT (module doc)"),
        "check": Option(True, "run the offline TensorRT 10.3 check on the ONNX graph (onnx and engine)"),
        "plain": Option(False, "format=engine: also write the header-less .plan for trtexec"),
    },
    run=_run,
    example="fine-yolo export model=yolov8s-fine.yaml format=onnx imgsz=640 half=True",
    description="ultralytics' own export; format=engine is checked before it starts, the ONNX graph after.",
    passthrough="any `yolo export` argument (imgsz, dynamic, half, int8, data, workspace, device, ...)",
)
