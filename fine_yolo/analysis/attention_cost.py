"""Paper Table 3 in miniature: AATS against vanilla full-resolution cross-level attention, same feature sizes.

The paper (Table 3, RT-DETR R18) reports that AATS cuts the attention's compute by 93.3% and its memory by 99.9%
against vanilla cross-level attention (every low-level pixel attends to every high-level pixel). This micro-benchmark
reproduces the direction on YOLO feature maps: for each top-down stage of a model (by default yolov8s at 640:
P4 40x40x256 <- P5 20x20x512 with k=1 and P3 80x80x128 <- P4 40x40x256 with k=2) it builds

* **AATS**: the FINE block as shipped (``FINE(c_low, c_high, k, r=2)``): tokens pooled by ``r*k`` / ``k``;
* **vanilla**: the same block with ``k=1, r=1`` — no pooling, so Q has ``H_low*W_low`` tokens and K/V
  ``H_high*W_high`` tokens; the projections, heads, W_O, modulation and residual are identical,

and measures, on random inputs of the stage's shapes:

* GFLOPs of one forward pass (``FlopCounterMode``, attention matmuls included);
* peak activation memory (MB): the most bytes of tensors created during the forward pass alive at once, inputs and
  weights excluded, with attention on PyTorch's math backend (the score matrix materialised, as in an unfused
  implementation; the fused CPU/GPU kernels would hide exactly the quadratic term the table is about);
* latency (ms, median): PyTorch eager on this machine, AATS and vanilla interleaved.

CLI: ``fine-yolo attention-cost [model=yolov8s-fine.yaml] [imgsz=640] [iters=10] [threads=N] [json=out.json]``.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from fine_yolo.args import Command, Option
from fine_yolo.devices import set_torch_threads
from fine_yolo.paper import TABLE3, TABLE3_BASE_FPS
from fine_yolo.tables import markdown_table, num


@dataclass
class Stage:
    """One top-down fusion stage: the low/high maps FINE sees."""

    name: str
    c_low: int
    c_high: int
    hw_low: tuple[int, int]
    hw_high: tuple[int, int]
    k: int


@dataclass
class Cost:
    gflops: float
    peak_mb: float
    latency_ms: float | None


def model_stages(model: str = "yolov8s-fine.yaml", imgsz: int = 640) -> list[Stage]:
    """The FINE stages of ``model`` with the map sizes they see at ``imgsz`` (read off the built model)."""
    from ultralytics import YOLO

    from fine_yolo.analysis.taps import record

    net = YOLO(model).model.eval()
    stages = []
    for i, s in enumerate(record(net, torch.zeros(1, 3, imgsz, imgsz))):
        m, (_, c, h, w), (_, ch, hh, wh) = s.block, s.low.shape, s.high.shape
        stages.append(Stage(f"fine{i} ({h}x{w}x{c} <- {hh}x{wh}x{ch}, k={m.k})", m.c_low, m.c_high, (h, w), (hh, wh),
                            m.k))
    return stages


class PeakMemory(torch.utils._python_dispatch.TorchDispatchMode):
    """Track the bytes of storages created by ops under this mode; ``peak`` is the high-water mark.

    A storage is counted once, when an op first returns a tensor on it, and released when the last tensor seen on it
    is garbage collected. Storages that existed before (inputs, weights) are excluded with :meth:`exclude`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage ptr -> [bytes, number of live tensors seen on it]
        self.excluded: set[int] = set()
        self.current = 0
        self.peak = 0

    def exclude(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            self.excluded.add(t.untyped_storage().data_ptr())

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr == 0 or ptr in self.excluded:
                continue
            entry = self.live.get(ptr)
            if entry is None:
                self.live[ptr] = [st.nbytes(), 1]
                self.current += st.nbytes()
                self.peak = max(self.peak, self.current)
            else:
                entry[1] += 1
            weakref.finalize(t, self._release, ptr)
        return out


def peak_activation_bytes(fn: Callable[..., Any], *inputs: torch.Tensor, params: list[torch.Tensor] = ()) -> int:
    """Peak bytes of tensors created while running ``fn(*inputs)`` (inputs and ``params`` excluded)."""
    mode = PeakMemory()
    mode.exclude(*inputs, *params)
    with torch.no_grad(), mode:
        out = fn(*inputs)
    del out
    return mode.peak


def block_cost(block: torch.nn.Module, low: torch.Tensor, high: torch.Tensor) -> tuple[float, float]:
    """(GFLOPs, peak activation MB) of one forward pass of ``block(low, high)``, math-backend attention."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        block(low, high)
    with sdpa_kernel(SDPBackend.MATH):
        peak = peak_activation_bytes(block, low, high, params=list(block.parameters()))
    return counter.get_total_flops() / 1e9, peak / 2**20


def compare_stage(stage: Stage, iters: int = 10, warmup: int = 2, seed: int = 0) -> dict[str, Any]:
    """Cost of AATS and vanilla attention on ``stage``'s map sizes; latency interleaved (``iters`` rounds)."""
    from fine_yolo.bench.stats import interleave
    from fine_yolo.nn import FINE

    torch.manual_seed(seed)
    low = torch.randn(1, stage.c_low, *stage.hw_low)
    high = torch.randn(1, stage.c_high, *stage.hw_high)
    blocks = {"aats": FINE(stage.c_low, stage.c_high, k=stage.k, r=2, zero_init=False).eval(),
              "vanilla": FINE(stage.c_low, stage.c_high, k=1, r=1, zero_init=False).eval()}
    costs = {name: block_cost(b, low, high) for name, b in blocks.items()}
    latency: dict[str, float | None] = {name: None for name in blocks}
    if iters > 0:
        import statistics
        import time

        def timer(b):
            def run() -> float:
                with torch.no_grad():
                    t0 = time.perf_counter()
                    b(low, high)
                    return (time.perf_counter() - t0) * 1e3
            return run

        samples = interleave({n: timer(b) for n, b in blocks.items()}, iters=iters, warmup=warmup, progress=False)
        latency = {n: statistics.median(s) for n, s in samples.items()}
    out = {name: asdict(Cost(costs[name][0], costs[name][1], latency[name])) for name in blocks}
    return {"stage": asdict(stage), **out}


def reductions(aats: dict[str, float], vanilla: dict[str, float]) -> dict[str, float | None]:
    """Fractional reduction of AATS against vanilla for each metric (0.933 = 93.3% less)."""
    return {k: (1 - aats[k] / vanilla[k]) if aats.get(k) is not None and vanilla.get(k) else None
            for k in ("gflops", "peak_mb", "latency_ms")}


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`compare_stage` rows plus a total and the paper's Table 3 reductions."""
    cells = []
    tot = {n: {"gflops": 0.0, "peak_mb": 0.0, "latency_ms": 0.0} for n in ("vanilla", "aats")}
    for r in rows:
        for n in ("vanilla", "aats"):
            c = r[n]
            cells.append([r["stage"]["name"], n, f"{c['gflops']:.3f}", f"{c['peak_mb']:.2f}",
                          num(c["latency_ms"], ".2f")])
            tot[n]["gflops"] += c["gflops"]
            tot[n]["peak_mb"] = max(tot[n]["peak_mb"], c["peak_mb"])  # stages run one after the other
            tot[n]["latency_ms"] = (tot[n]["latency_ms"] + c["latency_ms"]) if c["latency_ms"] is not None else None
    red = reductions(tot["aats"], tot["vanilla"])

    def pct(x):
        return None if x is None else f"-{100 * x:.1f}%"

    cells.append(["**all stages**", "AATS vs vanilla", f"**{pct(red['gflops'])}**", f"**{pct(red['peak_mb'])}**",
                  f"**{pct(red['latency_ms'])}**"])
    paper = reductions(TABLE3["aats"], TABLE3["vanilla"])
    cells.append(["paper Table 3 (RT-DETR R18)", "AATS vs vanilla", pct(paper["gflops"]), pct(paper["peak_mb"]),
                  f"{TABLE3_BASE_FPS} -> {TABLE3['aats']['fps']} FPS vs {TABLE3_BASE_FPS} -> "
                  f"{TABLE3['vanilla']['fps']} FPS"])
    return markdown_table(["stage", "attention", "GFLOPs", "peak activation (MB)", "latency (ms)"], cells)


def _run(args: dict, extra: dict) -> int:
    set_torch_threads(args["threads"])
    rows = [compare_stage(s, iters=int(args["iters"])) for s in model_stages(str(args["model"]), int(args["imgsz"]))]
    print(table(rows))
    if args["json"]:
        Path(str(args["json"])).write_text(json.dumps({"args": args, "rows": rows, "paper": TABLE3}, indent=2))
    return 0


COMMAND = Command(
    options={
        "model": Option("yolov8s-fine.yaml", "FINE model whose stages are measured"),
        "imgsz": Option(640, "input size"),
        "iters": Option(10, "timed runs per block"),
        "threads": Option(0, "torch CPU threads (0: torch's default)"),
        "json": Option("", "write rows and the paper's numbers as JSON here"),
    },
    run=_run,
    example="fine-yolo attention-cost model=yolov8s-fine.yaml imgsz=640 json=cost.json",
)
