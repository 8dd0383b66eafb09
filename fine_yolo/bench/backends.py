"""The timed backends — PyTorch, ONNX Runtime, OpenVINO, TensorRT — behind one shape: a callable returning milliseconds.

For each model a backend prepares two callables:

* ``network()``: one forward pass of the network alone, batch 1, input already on the device (a fixed random tensor;
  latency does not depend on the values), outputs left on the device. PyTorch and ONNX Runtime CPU are timed with
  ``perf_counter``; CUDA runs with CUDA events (PyTorch, TensorRT) or with ``perf_counter`` around ONNX Runtime's
  ``run_with_iobinding``, which synchronizes its stream before returning.
* ``e2e()``: ``YOLO(artifact).predict(image)`` on a decoded image in memory — ultralytics' own pre-processing
  (letterbox, normalize, upload), the network through its AutoBackend, and post-processing (NMS, rescale) — the
  latency an application sees. The image is ultralytics' bundled ``bus.jpg`` (810x1080), decoded once.

Both models of a comparison run in the same process with the same thread settings: ``threads`` sets
``torch.set_num_threads`` and ONNX Runtime's ``intra_op_num_threads`` (``inter_op_num_threads=1``, sequential
execution) for the network timing. ultralytics' own ONNX session (end-to-end timing) uses ONNX Runtime's defaults,
identical for both models.

OpenVINO (CPU) compiles the IR with ``INFERENCE_NUM_THREADS=threads``, one stream, latency mode and the requested
``precision`` hint (:mod:`fine_yolo.export.openvino`; ``default`` is the plugin's choice: bf16 on AMX CPUs), and
records the precision the plugin actually ran. Its end-to-end timing goes through ultralytics' own OpenVINO backend,
which compiles with the plugin's default precision, so it is timed only for ``precision=default``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fine_yolo.devices import cuda_index, is_cuda

FORMATS = ("torch", "onnx", "openvino", "engine")


@dataclass
class Prepared:
    """A model ready to time."""

    source: str  # what the user passed (YAML name, .pt, .onnx, .engine)
    artifact: str  # the file actually timed (the .onnx / .engine for those formats)
    network: Callable[[], float]
    e2e: Callable[[], float] | None
    info: dict[str, Any] = field(default_factory=dict)


def bench_image():
    """ultralytics' bundled ``bus.jpg`` decoded to a BGR array (what ``predict`` receives from ``cv2.imread``)."""
    import cv2
    from ultralytics.utils import ASSETS

    img = cv2.imread(str(ASSETS / "bus.jpg"))
    if img is None:
        raise FileNotFoundError(f"cannot read {ASSETS / 'bus.jpg'}")
    return img


def _e2e_runner(yolo, imgsz: int, device: str, half: bool) -> Callable[[], float]:
    """Time ``yolo.predict(image)``: ultralytics' pre-processing, network and post-processing."""
    from fine_yolo.export.engine import precision_kwargs

    img = bench_image()
    kw: dict[str, Any] = {"imgsz": imgsz, "device": device, "verbose": False, "save": False,
                          **precision_kwargs({"half": half})}
    sync = _cuda_sync(device)

    def run() -> float:
        sync()
        t0 = time.perf_counter()
        yolo.predict(img, **kw)
        sync()
        return (time.perf_counter() - t0) * 1e3

    return run


def _cuda_sync(device: str) -> Callable[[], None]:
    """``torch.cuda.synchronize`` on a CUDA device, a no-op on the CPU (resolved once, outside the timed region)."""
    if not is_cuda(device):
        return lambda: None
    import torch

    return torch.cuda.synchronize


def _detector(artifact: str):
    """``YOLO`` on an exported file (which carries no task of its own)."""
    from ultralytics import YOLO

    return YOLO(artifact, task="detect")


def prepare_torch(model: str, imgsz: int = 640, device: str = "cpu", half: bool = False, e2e: bool = True,
                  **_: Any) -> Prepared:
    """PyTorch eager: the fused (Conv+BN) detection model in eval mode, as ultralytics' predict runs it."""
    import torch
    from ultralytics import YOLO

    dev = torch.device(f"cuda:{cuda_index(device)}" if is_cuda(device) else "cpu")
    yolo = YOLO(model)
    net = yolo.model.fuse(verbose=False).eval().to(dev)  # the same model predict() runs (fusing again is a no-op)
    dtype = torch.float16 if half and dev.type == "cuda" else torch.float32
    net = net.to(dtype)
    x = torch.rand(1, 3, imgsz, imgsz, device=dev, dtype=dtype)
    if dev.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def network() -> float:
            with torch.inference_mode():
                start.record()
                net(x)
                end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
    else:

        def network() -> float:
            with torch.inference_mode():
                t0 = time.perf_counter()
                net(x)
                return (time.perf_counter() - t0) * 1e3

    info = {"backend": "torch", "device": str(dev), "dtype": str(dtype).replace("torch.", ""),
            "threads": torch.get_num_threads(), **_fine_form(net)}
    return Prepared(model, model, network, _e2e_runner(yolo, imgsz, device, half) if e2e else None, info)


def _fine_form(net) -> dict[str, str]:
    """``{"fine_form": ...}``: the form of eq. 5-7 that FINE's blocks run in (nothing for a model without FINE)."""
    from fine_yolo.nn.fine import FINE

    forms = sorted({m.form for m in net.modules() if isinstance(m, FINE)})
    return {"fine_form": ",".join(forms)} if forms else {}


