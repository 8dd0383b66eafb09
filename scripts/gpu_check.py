"""The prepared GPU check of FINE (issue 22 §4): training with AMP, autocast parity, torch.compile, FP16 timing.

    python scripts/gpu_check.py out=DIR                  # on one CUDA GPU (scripts/gpu_check.sh on the device machine)
    python scripts/gpu_check.py out=DIR device=cpu       # smoke test: small sizes, no torch.compile, few rounds
    python scripts/gpu_check.py help

Four parts, each written to DIR/gpu_check.json and DIR/gpu_check.md as soon as it ends (a timeout keeps what ran):

1. **train**: yolov8n-fine and its baseline yolov8n, 2 epochs each on the embedded fine-synth data (generated here,
   offline) with AMP, one optimizer step per batch (``nbs=batch``: ultralytics otherwise accumulates to 64 images,
   which in 2 short epochs leaves a step or two, the first at warm-up learning rate 0); every batch's loss must be
   finite, and FINE must have moved: W_O (zero at the start, so M = 0) non-zero and the mean |M| =
   mean |F_out / F_low - 1| of every FINE block on validation images above 0 (eq. 9).
2. **parity**: forward of a FINE block and of the trained FINE model under FP16 and BF16 autocast against FP32. The
   error is max |y_amp - y_fp32| over max |y_fp32| (per output: the block's map; the model's boxes and its class
   scores separately), i.e. in units of the output's scale, and the tolerance is K eps of the format (eps = 2^-10
   fp16, 2^-7 bf16): K = 8 for the block (a handful of chained roundings: pooled inputs, Q/K/V, logits, attention,
   W_O, the gain map), K = 32 for the whole model (tens of layers, each a rounding of its input). The baseline
   model's error is reported beside it for reference (not checked). The block is checked twice: as trained (M is
   small after 2 epochs, so the output is mostly F_low) and with W_O redrawn so that M is of order 1.
3. **compile**: ``torch.compile`` (inductor; plain, so a failure is reported instead of ultralytics'
   ``attempt_compile`` falling back to eager silently) of the trained FINE model against eager FP32, TF32 off,
   tolerance 2^10 eps_fp32 (1.2e-4) of the output's scale: summation order may change, nothing else.
4. **bench**: baseline vs FINE network latency (fused Conv+BN, eval, FP16 weights and input, outputs left on the
   GPU) at 640 for yolov8s, yolov10s, yolo12s at batch 1 and 32: CUDA events around each forward, warm-up rounds,
   interleaved turns of ``block`` runs (fine_yolo.bench.stats.interleave), and the ratio baseline/FINE of medians
   with a bootstrap 95% interval over rounds (fine_yolo.bench.stats.speed_ratio). Random weights: speed does not
   depend on them. Eager batch 1 on a fast GPU is bound by kernel launches on the host, so its ratio measures
   FINE's extra launches more than its arithmetic; batch 32 measures the arithmetic.

The device machine is offline and lacks polars: ultralytics' AMP check downloads yolo26n.pt (offline it waits on up
to 30 s connect timeouts, then turns AMP on unchecked), so it is replaced here by one that keeps AMP on for CUDA (and
off for the CPU, as upstream) and says so; part 2 is this check's own AMP parity test. Without polars, the trainer's
``read_results_csv`` (the results table saved in each checkpoint) reads results.csv with the csv module instead.
Nothing else of ultralytics is changed. ``budget=`` (210 s): no bench cell and no compilation starts later, so a
slower-than-planned machine still ends near 4 minutes, listing what it skipped. Exit code 0 when every check that
ran passed, 1 when one failed.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from fine_yolo.args import Command, Option, split_list
from fine_yolo.errors import UsageError
from fine_yolo.tables import markdown_table

# Per-mode sizes: the GPU run fits in under 4 minutes on one H200 (issue 22 §4); the CPU run is a smoke test.
PROFILES: dict[str, dict[str, Any]] = {
    "gpu": {"n_train": 160, "n_val": 40, "train_imgsz": 256, "batch": 16, "workers": 4, "bench_imgsz": 640,
            "bench_batches": "1,32", "rounds": 100, "warmup": 10, "block": 4, "compile": True},
    "cpu": {"n_train": 8, "n_val": 4, "train_imgsz": 128, "batch": 4, "workers": 0, "bench_imgsz": 128,
            "bench_batches": "1,2", "rounds": 3, "warmup": 1, "block": 1, "compile": False},
}
BENCH_MODELS = "yolov8s,yolov10s,yolo12s"
TRAIN_MODELS = ("yolov8n-fine.yaml", "yolov8n.yaml")  # FINE first, then its baseline
K_BLOCK, K_MODEL, COMPILE_TOL = 8, 32, 2.0**10 * 2.0**-23  # tolerances (module doc, parts 2 and 3)
PARTS = ("train", "parity", "compile", "bench")


def _log(msg: str) -> None:
    print(f"[gpu_check] {msg}", flush=True)


@contextmanager
def _no_tf32() -> Iterator[None]:
    """FP32 references in true FP32: CUDA convolutions default to TF32 (eps 2^-10, FP16's) otherwise."""
    import torch

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# ---------------------------------------------------------------------------------------------------------------------
# Offline seams (module doc): ultralytics' AMP check and, without polars, the results-table reader


def _offline_amp_check(record: dict[str, Any]) -> Callable[[Any], bool]:
    from ultralytics.utils import checks

    upstream = checks.check_amp

    def check_amp(model) -> bool:
        device = next(model.parameters()).device
        if device.type != "cuda":
            return upstream(model)  # returns False at once for the CPU: no AMP, no download
        record["amp_check"] = "replaced offline: AMP kept on (yolo26n.pt cannot be downloaded); see part 2"
        return True

    return check_amp


def _read_results_csv(self) -> dict[str, list[float]]:
    """``BaseTrainer.read_results_csv`` without polars: results.csv as {column: [values]}, {} when unreadable."""
    try:
        with open(self.csv, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return {k.strip(): [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}
    except (OSError, ValueError, KeyError):
        return {}


def _patch_ultralytics(record: dict[str, Any]) -> None:
    from ultralytics.engine import trainer

    trainer.check_amp = _offline_amp_check(record)
    try:
        import polars  # noqa: F401
    except ImportError:
        trainer.BaseTrainer.read_results_csv = _read_results_csv
        record["results_csv_reader"] = "csv module (polars not installed)"


# ---------------------------------------------------------------------------------------------------------------------
# Part 1: training with AMP


def _val_images(root: Path, n: int, device):
    """The first ``n`` validation images of fine-synth as a float batch in [0, 1] (B, 3, H, W) on ``device``."""
    import cv2
    import numpy as np
    import torch

    files = sorted((root / "images" / "val").glob("*.png"))[:n]
    imgs = np.stack([cv2.imread(str(f))[..., ::-1] for f in files])  # BGR -> RGB, as ultralytics feeds the net
    return torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float().div(255).to(device)


def _fine_blocks(net) -> list:
    from fine_yolo.nn.fine import FINE

    return [m for m in net.modules() if isinstance(m, FINE)]


def _capture_fine_inputs(net, x) -> list[tuple[Any, Any, Any]]:
    """(low, high, output) of every FINE block of ``net`` in one forward of ``x``."""
    import torch

    seen: list[tuple[Any, Any, Any]] = []

    def hook(_module, inputs, output) -> None:
        low, high = inputs[0] if len(inputs) == 1 else inputs
        seen.append((low.detach(), high.detach(), output.detach()))

    handles = [m.register_forward_hook(hook) for m in _fine_blocks(net)]
    try:
        with torch.inference_mode():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _mean_abs_m(low, out) -> float:
    """mean |M| over the pixels where F_low is not ~0, from eq. 9: F_out = F_low (1 + M)."""
    mask = low.abs() > 1e-3 * float(low.abs().max())
    return float(((out[mask] / low[mask]) - 1).abs().mean()) if mask.any() else 0.0


def train_part(work: Path, device: str, p: dict[str, Any], epochs: int, record: dict[str, Any]) -> dict[str, Any]:
    """Train yolov8n-fine and yolov8n ``epochs`` epochs with AMP; losses finite; FINE moved (module doc, part 1)."""
    import torch
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import unset_deterministic

    from fine_yolo.data.synthetic import generate, write_data_yaml

    root = generate(work / "fine-synth", n_train=p["n_train"], n_val=p["n_val"], imgsz=p["train_imgsz"], verbose=False)
    data = write_data_yaml(root, "detect")
    res: dict[str, Any] = {"data": {"n_train": p["n_train"], "n_val": p["n_val"], "imgsz": p["train_imgsz"]},
                           "epochs": epochs, "batch": p["batch"], "models": {}}
    for name in TRAIN_MODELS:
        t0 = time.perf_counter()
        yolo = YOLO(name)
        losses: list[dict[str, float]] = []  # every batch's loss items (box, cls, dfl), as the trainer logs them
        seen: dict[str, Any] = {}
        yolo.add_callback("on_train_start", lambda tr, seen=seen: seen.update(amp=bool(tr.amp)))
        yolo.add_callback("on_train_batch_end", lambda tr, losses=losses: losses.append(
            {k: float(v) for k, v in tr.loss_items.items()}))
        yolo.train(data=str(data), epochs=epochs, imgsz=p["train_imgsz"], batch=p["batch"], device=device,
                   workers=p["workers"], nbs=p["batch"], amp=True, plots=False, seed=0, exist_ok=True, verbose=False,
                   project=str((work / "train").resolve()), name=Path(name).stem)
        tr = yolo.trainer
        row: dict[str, Any] = {
            "amp": seen.get("amp"), "batches": len(losses), "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "losses_finite": bool(losses) and all(math.isfinite(v) for step in losses for v in step.values()),
            "val": {k: float(v) for k, v in (tr.metrics or {}).items()}, "weights": str(tr.best),
        }
        net = yolo.model.float().eval().to(torch.device(tr.device))
        blocks = _fine_blocks(net)
        if blocks:
            x = _val_images(root, min(4, p["n_val"]), tr.device)
            captured = _capture_fine_inputs(net, x)
            row["fine_blocks"] = [
                {"max_abs_W_O": float(b.out.weight.abs().max()), "max_abs_b_O": float(b.out.bias.abs().max()),
                 "mean_abs_M": _mean_abs_m(low, y)} for b, (low, _high, y) in zip(blocks, captured)]
            row["fine_moved"] = all(b["max_abs_W_O"] > 0 and b["mean_abs_M"] > 0 for b in row["fine_blocks"])
        row["ok"] = row["losses_finite"] and row.get("fine_moved", True) and (row["amp"] or device == "cpu")
        row["seconds"] = round(time.perf_counter() - t0, 1)
        res["models"][Path(name).stem] = row
        _log(f"trained {name}: amp={row['amp']} finite={row['losses_finite']} moved={row.get('fine_moved')} "
             f"({row['seconds']} s)")
    unset_deterministic()  # training's deterministic=True would otherwise restrict the kernels parts 2-4 time/run
    res["data_root"] = str(root)
    res["ok"] = all(r["ok"] for r in res["models"].values())
    return res


# ---------------------------------------------------------------------------------------------------------------------
# Part 2: autocast parity


def _formats() -> tuple:
    import torch

    return torch.float16, torch.bfloat16


def _rel_errs(got: dict[str, Any], ref: dict[str, Any]) -> dict[str, float]:
    """max |got - ref| / max |ref| of each output: the error in units of the output's scale."""
    return {k: float((got[k].float() - r).abs().max() / r.abs().max().clamp_min(1e-30)) for k, r in ref.items()}


def _parity_row(what: str, k: int, dtype, ref: dict[str, Any], amp: dict[str, Any]) -> dict[str, Any]:
    """Error of each output in units of its scale, against ``k`` eps of ``dtype``."""
    import torch

    eps = torch.finfo(dtype).eps
    errs = _rel_errs(amp, ref)
    err = max(errs.values())
    return {"what": what, "format": str(dtype).replace("torch.", ""), "rel_err": errs, "max_rel_err": err,
            "err_in_eps": err / eps, "tol_in_eps": k, "tol": k * eps, "ok": math.isfinite(err) and err <= k * eps}


def _model_outputs(net, x) -> dict[str, Any]:
    """A detection model's decoded output split into boxes (pixels) and class scores (0..1), as float."""
    y = net(x)
    y = y[0] if isinstance(y, (list, tuple)) else y
    return {"boxes": y[:, :4].float(), "scores": y[:, 4:].float()}


def parity_part(device, train: dict[str, Any]) -> dict[str, Any]:
    """FP16/BF16 autocast vs FP32 of a FINE block and the trained models (module doc, part 2)."""
    import torch
    from ultralytics import YOLO

    root = Path(train["data_root"])
    x = _val_images(root, 4, device)
    rows = []
    nets = {name: YOLO(r["weights"]).model.float().eval().to(device) for name, r in train["models"].items()}
    fine_name = Path(TRAIN_MODELS[0]).stem
    captured = _capture_fine_inputs(nets[fine_name], x)
    for i, (block, (low, high, _y)) in enumerate(zip(_fine_blocks(nets[fine_name]), captured)):
        redrawn = copy.deepcopy(block)
        with torch.no_grad():  # M of order 1: W_O ~ N(0, 1/C) gives unit-variance gains from unit-variance heads
            g = torch.Generator(device="cpu").manual_seed(i)
            redrawn.out.weight.copy_(torch.randn(redrawn.out.weight.shape, generator=g) / block.c_low**0.5)
            redrawn.out.bias.copy_(torch.randn(redrawn.out.bias.shape, generator=g) * 0.5)
        for label, blk in ((f"block {i} (trained)", block), (f"block {i} (W_O redrawn, M ~ 1)", redrawn)):
            with torch.inference_mode(), _no_tf32():
                ref = {"map": blk(low, high).float()}
                for dtype in _formats():
                    with torch.autocast(device.type, dtype=dtype):
                        amp = {"map": blk(low, high)}
                    rows.append(_parity_row(label, K_BLOCK, dtype, ref, amp))
    for name, net in nets.items():
        with torch.inference_mode(), _no_tf32():
            ref = _model_outputs(net, x)
            for dtype in _formats():
                with torch.autocast(device.type, dtype=dtype):
                    amp = _model_outputs(net, x)
                row = _parity_row(f"model {name} (trained)", K_MODEL, dtype, ref, amp)
                if name != fine_name:
                    row["ok"], row["reference_only"] = None, True  # the baseline's error, for comparison
                rows.append(row)
    for r in rows:
        _log(f"parity {r['what']} {r['format']}: {r['err_in_eps']:.2f} eps (tol {r['tol_in_eps']}) ok={r['ok']}")
    return {"rows": rows, "ok": all(r["ok"] for r in rows if r["ok"] is not None)}


# ---------------------------------------------------------------------------------------------------------------------
# Part 3: torch.compile


def compile_part(device, train: dict[str, Any]) -> dict[str, Any]:
    """torch.compile of the trained FINE model vs eager FP32 with TF32 off (module doc, part 3)."""
    import torch
    from ultralytics import YOLO

    fine_name = Path(TRAIN_MODELS[0]).stem
    net = YOLO(train["models"][fine_name]["weights"]).model.float().eval().to(device)
    x = _val_images(Path(train["data_root"]), 4, device)
    res: dict[str, Any] = {"model": fine_name, "input": list(x.shape), "tol": COMPILE_TOL}
    try:
        with torch.inference_mode(), _no_tf32():
            ref = _model_outputs(net, x)
            compiled = torch.compile(net)
            t0 = time.perf_counter()
            first = _model_outputs(compiled, x)
            torch.cuda.synchronize(device) if device.type == "cuda" else None
            res["first_call_s"] = round(time.perf_counter() - t0, 1)
            again = _model_outputs(compiled, x)
        errs, errs_first = _rel_errs(again, ref), _rel_errs(first, ref)
        res.update(rel_err=errs, rel_err_first_call=errs_first, max_rel_err=max(errs.values()))
        res["ok"] = all(math.isfinite(e) and e <= COMPILE_TOL for e in [*errs.values(), *errs_first.values()])
    except Exception as e:  # a compile failure is this check's finding, not a crash of the whole run
        res.update(ok=False, error=f"{type(e).__name__}: {e}"[:2000])
    _log(f"compile: ok={res['ok']} {res.get('rel_err', res.get('error'))}")
    return res


# ---------------------------------------------------------------------------------------------------------------------
# Part 4: FP16 latency, baseline vs FINE


def _network(name: str, device, half: bool):
    from fine_yolo.models import build

    net = build(f"{name}.yaml").model.fuse(verbose=False).eval().to(device)
    return net.half() if half else net


def _timer(net, x) -> Callable[[], float]:
    """One forward in milliseconds: CUDA events on a GPU, perf_counter on the CPU (fine_yolo.bench.backends'
    prepare_torch does the same at batch 1 only)."""
    import torch

    if x.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def run() -> float:
            with torch.inference_mode():
                start.record()
                net(x)
                end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
    else:

        def run() -> float:
            with torch.inference_mode():
                t0 = time.perf_counter()
                net(x)
                return (time.perf_counter() - t0) * 1e3

    return run


def bench_part(device, models: list[str], batches: list[int], p: dict[str, Any], deadline: float = math.inf
               ) -> dict[str, Any]:
    """Interleaved baseline/FINE latency per model and batch, ratio with a 95% interval (module doc, part 4).

    A (model, batch) cell that would start after ``deadline`` (``time.perf_counter()``) is listed as not timed."""
    import torch

    from fine_yolo.bench.stats import interleave, speed_ratio, summarize

    half = device.type == "cuda"  # FP16 on the GPU; CPU FP16 convolutions are not what anyone deploys
    torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN picks its fastest kernels once, in the warm-up
    rows, not_timed = [], []
    for name in models:
        if time.perf_counter() > deadline:
            not_timed += [f"{name} batch {b}" for b in batches]
            continue
        nets = {"baseline": _network(name, device, half), "fine": _network(f"{name}-fine", device, half)}
        for batch in batches:
            if time.perf_counter() > deadline:
                not_timed.append(f"{name} batch {batch}")
                continue
            x = torch.rand(batch, 3, p["bench_imgsz"], p["bench_imgsz"], device=device,
                           dtype=torch.float16 if half else torch.float32)
            samples = interleave({arm: _timer(net, x) for arm, net in nets.items()}, iters=p["rounds"],
                                 warmup=p["warmup"], block=p["block"], progress=False, desc=f"{name} b{batch}")
            ratio = speed_ratio(samples["baseline"], samples["fine"])
            base, fine = summarize(samples["baseline"]), summarize(samples["fine"])
            rows.append({"model": name, "batch": batch, "imgsz": p["bench_imgsz"], "dtype": "float16" if half else
                         "float32", "n": base.n, "baseline_ms": base.median, "fine_ms": fine.median,
                         "baseline": base.to_dict(), "fine": fine.to_dict(), "ratio": ratio.to_dict()})
            _log(f"bench {name} batch {batch}: {base.median:.2f} / {fine.median:.2f} ms, ratio "
                 f"{ratio.of_medians:.3f} [{ratio.ci95[0]:.3f}, {ratio.ci95[1]:.3f}]")
        del nets
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ok = all(r["ratio"]["of_medians"] > 0 and all(math.isfinite(v) for v in r["ratio"]["ci95"]) for r in rows)
    return {"rows": rows, "not_timed": not_timed, "block": p["block"], "warmup": p["warmup"], "rounds": p["rounds"],
            "ok": ok}


# ---------------------------------------------------------------------------------------------------------------------
# Report


def markdown(result: dict[str, Any]) -> str:
    """The report: environment, then one table per part that ran."""
    env = result["env"]
    lines = [f"# FINE GPU check ({result['mode']} mode, device {result['device']})", "",
             f"{env.get('gpu') or env.get('cpu')}; torch {env.get('torch')}, CUDA {env.get('cuda')}, ultralytics "
             f"{env.get('ultralytics')}, Python {env.get('python')}; {result['date']}; "
             f"{result['elapsed_s']:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items())
             + f"); all checks passed: **{result['ok']}**", ""]
    for part in PARTS:
        if result.get(part, {}).get("skipped"):
            lines += [f"Part {part} skipped: {result[part]['skipped']}", ""]
    if "models" in result.get("train", {}):
        t = result["train"]
        lines += [f"## 1. Training, {t['epochs']} epochs, fine-synth {t['data']['n_train']}+{t['data']['n_val']} "
                  f"images at {t['data']['imgsz']}, batch {t['batch']}", ""]
        cells = []
        for name, r in t["models"].items():
            blocks = r.get("fine_blocks") or []
            cells.append([name, r["amp"], r["batches"], "yes" if r["losses_finite"] else "NO",
                          ", ".join(f"{v:.3g}" for v in (r["loss_last"] or {}).values()),
                          f"{r['val'].get('metrics/mAP50-95(B)', float('nan')):.4f}",
                          "; ".join(f"{b['max_abs_W_O']:.2g} / {b['mean_abs_M']:.2g}" for b in blocks) or None,
                          r["seconds"], r["ok"]])
        lines += [markdown_table(["model", "AMP", "batches", "losses finite", "last loss (box, cls, dfl)",
                                  "val mAP50-95", "FINE max abs W_O / mean abs M per block", "s", "ok"], cells), ""]
    if "rows" in result.get("parity", {}):
        lines += ["## 2. Autocast parity against FP32 (error in eps of the format, of the output's scale)", ""]
        cells = [[r["what"], r["format"], f"{r['err_in_eps']:.2f}", r["tol_in_eps"],
                  "reference" if r.get("reference_only") else r["ok"]] for r in result["parity"]["rows"]]
        lines += [markdown_table(["what", "format", "error (eps)", "tolerance (eps)", "ok"], cells), ""]
    if "compile" in result and not result["compile"].get("skipped"):
        c = result["compile"]
        lines += ["## 3. torch.compile against eager FP32 (TF32 off)", ""]
        if "error" in c:
            lines += [f"Failed: `{c['error'][:300]}`", ""]
        else:
            errs = ", ".join(f"{k} {v:.2e}" for k, v in c["rel_err"].items())
            lines += [f"{c['model']}, input {c['input']}: relative error {errs} (tolerance {c['tol']:.1e}); first "
                      f"call (compilation) {c['first_call_s']} s; ok: {c['ok']}", ""]
    if "rows" in result.get("bench", {}):
        b = result["bench"]
        lines += [f"## 4. Latency, baseline / FINE (network only, {b['rows'][0]['dtype'] if b['rows'] else ''}, "
                  f"interleaved turns of {b['block']} after {b['warmup']} warm-up rounds, median; 95% bootstrap "
                  "interval over rounds)", ""]
        cells = [[r["model"], r["batch"], r["imgsz"], r["n"], f"{r['baseline_ms']:.2f}", f"{r['fine_ms']:.2f}",
                  f"{r['ratio']['of_medians']:.3f} ({r['ratio']['ci95'][0]:.3f}–{r['ratio']['ci95'][1]:.3f})"]
                 for r in b["rows"]]
        lines += [markdown_table(["model", "batch", "imgsz", "samples", "baseline ms", "FINE ms",
                                  "baseline/FINE (95% CI)"], cells), ""]
        if b.get("not_timed"):
            lines += [f"Not timed (time budget spent): {', '.join(b['not_timed'])}", ""]
    for part, error in result.get("errors", {}).items():
        lines += [f"**{part} failed:** `{error[:300]}`", ""]
    return "\n".join(lines)


def _write(out: Path, result: dict[str, Any], t0: float) -> None:
    result["elapsed_s"] = time.perf_counter() - t0
    result["ok"] = not result.get("errors") and all(
        result[p]["ok"] for p in PARTS if p in result and not result[p].get("skipped"))
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(result))


def _run(args: dict[str, Any], extra: dict[str, Any]) -> int:
    t0 = time.perf_counter()
    parts = split_list(args["parts"], "parts")
    unknown = [x for x in parts if x not in PARTS]
    if unknown:
        raise UsageError(f"argument 'parts={args['parts']}' names {', '.join(unknown)}: not one of {', '.join(PARTS)}")
    for name in split_list(args["missing"], "missing") if args["missing"] else []:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError, as where it is absent
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    import torch

    import fine_yolo
    from fine_yolo.bench.env import environment
    from fine_yolo.devices import cuda_index, is_cuda

    fine_yolo.register()  # the start-up hook is not installed where the package travels as source (gpu_check.sh)
    mode = "gpu" if is_cuda(args["device"]) else "cpu"
    if mode == "gpu" and not torch.cuda.is_available():
        raise UsageError(f"argument 'device={args['device']}' asks for CUDA, but torch {torch.__version__} sees no "
                         "GPU here: use device=cpu for the smoke test")
    p = dict(PROFILES[mode])
    for key in ("rounds", "bench_imgsz"):
        p[key] = args[key] or p[key]
    if args["bench_batches"]:
        p["bench_batches"] = args["bench_batches"]
    device = torch.device(f"cuda:{cuda_index(args['device'])}" if mode == "gpu" else "cpu")
    out, work = Path(args["out"]), Path(args["work"] or args["out"])
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"mode": mode, "device": str(device), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                              time.gmtime()), "settings": {**p, "parts": parts, "epochs": args["epochs"]},
                              "env": environment(device=args["device"]), "errors": {}, "seconds": {}}
    result["env"]["ultralytics_file"] = sys.modules["ultralytics"].__file__  # the carried wheel's, on the device
    _patch_ultralytics(result)
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("train", lambda: train_part(work, args["device"], p, args["epochs"], result)),
        ("parity", lambda: parity_part(device, result["train"])),
        ("bench", lambda: bench_part(device, split_list(args["models"], "models"),
                                     split_list(p["bench_batches"], "bench_batches", int), p, deadline)),
        ("compile", lambda: compile_part(device, result["train"]) if p["compile"] else
         {"skipped": "torch.compile is not run in device=cpu mode", "ok": True}),
    ]  # compile last: its first call compiles for a minute or more, and everything before it is then on disk
    deadline = t0 + args["budget"] if args["budget"] > 0 else math.inf
    for part, step in steps:
        if part not in parts:
            continue
        if part == "compile" and time.perf_counter() > deadline:
            result[part] = {"skipped": f"the time budget of {args['budget']} s was spent before it", "ok": True}
            continue
        if part in ("parity", "compile") and "train" not in result:
            result[part] = {"skipped": "needs part train", "ok": True}
            continue
        t_part = time.perf_counter()
        try:
            result[part] = step()
        except Exception as e:  # one part's failure is a finding; the others still run and the report is written
            result["errors"][part] = f"{type(e).__name__}: {e}"[:2000]
            _log(f"{part} failed: {result['errors'][part]}")
        result["seconds"][part] = round(time.perf_counter() - t_part, 1)
        _write(out, result, t0)
    _write(out, result, t0)
    _log(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} in {result['elapsed_s']:.0f} s; "
         f"all checks passed: {result['ok']}")
    return 0 if result["ok"] else 1


