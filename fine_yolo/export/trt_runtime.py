"""TensorRT ``.engine`` files as ultralytics writes them, and a minimal TensorRT runtime for timing them.

ultralytics prepends a header to every ``.engine`` it builds: a 4-byte little-endian signed length ``n``, then ``n``
bytes of JSON metadata (names, stride, imgsz, ...), then the serialized engine. Plain TensorRT tools
(``trtexec --loadEngine``, ``IRuntime.deserialize_cuda_engine`` on the raw bytes) reject such a file. The helpers here
read, write and strip that header without importing TensorRT; :class:`TRTRunner` deserializes the engine part with
the TensorRT runtime directly, binds device buffers once, and times ``execute_async_v3`` (optionally replayed from a
CUDA graph) with CUDA events — the pure network time, input already on the device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# A serialized TensorRT engine is binary and never starts with 4 bytes that count a JSON object following them;
# still, a header is only accepted when its length fits the file and its bytes parse as a JSON object.
_MAX_HEADER = 16 * 1024 * 1024


def read_engine_header(path: str | Path) -> tuple[int, dict[str, Any]]:
    """Return ``(offset of the engine bytes, metadata)``; ``(0, {})`` for a plain engine without a header."""
    with open(path, "rb") as f:
        raw = f.read(4)
        size = f.seek(0, 2)
        if len(raw) < 4:
            return 0, {}
        n = int.from_bytes(raw, byteorder="little", signed=True)
        if not 0 < n <= min(size - 4, _MAX_HEADER):
            return 0, {}
        f.seek(4)
        try:
            meta = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return 0, {}
    return (4 + n, meta) if isinstance(meta, dict) else (0, {})


def engine_bytes(path: str | Path) -> tuple[bytes, dict[str, Any]]:
    """Return the serialized engine (header removed) and the header's metadata (``{}`` when there is none)."""
    offset, meta = read_engine_header(path)
    return Path(path).read_bytes()[offset:], meta


def strip_engine_header(src: str | Path, dst: str | Path | None = None) -> Path:
    """Write the bare serialized engine of ``src`` to ``dst`` (default: ``src`` with suffix ``.plan``) for trtexec."""
    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_suffix(".plan")
    data, _ = engine_bytes(src)
    dst.write_bytes(data)
    return dst


def tensorrt_version() -> str | None:
    """Installed TensorRT Python package version, or None (without importing the heavy module twice)."""
    try:
        import tensorrt as trt
    except Exception:  # ImportError, or a broken install raising OSError on its shared libraries
        return None
    return str(trt.__version__)


class TRTRunner:
    """Deserialize an engine (ultralytics header handled) and run it on fixed device buffers.

    Args:
        path: ``.engine`` (ultralytics, with header) or plain ``.plan``/``.engine`` file.
        imgsz: input height/width used when the engine has dynamic input dimensions.
        batch: batch size for dynamic engines.
        cuda_graph: capture one ``execute_async_v3`` in a CUDA graph and replay it (removes launch overhead, the way
            ``trtexec --useCudaGraph`` times).
        device: CUDA device index.
    """

    def __init__(self, path: str | Path, imgsz: int = 640, batch: int = 1, cuda_graph: bool = False,
                 device: int = 0) -> None:
        import tensorrt as trt
        import torch

        self.torch = torch
        self.device = torch.device("cuda", device)
        torch.cuda.set_device(self.device)
        data, self.metadata = engine_bytes(path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self.logger, "")
        self.runtime = trt.Runtime(self.logger)
        if self.metadata.get("dla") is not None:  # ultralytics records the DLA core an engine was built for
            self.runtime.DLA_core = int(self.metadata["dla"])
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {path} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(self.device)
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if is_input and -1 in tuple(self.engine.get_tensor_shape(name)):
                self.context.set_input_shape(name, (batch, 3, imgsz, imgsz))
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(trt, torch, self.engine.get_tensor_dtype(name))
            buf = (torch.rand if dtype.is_floating_point else torch.zeros)(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, buf.data_ptr())
            (self.inputs if is_input else self.outputs)[name] = buf
        self.graph = None
        self._enqueue()  # first run initialises TensorRT's lazy state; required before graph capture
        self.stream.synchronize()
        if cuda_graph:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=self.stream):
                self._enqueue()
            self.stream.synchronize()
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def _enqueue(self) -> None:
        # Always the runner's own stream: during graph capture it is the capture stream, so the launch is recorded.
        if not self.context.execute_async_v3(stream_handle=self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def __call__(self) -> float:
        """Run once; return the GPU time in milliseconds measured with CUDA events on the runner's stream."""
        with self.torch.cuda.stream(self.stream):
            self._start.record(self.stream)
            if self.graph is not None:
                self.graph.replay()
            else:
                self._enqueue()
            self._end.record(self.stream)
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))


def _torch_dtype(trt, torch, dt):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool}
    for name, tdt in (("int64", torch.int64), ("bf16", torch.bfloat16), ("uint8", torch.uint8)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = tdt
    if dt not in table:
        raise TypeError(f"unsupported TensorRT tensor dtype {dt}")
    return table[dt]