def _export(model: str, fmt: str, out_dir: Path, **kwargs: Any) -> str:
    """Export with :func:`fine_yolo.export.engine.export_model` (which records FINE in the format's form,
    :func:`fine_yolo.nn.fine.form_for`) and move the file into ``out_dir``."""
    from fine_yolo.export.engine import export_model

    path = Path(export_model(model, fmt, check=False, verbose=False, **kwargs))
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / path.name
    if path.resolve() != dest.resolve():
        if dest.is_dir():  # an OpenVINO folder from an earlier run: move() would nest the new one inside it
            shutil.rmtree(dest)
        shutil.move(str(path), dest)
    return str(dest)


def prepare_onnx(model: str, imgsz: int = 640, device: str = "cpu", half: bool = False, threads: int = 1,
                 out_dir: str | Path = "runs/fine_bench", e2e: bool = True, **_: Any) -> Prepared:
    """ONNX Runtime, CPU or CUDA: a static-shape ONNX export (``simplify=True``) timed with a tuned session."""
    import numpy as np
    import onnxruntime as ort

    if model.endswith(".onnx"):
        path = model
    else:
        path = _export(model, "onnx", Path(out_dir), imgsz=imgsz, half=half, simplify=True, dynamic=False,
                       device="cpu")
    cuda = is_cuda(device)
    if cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError(f"device={device} asks for CUDA but onnxruntime has no CUDAExecutionProvider here "
                           f"(providers: {ort.get_available_providers()}); install onnxruntime-gpu or use device=cpu")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ([("CUDAExecutionProvider", {"device_id": cuda_index(device)})] if cuda else []) + [
        "CPUExecutionProvider"]
    sess = ort.InferenceSession(path, so, providers=providers)
    inp = sess.get_inputs()[0]
    dtype = np.float16 if "float16" in inp.type else np.float32
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32).astype(dtype)
    if cuda:
        binding = sess.io_binding()
        x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", cuda_index(device))
        binding.bind_ortvalue_input(inp.name, x_dev)
        for o in sess.get_outputs():
            binding.bind_output(o.name, "cuda", cuda_index(device))

        def network() -> float:
            t0 = time.perf_counter()
            sess.run_with_iobinding(binding)
            return (time.perf_counter() - t0) * 1e3
    else:
        feed = {inp.name: x}

        def network() -> float:
            t0 = time.perf_counter()
            sess.run(None, feed)
            return (time.perf_counter() - t0) * 1e3

    info = {"backend": "onnxruntime", "providers": sess.get_providers(), "intra_op_threads": int(threads),
            "dtype": str(np.dtype(dtype))}
    return Prepared(model, path, network, _e2e_runner(_detector(path), imgsz, device, half) if e2e else None, info)


def prepare_openvino(model: str, imgsz: int = 640, device: str = "cpu", half: bool = False, int8: bool = False,
                     data: str = "", threads: int = 1, precision: str = "default",
                     out_dir: str | Path = "runs/fine_bench", e2e: bool = True, **_: Any) -> Prepared:
    """OpenVINO CPU: a static-shape IR (ultralytics' export; ``half`` FP16 weights, ``int8`` NNCF with ``data``)
    compiled at ``precision`` with ``threads`` threads; ``info`` holds what the plugin really ran."""
    import numpy as np

    from fine_yolo.export.openvino import compile_openvino, is_openvino, openvino_xml, plugin_info, timer

    if is_cuda(device):
        raise RuntimeError(f"format=openvino times the CPU plugin; device={device} is a CUDA device (use device=cpu)")
    if is_openvino(model):
        path = str(openvino_xml(model).parent)
    else:
        kw: dict[str, Any] = {"imgsz": imgsz, "half": half and not int8, "int8": int8, "dynamic": False,
                              "device": "cpu"}
        if data:
            kw["data"] = data
        path = _export(model, "openvino", Path(out_dir) / ("int8" if int8 else "fp16" if half else "fp32"), **kw)
    compiled = compile_openvino(path, precision=precision, threads=threads)
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    info = {"backend": "openvino", "precision": precision, "threads": int(threads), **plugin_info(compiled)}
    e2e_run = _e2e_runner(_detector(path), imgsz, "cpu", False) if e2e and precision == "default" else None
    return Prepared(model, path, timer(compiled, x), e2e_run, info)


def prepare_engine(model: str, imgsz: int = 640, device: str = "0", half: bool = True, int8: bool = False,
                   data: str = "", workspace: float = 0.0, cuda_graph: bool = False,
                   out_dir: str | Path = "runs/fine_bench", e2e: bool = True, **_: Any) -> Prepared:
    """TensorRT: build the engine with ultralytics (unless an ``.engine`` is given) and run it with the runtime."""
    from fine_yolo.export.preflight import engine_preflight
    from fine_yolo.export.trt_runtime import TRTRunner, tensorrt_version

    if model.endswith((".engine", ".plan")):
        engine_preflight(model, device, imgsz)
        path = model
    else:
        kw: dict[str, Any] = {"imgsz": imgsz, "device": device, "half": half and not int8, "int8": int8}
        if data:
            kw["data"] = data
        if workspace:
            kw["workspace"] = workspace
        path = _export(model, "engine", Path(out_dir), **kw)
    runner = TRTRunner(path, imgsz=imgsz, cuda_graph=cuda_graph, device=cuda_index(device))
    info = {"backend": "tensorrt", "tensorrt": tensorrt_version(), "cuda_graph": cuda_graph,
            "precision": "int8" if int8 else "fp16" if half else "fp32",
            "bindings": {n: [list(t.shape), str(t.dtype)] for n, t in {**runner.inputs, **runner.outputs}.items()}}
    e2e_run = _e2e_runner(_detector(path), imgsz, device, half) if e2e and path.endswith(".engine") else None
    return Prepared(model, path, runner, e2e_run, info)


PREPARE: dict[str, Callable[..., Prepared]] = {"torch": prepare_torch, "onnx": prepare_onnx,
                                                "openvino": prepare_openvino, "engine": prepare_engine}
