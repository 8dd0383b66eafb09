"""Same-process A/B of FINE's forms and of the eager micro-kernels the block dropped (docs/block_forms.md).

    python scripts/block_forms_ab.py eager [iters=60] [threads=1] [variants=tokens,conv,...]  # whole yolov8s-fine
    python scripts/block_forms_ab.py onnxruntime [iters=40] [threads=1] # FINE's nodes, form "conv" vs "tokens"
    python scripts/block_forms_ab.py openvino [iters=40] [threads=1]    # FINE's nodes, form "tokens" vs "conv"

``eager`` times the whole model in rounds, every variant once per round in the same process (interleaved, so load
from other processes hits all of them alike), and reports wall and thread-CPU medians with the ratio to ``tokens`` and
its bootstrap 95% interval (:func:`fine_yolo.bench.stats.speed_ratio`). Variants: the block as shipped (``tokens``),
``conv``, and the shipped block with one of the dropped CPU kernels put back (``sums``: average pooling as k strided
row sums then k column sums; ``broadcast``: eq. 8-9 as ``low`` viewed (rk rows x W) times the gain repeated along W,
instead of ``F.interpolate`` and a multiply; ``baddbmm``: W_O as one batched GEMM writing the NCHW gain directly,
instead of ``F.linear`` and a transpose) and all three (``all3``, the block's eager path before issue 21).

``onnxruntime`` / ``openvino`` export the model once per form (TorchScript ONNX exporter, opset 18, as ultralytics;
OpenVINO's ``convert_model`` on the traced model, as ultralytics' ``torch2openvino``), and time the FINE nodes with
each runtime's per-node profiling, forms alternating round by round.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fine_yolo.bench.stats import interleave, speed_ratio
from fine_yolo.nn.fine import FINE, block_form


class SumPool(nn.AvgPool2d):
    """Average pooling (kernel = stride = k, floor) as k strided row sums, then k column sums."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        b, c, big_h, big_w = x.shape
        h, w = big_h // k, big_w // k
        rows = x[..., : h * k, : w * k].reshape(b, c, h, k, w * k)
        row_sums = sum(rows.unbind(3)[1:], rows[:, :, :, 0])
        cells = row_sums.reshape(b, c, h, w, k).unbind(4)
        return sum(cells[1:], cells[0]) / (k * k)


class Variant(FINE):
    """The shipped block with the dropped eager kernels switchable per instance (``broadcast``, ``baddbmm``)."""

    broadcast = False
    baddbmm = False

    def _gain_tokens(self, low_t, high_t, projected):
        if not self.baddbmm:
            return super()._gain_tokens(low_t, high_t, projected)
        b, c, h, w = low_t.shape
        x_low, x_high = low_t.flatten(2).transpose(1, 2), high_t.flatten(2).transpose(1, 2)
        if isinstance(self.proj_high, nn.Conv2d) and not projected:
            x_high = F.linear(x_high, self.proj_high.weight.flatten(1))
        n, n_high = h * w, x_high.shape[1]
        q = F.linear(x_low, self.q.weight.flatten(1), self.q.bias).view(b, n, self.heads, self.head_dim)
        kv = F.linear(x_high, self.kv.weight.flatten(1)).view(b, n_high, 2, self.heads, self.head_dim)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), kv[:, :, 0].transpose(1, 2),
                                              kv[:, :, 1].transpose(1, 2))
        heads = attn.transpose(1, 2).reshape(b, n, c)
        gain = torch.baddbmm((self.out.bias + 1.0)[:, None], self.out.weight.flatten(1).expand(b, c, c),
                             heads.transpose(1, 2))
        return gain.view(b, c, h, w)

    def forward(self, low, high=None):
        if high is None:
            low, high = low
        if not self.broadcast:
            return super().forward(low, high)
        gain = self.gain_tap(self._gain(low, high))
        rk, (b, c, big_h, big_w), (h, w) = self.token_stride, low.shape, gain.shape[-2:]
        if big_h != h * rk or big_w != w * rk:
            return super().forward(low, high)
        gain_w = gain.repeat_interleave(rk, dim=-1)
        return (low.view(b, c, h, rk, big_w) * gain_w.unsqueeze(3)).view(b, c, big_h, big_w)


def build(imgsz: int = 640) -> tuple[nn.Module, torch.Tensor]:
    """yolov8s-fine, fused, eval, W_O ~ N(0, 0.05) (a block that modulates), and a fixed input."""
    from ultralytics import YOLO

    import fine_yolo  # noqa: F401  (FINE rows known with the start-up hook off)

    torch.manual_seed(0)
    net = YOLO("yolov8s-fine.yaml", verbose=False).model.fuse(verbose=False).eval()
    for m in net.modules():
        if isinstance(m, FINE):
            nn.init.normal_(m.out.weight, std=0.05)
    return net, torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))


EAGER = {"tokens": {}, "conv": {"form": "conv"}, "sums": {"sums": True}, "broadcast": {"broadcast": True},
         "baddbmm": {"baddbmm": True}, "all3": {"sums": True, "broadcast": True, "baddbmm": True}}


