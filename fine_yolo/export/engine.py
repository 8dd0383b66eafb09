"""``fine-yolo export``: ultralytics' own ``model.export`` for FINE models, with TensorRT made explicit.

Everything is ultralytics' exporter (``YOLO(model).export(**kwargs)``); this wrapper adds only what FINE users need
on top of it:

* FINE is registered first, so ``model=yolov8s-fine.yaml`` works with the start-up hook disabled.
* ``format=engine`` (TensorRT; ``half=True`` FP16, ``int8=True data=<dataset YAML>`` INT8 calibration, ``workspace=``
  GiB, ``device=dla:0`` DLA) is checked *before* anything runs: without a CUDA GPU, without the ``tensorrt`` package,
  or with a DLA core the GPU does not have, it ends with one sentence saying so and what to run instead (ultralytics
  would raise ``Invalid CUDA 'device=0' requested`` or try to pip-install TensorRT). Then the ONNX graph is exported
  and put through the offline TensorRT 10.3 check (:mod:`fine_yolo.export.trt_check`) so an incompatible graph fails
  in seconds, not after a long engine build. ``plain=True`` also writes the bare engine (``.plan``, header removed)
  that ``trtexec --loadEngine`` accepts.
* ``format=onnx`` runs the same offline check on the result and prints it. ultralytics' CPU FP16 conversion
  (``onnxruntime.transformers.float16``, ``keep_io_types=True``) appends the input/output Casts at the end of the node
  list, which ``onnx.checker`` rejects as not topologically sorted; the glue's ``Exporter.export_onnx`` wrapper
  re-sorts the nodes (same graph, :func:`repair_onnx_order`) so the file is valid ONNX, for ``yolo export`` too.
* ``half=`` / ``int8=`` are passed as ultralytics 8.4's ``quantize=16|8`` when that argument exists (no deprecation
  warning), as themselves on older releases.

Every other ``key=value`` goes to ``model.export`` unchanged (``imgsz``, ``dynamic``, ``batch``, ``opset``,
``simplify``, ``nms``, ...). Python: :func:`export_model`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

ENGINE_ALIASES = {"engine", "tensorrt", "trt"}


class EngineUnavailableError(RuntimeError):
    """TensorRT export cannot run on this machine; the message is one sentence saying why and what to do."""


class ExportCheckError(RuntimeError):
    """The exported ONNX graph fails the offline TensorRT check; the message holds the check's report."""


def _instead(model: str, imgsz: Any) -> str:
    size = f" imgsz={imgsz}" if imgsz else ""
    return (
        f"export ONNX here with `fine-yolo export model={model} format=onnx{size}` and build the engine on the "
        f"target board with `fine-yolo export model={model} format=engine{size} half=True` "
        "(or `trtexec --onnx=<file>.onnx --fp16`)"
    )


def engine_preflight(model: str, device: Any = None, imgsz: Any = None, tensorrt_installable: bool = False) -> None:
    """Raise :class:`EngineUnavailableError` when a TensorRT engine cannot be built here (no GPU, no TensorRT, no DLA).

    ``tensorrt_installable``: ultralytics will pip-install TensorRT itself (online, ``YOLO_AUTOINSTALL`` on), so a
    missing package is not an error. Imports torch (already loaded by ultralytics) but never TensorRT unless CUDA is
    present.
    """
    import torch

    dev = "" if device is None else str(device).strip().lower()
    if dev in {"cpu", "mps"}:
        raise EngineUnavailableError(
            f"format=engine builds a TensorRT engine on an NVIDIA GPU and cannot use device={dev}: "
            + _instead(model, imgsz) + "."
        )
    if not torch.cuda.is_available():
        raise EngineUnavailableError(
            "format=engine needs an NVIDIA GPU with CUDA and the TensorRT Python package, and this machine has no "
            "CUDA GPU (torch.cuda.is_available() is False): " + _instead(model, imgsz) + "."
        )
    if importlib.util.find_spec("tensorrt") is None and not tensorrt_installable:
        raise EngineUnavailableError(
            "format=engine needs the TensorRT Python package, which is not installed here (on a Jetson it comes with "
            "JetPack: `sudo apt install python3-libnvinfer`; on a desktop GPU: `pip install tensorrt`): "
            + _instead(model, imgsz) + "."
        )
    if dev.startswith("dla") and importlib.util.find_spec("tensorrt") is not None:
        import tensorrt as trt

        core_text = dev.rsplit(":", 1)[-1] if ":" in dev else "0"
        if not core_text.isdigit():
            raise EngineUnavailableError(f"device={device} is not a DLA core: write dla:0 or dla:1.")
        core = int(core_text)
        n = trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores
        if core >= n:
            raise EngineUnavailableError(
                f"device={dev} asks for DLA core {core} but this GPU has {n} DLA core(s) (Jetson Orin Nano has none; "
                "Orin NX and AGX Orin have them): drop device=dla:N to build for the GPU."
            )