COMMAND = Command(
    options={
        "out": Option("runs/gpu_check", "output folder: gpu_check.json and gpu_check.md"),
        "work": Option("", "folder for the generated data and the training runs (default: out)"),
        "device": Option("0", "CUDA device, or cpu for the smoke test (small sizes, no torch.compile, few rounds)"),
        "parts": Option(",".join(PARTS), f"which parts to run, comma-separated ({', '.join(PARTS)})"),
        "epochs": Option(2, "training epochs per model (part train)"),
        "models": Option(BENCH_MODELS, "baselines timed against their -fine models (part bench)"),
        "bench_batches": Option("", "batch sizes timed (default 1,32 on a GPU, 1,2 on the CPU)"),
        "bench_imgsz": Option(0, "square input of the timing (default 640 on a GPU, 128 on the CPU)"),
        "rounds": Option(0, "timed runs per model and batch (default 100 on a GPU, 3 on the CPU)"),
        "budget": Option(210, "seconds after which no further bench cell or compile starts (0: no limit)"),
        "missing": Option("", "packages to treat as not installed, comma-separated (the CPU test mimics the device)"),
    },
    run=_run,
    example="python scripts/gpu_check.py out=$OUT device=0",
    description=__doc__.split("\n\n", 2)[2],
)


if __name__ == "__main__":
    sys.exit(COMMAND.main(sys.argv[1:], "python scripts/gpu_check.py"))