def set_variant(net: nn.Module, form: str = "tokens", sums: bool = False, broadcast: bool = False,
                baddbmm: bool = False) -> None:
    for m in net.modules():
        if isinstance(m, FINE):
            m.__class__ = Variant
            m.form, m.broadcast, m.baddbmm = form, broadcast, baddbmm
            for name in ("pool_low", "pool_high"):
                pool = getattr(m, name)
                if isinstance(pool, nn.AvgPool2d):
                    setattr(m, name, (SumPool if sums else nn.AvgPool2d)(pool.kernel_size))


def eager(iters: int, threads: int, variants: str = ",".join(EAGER)) -> dict:
    names = variants.split(",")
    if names[0] != "tokens" or not set(names) <= set(EAGER):
        raise SystemExit(f"variants= must start with tokens and name some of {', '.join(EAGER)}")
    torch.set_num_threads(threads)
    net, x = build()
    with torch.inference_mode():
        set_variant(net)
        ref = net(x)[0]
        for name in names:
            set_variant(net, **EAGER[name])
            diff = (net(x)[0] - ref).abs().max().item()
            print(f"{name}: max |output - tokens| = {diff:.2e}")
    cpu: dict[str, list[float]] = {n: [] for n in names}

    def runner(name):
        def run() -> float:
            set_variant(net, **EAGER[name])
            with torch.inference_mode():
                t0, c0 = time.perf_counter(), time.thread_time()
                net(x)
                cpu[name].append((time.thread_time() - c0) * 1e3)
                return (time.perf_counter() - t0) * 1e3
        return run

    wall = interleave({n: runner(n) for n in names}, iters=iters, warmup=2, progress=False)
    cpu = {n: v[-len(wall[n]):] for n, v in cpu.items()}  # drop the warm-up rounds
    return report({"wall": wall, "thread_cpu": cpu}, "tokens")


def report(series: dict[str, dict[str, list[float]]], ref: str) -> dict:
    out = {}
    for kind, samples in series.items():
        for name, s in samples.items():
            r = speed_ratio(samples[ref], s)
            out.setdefault(name, {})[kind] = {"median_ms": float(np.median(s)), "ratio_ref_over_this": r.to_dict(),
                                              "n": len(s)}
            print(f"{kind:10s} {name:10s} median {np.median(s):8.3f} ms   {ref}/{name} {r.of_medians:.3f} "
                  f"[{r.ci95[0]:.3f}, {r.ci95[1]:.3f}]")
    return out


class First(nn.Module):
    """The model's first output only (the detections), what an exported graph returns."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def onnxruntime(iters: int, threads: int) -> dict:
    import onnxruntime as ort

    net, x = build()
    tmp = Path(tempfile.mkdtemp())
    sessions = {}
    for form in ("conv", "tokens"):
        path = tmp / f"{form}.onnx"
        with block_form(net, form), torch.no_grad():
            torch.onnx.export(net, x, str(path), opset_version=18, dynamo=False, input_names=["images"])
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.enable_profiling, so.profile_file_prefix = True, str(tmp / form)
        sessions[form] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {"images": x.numpy()}
    for _ in range(3):
        for s in sessions.values():
            s.run(None, feed)
    for _ in range(iters):
        for s in sessions.values():
            s.run(None, feed)
    fine = {}
    for form, s in sessions.items():
        events = json.loads(Path(s.end_profiling()).read_text())
        runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[-iters:]
        per_run = np.zeros(len(runs))
        starts = np.array([r[0] for r in runs])
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and "fine" in e["name"].lower():
                i = np.searchsorted(starts, e["ts"], side="right") - 1
                if i >= 0 and e["ts"] <= runs[i][1]:
                    per_run[i] += e["dur"] / 1e3
        fine[form] = per_run.tolist()
    return report({"fine_nodes": fine}, "conv")


def openvino(iters: int, threads: int) -> dict:
    import openvino as ov

    from fine_yolo.export.openvino import compile_config, profile

    net, x = build()
    compiled = {}
    for form in ("tokens", "conv"):
        with block_form(net, form), torch.no_grad():  # the head's first output, as ultralytics' export traces it
            traced = torch.jit.trace(First(net), x, strict=False, check_trace=False)
            model = ov.convert_model(traced, input=[x.shape], example_input=x)
        core = ov.Core()
        compiled[form] = core.compile_model(model, "CPU", compile_config("f32", threads, perf_count=True))
    xs = x.numpy()
    samples = {f: [] for f in compiled}
    for _ in range(iters):
        for f, c in compiled.items():
            samples[f].append(profile(c, xs, runs=1)["fine_ms"])
    return report({"fine_nodes_f32": samples}, "tokens")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "help"
    kw = dict(a.split("=", 1) for a in sys.argv[2:])
    if what not in {"eager", "onnxruntime", "openvino"}:
        print(__doc__)
        sys.exit(0 if what in {"help", "--help", "-h"} else 2)
    extra = {"variants": kw["variants"]} if "variants" in kw else {}
    result = globals()[what](int(kw.get("iters", 60 if what == "eager" else 40)), int(kw.get("threads", 1)), **extra)
    if "json" in kw:
        Path(kw["json"]).write_text(json.dumps(result, indent=1))