def toposort_onnx(model) -> bool:
    """Sort ``model.graph.node`` topologically in place (stable); return whether the order changed."""
    graph = model.graph
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in known for i in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # a cycle or a dangling input: leave the graph as it is, the checker reports it
            return False
        pending = rest
    if [id(n) for n in ordered] == [id(n) for n in graph.node]:
        return False
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
    return True


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
        ValueError: ``int8`` without ``data``.
    """
    from fine_yolo.ultralytics_glue import register

    register()
    fmt = str(format).lower()
    is_engine = fmt in ENGINE_ALIASES
    if is_engine:
        fmt = "engine"
        engine_preflight(model, kwargs.get("device"), kwargs.get("imgsz"))
        kwargs.setdefault("device", 0)
    if _is_int8(kwargs) and fmt in {"engine", "onnx"} and not kwargs.get("data"):
        raise ValueError("int8=True calibrates on images: pass data=<dataset YAML> (ultralytics warns below 300)")
    from ultralytics import YOLO

    yolo = YOLO(model)
    kwargs = precision_kwargs(kwargs)
    if is_engine and check:
        # The graph TensorRT will parse: same shape arguments, FP32 (ultralytics builds FP16/INT8 from an FP32 ONNX).
        onnx_kw = {k: v for k, v in kwargs.items() if k in {"imgsz", "dynamic", "batch", "opset", "simplify", "nms"}}
        report = _check(Path(yolo.export(format="onnx", device="cpu", **onnx_kw)).resolve(), verbose)
        if not report.ok:
            raise ExportCheckError(report.summary())
    out = Path(yolo.export(format=fmt, **kwargs)).resolve()  # ultralytics returns it relative to the cwd
    if fmt == "onnx" and out.suffix == ".onnx" and check:  # node order already repaired by the glue's export_onnx
        _check(out, verbose)
    if is_engine and plain:
        from fine_yolo.export.trt_runtime import strip_engine_header

        plan = strip_engine_header(out)
        if verbose:
            print(f"bare engine for trtexec: {plan}")
    return out


def repair_onnx_order(path: Path) -> bool:
    """Re-sort the nodes of the ONNX file at ``path`` in place when they are out of order; return whether it was."""
    import onnx

    if path.suffix != ".onnx" or not path.is_file():
        return False
    proto = onnx.load(str(path))
    if not toposort_onnx(proto):
        return False
    onnx.save(proto, str(path))
    return True


def _check(path: Path, verbose: bool):
    from fine_yolo.export.trt_check import check_onnx

    report = check_onnx(path)
    if verbose:
        print(report.summary())
    return report


def main(argv: list[str]) -> int:
    """``fine-yolo export model=M [format=onnx|engine|...] [check=True] [plain=False] [<any yolo export arg>=...]``."""
    from ultralytics.cfg import smart_value

    from fine_yolo.cli import UsageError, parse_kv

    own = {"model": "", "format": "onnx", "check": True, "plain": False}
    mine, passthrough = [], {}
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise UsageError(f"argument '{token}' is not key=value")
        if key in own:
            mine.append(token)
        else:
            passthrough[key] = smart_value(value)
    args = parse_kv(mine, own, required=("model",))
    try:
        out = export_model(str(args["model"]), str(args["format"]), check=bool(args["check"]),
                           plain=bool(args["plain"]), **passthrough)
    except ExportCheckError as e:
        print(f"fine-yolo export: the ONNX graph fails the offline TensorRT check, no engine built:\n{e}",
              file=sys.stderr)
        return 1
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(out)
    return 0
