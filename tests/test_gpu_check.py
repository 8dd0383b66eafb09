"""scripts/gpu_check.py, the prepared GPU check (issue 22 §4), in its device=cpu smoke mode.

The run mimics the device machine: polars, pycocotools, hotcoco and onnxslim are treated as not installed, so the
check's csv-module results reader is the one exercised (ultralytics imports polars when it saves a checkpoint).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import offline_env

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
FP16_EPS, BF16_EPS = 2.0**-10, 2.0**-7


def _run(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=offline_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu_check")
    proc = _run(f"out={out}", "device=cpu", "missing=polars,pycocotools,hotcoco,onnxslim", "budget=0", cwd=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_train_part_finite_losses_and_fine_moved(cpu_run):
    result, _ = cpu_run
    assert result["mode"] == "cpu" and result["ok"] is True and result["errors"] == {}
    assert result["results_csv_reader"] == "csv module (polars not installed)"
    train = result["train"]
    assert train["ok"] and set(train["models"]) == {"yolov8n-fine", "yolov8n"}
    n_train, batch, epochs = train["data"]["n_train"], train["batch"], train["epochs"]
    for name, row in train["models"].items():
        assert row["batches"] == math.ceil(n_train / batch) * epochs == 4, name  # 8 images, batch 4, 2 epochs
        assert row["amp"] is False  # upstream's AMP check turns AMP off on the CPU; the replacement keeps that
        assert row["losses_finite"] and set(row["loss_last"]) == {"box_loss", "cls_loss", "dfl_loss"}
        assert all(math.isfinite(v) and v >= 0 for v in row["loss_last"].values())
    blocks = train["models"]["yolov8n-fine"]["fine_blocks"]
    assert len(blocks) == 2  # yolov8n-fine has FINE at its two top-down stages (P4 <- P5, P3 <- P4)
    assert all(b["max_abs_W_O"] > 0 and b["mean_abs_M"] > 0 for b in blocks)  # W_O started at exactly zero
    assert "fine_blocks" not in train["models"]["yolov8n"]


def test_parity_within_tolerance_of_each_format(cpu_run):
    result, _ = cpu_run
    rows = result["parity"]["rows"]
    assert len(rows) == 2 * 2 * 2 + 2 * 2  # 2 blocks x (trained, redrawn) x 2 formats; 2 models x 2 formats
    for r in rows:
        eps = {"float16": FP16_EPS, "bfloat16": BF16_EPS}[r["format"]]
        k = 8 if r["what"].startswith("block") else 32
        assert r["tol_in_eps"] == k and r["tol"] == pytest.approx(k * eps, rel=1e-12)
        assert math.isfinite(r["max_rel_err"]) and r["err_in_eps"] == pytest.approx(r["max_rel_err"] / eps)
        if r.get("reference_only"):
            assert r["ok"] is None and "yolov8n (trained)" in r["what"]
        else:
            assert r["ok"] is True and r["max_rel_err"] <= r["tol"]
    models = [r for r in rows if r["what"].startswith("model")]
    assert all(set(r["rel_err"]) == {"boxes", "scores"} for r in models)


def test_bench_rows_and_compile_skipped_on_cpu(cpu_run):
    result, md = cpu_run
    assert result["compile"] == {"skipped": "torch.compile is not run in device=cpu mode", "ok": True}
    bench = result["bench"]
    rows = bench["rows"]
    assert bench["not_timed"] == []  # budget=0: no time limit
    assert [(r["model"], r["batch"]) for r in rows] == [
        (m, b) for m in ("yolov8s", "yolov10s", "yolo12s") for b in (1, 2)]
    for r in rows:
        assert r["imgsz"] == 128 and r["dtype"] == "float32" and r["n"] == bench["rounds"] == 3
        assert r["baseline_ms"] == r["baseline"]["median"] > 0 and r["fine_ms"] == r["fine"]["median"] > 0
        ratio = r["ratio"]
        assert ratio["of_medians"] == pytest.approx(r["baseline_ms"] / r["fine_ms"])
        assert all(math.isfinite(v) and v > 0 for v in (ratio["of_medians"], ratio["paired_median"], *ratio["ci95"]))
        assert ratio["ci95"][0] <= ratio["ci95"][1]
    assert set(result["seconds"]) == {"train", "parity", "bench", "compile"}
    assert "| yolov8s | 1 | 128 | 3 |" in md and "baseline/FINE (95% CI)" in md and "Part compile skipped" in md
    assert "| block 0 (W_O redrawn, M ~ 1) | float16 |" in md


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_past_its_deadline_times_nothing_and_says_so():
    gpu_check = _script()
    p = gpu_check.PROFILES["cpu"]
    res = gpu_check.bench_part(torch.device("cpu"), ["yolov8s", "yolo12s"], [1, 2], p, deadline=0.0)
    assert res["rows"] == [] and res["ok"] is True
    assert res["not_timed"] == ["yolov8s batch 1", "yolov8s batch 2", "yolo12s batch 1", "yolo12s batch 2"]
    md = gpu_check.markdown({"mode": "cpu", "device": "cpu", "date": "d", "elapsed_s": 1.0, "seconds": {},
                             "ok": True, "env": {}, "bench": res})
    assert "Not timed (time budget spent): yolov8s batch 1, yolov8s batch 2, yolo12s batch 1, yolo12s batch 2" in md


def test_results_reader_without_polars_equals_ultralytics_reader(tmp_path):
    """The csv-module reader returns what ultralytics' polars reader returns for a results.csv its trainer wrote."""
    from types import SimpleNamespace

    from ultralytics.engine.trainer import BaseTrainer

    trainer = SimpleNamespace(csv=tmp_path / "results.csv", epoch=0, train_time_start=0.0)
    for epoch, loss in ((0, 1.25), (1, 0.5)):  # two epochs, as BaseTrainer.save_metrics appends them
        trainer.epoch = epoch
        BaseTrainer.save_metrics(trainer, {"train/box_loss": loss, "metrics/mAP50-95(B)": 0.125 * epoch})
    upstream = BaseTrainer.read_results_csv(trainer)
    ours = _script()._read_results_csv(trainer)
    assert list(ours) == list(upstream) == ["epoch", "time", "train/box_loss", "metrics/mAP50-95(B)"]
    assert ours["epoch"] == upstream["epoch"] == [1, 2] and ours["train/box_loss"] == [1.25, 0.5]
    assert ours["metrics/mAP50-95(B)"] == upstream["metrics/mAP50-95(B)"] == [0.0, 0.125]
    assert _script()._read_results_csv(SimpleNamespace(csv=tmp_path / "missing.csv")) == {}


def test_help_and_bad_input(tmp_path):
    proc = _run("help", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and "keys (key=value):" in proc.stdout and "bench_batches" in proc.stdout
    proc = _run("parts=train,speed", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "argument 'parts=train,speed' names speed: not one of train, parity, compile, bench")
    assert not list(tmp_path.iterdir())  # rejected before anything is written
