"""``fine-yolo bench``: a FINE model against its baseline, timed interleaved in one process.

    fine-yolo bench model=yolov8s-fine.yaml imgsz=640 format=onnx device=cpu iters=200
    fine-yolo bench model=yolov8s-fine.pt baseline=yolov8s.pt format=engine device=0 half=True cuda_graph=True

Both models are built/exported first (``format=torch``: eager PyTorch; ``onnx``: ultralytics ONNX export run by ONNX
Runtime, CPU or CUDA; ``openvino``: ultralytics OpenVINO export run by the CPU plugin at
``precision=default|f32|bf16|f16`` (``default``: the plugin's choice, bf16 on AMX CPUs; the precision actually run is
recorded); ``engine``: ultralytics TensorRT build, run directly with the TensorRT runtime), then timed
interleaved in one process (:func:`fine_yolo.bench.stats.interleave`): ``warmup`` untimed rounds, then turns of
``block`` timed runs per model after one untimed settling run (``block=4``, the default: A A A A A B B B B B ...;
``block=1``: A B A B ...), until each model has at least ``iters`` samples and ``seconds`` seconds have passed.
The default measures each model's steady state, as deployed: a run that directly follows the other model's run
pays for the caches the other model evicted, which strict A B A B adds to both sides (docs/performance.md).
``malloc=steady`` (default) fixes glibc's allocator thresholds first (:func:`fine_yolo.bench.env.steady_malloc`:
otherwise eager PyTorch pays allocation-history-dependent page faults); ``malloc=default`` leaves them. Two
measurements, reported separately:

* network: batch 1, input already on the device, the network alone;
* end-to-end: ``YOLO(...).predict(image)``, i.e. ultralytics' pre-processing, network and post-processing
  (``e2e=False`` skips it; ``e2e_iters`` sets its rounds, default ``iters // 2``).

Output: a progress bar, a markdown table like the paper's Table 1 on stdout (params and GFLOPs counted with
attention, :mod:`fine_yolo.bench.complexity`), and a JSON file with the environment (GPU, TensorRT, CUDA, Jetson
power mode and clocks, with a warning when they are not locked), every statistic and every raw sample.
``baseline=`` defaults to the FINE model's baseline name (``yolov8s-fine.yaml`` -> ``yolov8s.yaml``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from fine_yolo.args import Command, Option
from fine_yolo.bench.backends import FORMATS, PREPARE
from fine_yolo.bench.env import environment, steady_malloc, warnings_for
from fine_yolo.bench.stats import interleave, speed_ratio, summarize
from fine_yolo.devices import is_cuda, torch_threads
from fine_yolo.errors import UsageError
from fine_yolo.export.preflight import ENGINE_ALIASES


class BenchArgumentError(UsageError):
    """Benchmark settings that cannot be timed (unknown format, a count below its minimum, ...)."""

def _name(source: str) -> str:
    return Path(source).stem


def _complexity(source: str, imgsz: int) -> tuple[int | None, float | None]:
    """Params and GFLOPs (attention included) for a YAML/.pt source; (None, None) for exported files."""
    if not source.endswith((".yaml", ".yml", ".pt")):
        return None, None
    from fine_yolo.bench.complexity import measure

    c = measure(source, imgsz)
    return c.params, c.gflops_torch


def default_baseline(model: str) -> str:
    """The baseline of a FINE model name (``yolov8s-fine.yaml`` -> ``yolov8s.yaml``); raises ValueError otherwise."""
    from fine_yolo.models import baseline_name

    return str(Path(model).with_name(baseline_name(model)))


def run_bench(model: str, baseline: str = "", imgsz: int = 640, format: str = "torch", device: str = "cpu",
              half: bool = False, int8: bool = False, data: str = "", workspace: float = 0.0,
              cuda_graph: bool = False, precision: str = "default", iters: int = 100,
              seconds: float = 0.0, warmup: int = 10, block: int = 4,
              malloc: str = "steady", threads: int = 0, e2e: bool = True, e2e_iters: int = 0, flops: bool = True,
              out: str = "runs/fine_bench", progress: bool = True) -> dict[str, Any]:
    """Prepare, time and summarize ``baseline`` and ``model``; return the result dict (see module doc)."""
    fmt = "engine" if format.lower() in ENGINE_ALIASES else format.lower()
    if fmt not in FORMATS:
        raise BenchArgumentError(f"format={format} is not one of {', '.join(FORMATS)}")
    for name, value, least in (("iters", iters, 1), ("block", block, 1), ("warmup", warmup, 0),
                               ("e2e_iters", e2e_iters, 0), ("seconds", seconds, 0)):
        if value < least:
            raise BenchArgumentError(f"{name}={value} must be >= {least}")
    from fine_yolo.export.openvino import PRECISIONS

    if precision not in PRECISIONS:
        raise BenchArgumentError(f"precision={precision} is not one of {', '.join(PRECISIONS)}")
    if precision != "default" and fmt != "openvino":
        raise BenchArgumentError(f"precision={precision} applies to format=openvino (format={fmt}: use half=True)")
    if malloc not in {"steady", "default"}:
        raise BenchArgumentError(f"malloc={malloc} is not one of steady, default")
    if fmt == "engine" and not is_cuda(device):  # is_cuda also rejects a device it cannot read
        device = "0"
    for source in (model, baseline):
        if fmt == "torch" and source.endswith((".onnx", ".engine", ".plan", ".xml", "_openvino_model")):
            raise BenchArgumentError(f"format=torch times PyTorch models and {source} is an exported file: use "
                                     "format=onnx or format=engine")
    baseline = baseline or default_baseline(model)
    env = environment(device=device)
    env["malloc"] = (steady_malloc() if malloc == "steady" else None) or "default"  # what the process really has
    kw = {"imgsz": imgsz, "device": device, "half": half, "int8": int8, "data": data, "workspace": workspace,
          "cuda_graph": cuda_graph, "precision": precision, "out_dir": out, "e2e": e2e}
    with torch_threads(threads) as threads:  # one setting for both models (and ONNX Runtime's intra-op pool)
        t_prep = time.perf_counter()
        _log(f"preparing {baseline} and {model} for format={fmt} on device={device} ...")
        prepared = {"baseline": PREPARE[fmt](baseline, threads=threads, **kw),
                    "fine": PREPARE[fmt](model, threads=threads, **kw)}
        t_prep = time.perf_counter() - t_prep
        net = interleave({k: p.network for k, p in prepared.items()}, iters=iters, seconds=seconds, warmup=warmup,
                         block=block, progress=progress, desc=f"network {fmt}")
        e2e_samples = None
        if e2e and all(p.e2e for p in prepared.values()):
            e2e_samples = interleave({k: p.e2e for k, p in prepared.items()}, iters=e2e_iters or max(1, iters // 2),
                                     warmup=min(warmup, 3) or 1, block=block, progress=progress,
                                     desc=f"end-to-end {fmt}")
    models: dict[str, Any] = {}
    for key, p in prepared.items():
        params, gflops = _complexity(p.source, imgsz) if flops else (None, None)
        models[key] = {
            "name": _name(p.source),
            "source": p.source,
            "artifact": p.artifact,
            "params": params,
            "gflops": gflops,
            "info": p.info,
            "network": summarize(net[key]).to_dict(),
            "e2e": summarize(e2e_samples[key]).to_dict() if e2e_samples else None,
            "samples_ms": net[key],
            "e2e_samples_ms": e2e_samples[key] if e2e_samples else None,
        }
    ratio = {"network": speed_ratio(net["baseline"], net["fine"]).to_dict()}
    if e2e_samples:
        ratio["e2e"] = speed_ratio(e2e_samples["baseline"], e2e_samples["fine"]).to_dict()
    info = prepared["fine"].info
    desc = {"torch": f"PyTorch {info.get('device')} {info.get('dtype')}, {threads} threads",
            "onnx": f"ONNX Runtime {info.get('providers', ['?'])[0]}, {info.get('intra_op_threads')} intra-op threads",
            "openvino": f"OpenVINO {info.get('openvino')} {','.join(info.get('execution_devices') or ['CPU'])}, "
                        f"precision={info.get('precision')} (plugin ran {info.get('precision_hint')}; nodes by "
                        f"precision {info.get('executed_precisions')}), {info.get('inference_threads')} threads",
            "engine": f"TensorRT {info.get('tensorrt')} {info.get('precision')}"
                      f"{', CUDA graph' if info.get('cuda_graph') else ''}"}[fmt]
    return {
        "args": {"model": model, "baseline": baseline, "imgsz": imgsz, "format": fmt, "device": device, "half": half,
                 "int8": int8, "iters": iters, "seconds": seconds, "warmup": warmup, "block": block,
                 "malloc": malloc, "threads": threads, "cuda_graph": cuda_graph, "precision": precision},
        "backend_desc": desc,
        "env": env,
        "warnings": warnings_for(env),
        "prepare_seconds": t_prep,
        "models": models,
        "ratio": ratio,
    }


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run(args: dict, extra: dict) -> int:
    from fine_yolo.bench.report import markdown, write_json

    args = dict(args)
    json_path = args.pop("json")
    result = run_bench(**args)
    print(markdown(result))
    if not json_path:
        a = result["args"]
        json_path = Path(args["out"]) / f"bench_{a['format']}_{_name(a['model'])}_{a['imgsz']}.json"
    print(f"\nraw samples: {write_json(result, json_path)}")
    return 0


COMMAND = Command(
    options={
        "model": Option("", "FINE model: YAML, .pt, or an exported file", required=True),
        "baseline": Option("", "baseline model (default: derived, yolov8s-fine.yaml -> yolov8s.yaml)"),
        "imgsz": Option(640, "input size"),
        "format": Option("torch", f"backend: {', '.join(FORMATS)}"),
        "device": Option("cpu", "cpu or a CUDA index"),
        "half": Option(False, "FP16 (engine, onnx on CUDA; openvino: FP16 weights)"),
        "int8": Option(False, "INT8 engine, or OpenVINO INT8 via NNCF (needs data=)"),
        "data": Option("", "calibration data YAML for int8"),
        "workspace": Option(0.0, "TensorRT workspace in GiB (0: ultralytics' default)"),
        "cuda_graph": Option(False, "replay the engine through a CUDA graph"),
        "precision": Option("default", "format=openvino: the CPU plugin's inference precision hint (default: the "
                            "plugin's own, bf16 on AMX CPUs)", choices=("default", "f32", "bf16", "f16")),
        "iters": Option(100, "timed runs per model, at least"),
        "seconds": Option(0.0, "and at least this long"),
        "warmup": Option(10, "untimed rounds first"),
        "block": Option(4, "timed runs per turn after one settling run (1: strict A B A B)"),
        "malloc": Option("steady", "glibc allocator: steady (fixed thresholds) or default",
                         choices=("steady", "default")),
        "threads": Option(0, "CPU threads (0: the backend's default)"),
        "e2e": Option(True, "also time YOLO.predict end to end"),
        "e2e_iters": Option(0, "end-to-end rounds (0: iters // 2)"),
        "flops": Option(True, "count params and GFLOPs (attention included)"),
        "json": Option("", "raw samples JSON (default under out/)"),
        "out": Option("runs/fine_bench", "directory for exports and JSON"),
        "progress": Option(True, "progress bar"),
    },
    run=_run,
    example="fine-yolo bench model=yolov8s-fine.yaml format=onnx imgsz=640 threads=2",
)
