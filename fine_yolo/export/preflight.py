"""Whether a TensorRT engine can be built on this machine, answered before anything runs (no TensorRT import
unless CUDA is present).

``format=engine`` needs an NVIDIA GPU, CUDA and the TensorRT Python package (and, for ``device=dla:N``, a GPU with
that DLA core). Where one is missing, :func:`engine_preflight` raises :class:`EngineUnavailableError` with one
sentence saying why and what to run instead — used by ``fine-yolo export``, ``fine-yolo bench`` and ``fine-yolo int8``
(plain ``yolo export format=engine`` is ultralytics' own, unpatched).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from fine_yolo.devices import dla_core
from fine_yolo.errors import FineYoloError

ENGINE_ALIASES = {"engine", "tensorrt", "trt"}


class EngineUnavailableError(FineYoloError, RuntimeError):
    """TensorRT export cannot run on this machine; the message is one sentence saying why and what to do."""


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
    core = dla_core(dev)
    if core is not None and importlib.util.find_spec("tensorrt") is not None:
        import tensorrt as trt

        n = trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores
        if core >= n:
            raise EngineUnavailableError(
                f"device={dev} asks for DLA core {core} but this GPU has {n} DLA core(s) (Jetson Orin Nano has none; "
                "Orin NX and AGX Orin have them): drop device=dla:N to build for the GPU."
            )


