"""Atomic checkpoint writes of FINE trainings and of compare's runs (fine_yolo.glue.checkpoints): staged then
replaced, only for FINE models or under FINE_YOLO_ATOMIC_CHECKPOINTS=1, and a real SIGKILL in the middle of writing
last.pt leaves a last.pt that loads and resumes."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import offline_env

from fine_yolo.data.synthetic import CLASS_NAMES, generate
from fine_yolo.glue import checkpoints
from fine_yolo.nn.fine import FINE


class _Trainer:
    """The part of ultralytics' BaseTrainer that save_model/final_eval touch, writing the way 8.4.190 writes."""

    def __init__(self, wdir: Path, model: torch.nn.Module, best: bool = True):
        self.wdir, self.model = wdir, model
        self.last, self.best = wdir / "last.pt", wdir / "best.pt"
        self.is_best, self.seen = best, []

    def save_model(self):
        self.seen.append((self.wdir, self.last, self.best))
        self.wdir.mkdir(parents=True, exist_ok=True)
        self.last.write_bytes(b"new-last")
        if self.is_best:
            self.best.write_bytes(b"new-best")
        (self.wdir / "epoch3.pt").write_bytes(b"new-epoch")
        return True

    def final_eval(self):
        return module.strip_optimizer(self.last)


def _strip(f="best.pt", s="", updates=None):
    Path(s or f).write_bytes(b"stripped:" + Path(f).read_bytes())
    return {"written": str(s or f)}


module = ModuleType("fake_trainer_module")
module.BaseTrainer, module.strip_optimizer = _Trainer, _strip
checkpoints.patch(module)


def _fine_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 1), FINE(16, 32, 1))


def test_fine_checkpoints_are_staged_then_replaced(tmp_path):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "last.pt").write_bytes(b"old-last")
    t = _Trainer(wdir, _fine_model())
    assert t.save_model() is True
    staged = wdir / checkpoints.STAGING
    assert t.seen == [(staged, staged / "last.pt", staged / "best.pt")]  # ultralytics wrote into the staging dir
    assert (t.wdir, t.last, t.best) == (wdir, wdir / "last.pt", wdir / "best.pt")  # and the paths are restored
    assert {p.name: p.read_bytes() for p in wdir.iterdir()} == {
        "last.pt": b"new-last", "best.pt": b"new-best", "epoch3.pt": b"new-epoch"}  # staging dir gone too


def test_a_failed_save_replaces_nothing(tmp_path):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "last.pt").write_bytes(b"old-last")
    t = _Trainer(wdir, _fine_model())
    t.is_best = False
    orig = Path.write_bytes

    def failing(self, data):
        if self.name == "epoch3.pt":
            raise OSError("disk full")
        return orig(self, data)

    Path.write_bytes = failing
    try:
        with pytest.raises(OSError, match="disk full"):
            t.save_model()
    finally:
        Path.write_bytes = orig
    assert sorted(p.name for p in wdir.iterdir()) == ["last.pt"] and (wdir / "last.pt").read_bytes() == b"old-last"


def test_non_fine_trainings_keep_ultralytics_paths(tmp_path, monkeypatch):
    monkeypatch.delenv(checkpoints.ENV, raising=False)
    wdir = tmp_path / "weights"
    t = _Trainer(wdir, torch.nn.Conv2d(3, 8, 1))
    t.save_model()
    assert t.seen == [(wdir, wdir / "last.pt", wdir / "best.pt")]
    t.last.write_bytes(b"L")
    assert t.final_eval() == {"written": str(wdir / "last.pt")}  # strip_optimizer wrote in place, as upstream


@pytest.mark.parametrize("value", ["0", ""])
def test_only_the_value_1_turns_non_fine_trainings_atomic(tmp_path, monkeypatch, value):
    monkeypatch.setenv(checkpoints.ENV, value)
    t = _Trainer(tmp_path / "weights", torch.nn.Conv2d(3, 8, 1))
    t.save_model()
    assert t.seen == [(tmp_path / "weights", tmp_path / "weights" / "last.pt", tmp_path / "weights" / "best.pt")]


def test_compare_runs_of_a_non_fine_model_are_staged_and_stripped_atomically(tmp_path, monkeypatch):
    # What compare's baseline arm gets: FINE_YOLO_ATOMIC_CHECKPOINTS=1 in the environment of its `yolo train`.
    monkeypatch.setenv(checkpoints.ENV, "1")
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "last.pt").write_bytes(b"old-last")
    t = _Trainer(wdir, torch.nn.Conv2d(3, 8, 1))
    t.save_model()
    staged = wdir / checkpoints.STAGING
    assert t.seen == [(staged, staged / "last.pt", staged / "best.pt")]
    assert {p.name: p.read_bytes() for p in wdir.iterdir()} == {
        "last.pt": b"new-last", "best.pt": b"new-best", "epoch3.pt": b"new-epoch"}
    assert t.final_eval() == {"written": str(wdir / "last.pt.partial")}
    assert (wdir / "last.pt").read_bytes() == b"stripped:new-last" and not (wdir / "last.pt.partial").exists()


def test_final_strip_of_a_fine_training_writes_beside_then_replaces(tmp_path):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "last.pt").write_bytes(b"L")
    t = _Trainer(wdir, _fine_model())
    assert t.final_eval() == {"written": str(wdir / "last.pt.partial")}
    assert sorted(p.name for p in wdir.iterdir()) == ["last.pt"]
    assert (wdir / "last.pt").read_bytes() == b"stripped:L"
    # outside final_eval the same wrapped function is ultralytics' own
    assert module.strip_optimizer(wdir / "last.pt") == {"written": str(wdir / "last.pt")}


def test_patch_is_idempotent():
    before = (_Trainer.save_model, _Trainer.final_eval, module.strip_optimizer)
    checkpoints.patch(module)
    assert (_Trainer.save_model, _Trainer.final_eval, module.strip_optimizer) == before


# A training whose second write of last.pt (epoch 2) writes half the bytes, signals, and hangs until killed.
_CHILD = textwrap.dedent(
    """
    import pathlib, sys, time
    import ultralytics.engine.trainer as trainer_module
    from fine_yolo.glue.checkpoints import patch
    patch(trainer_module)  # idempotent when the start-up hook has applied it already
    from ultralytics import YOLO
    model, data, project, signal_file = sys.argv[1:5]
    original, calls = pathlib.Path.write_bytes, []
    def slow_write(self, data):
        if self.name == "last.pt":
            calls.append(self)
            if len(calls) == 2:
                with open(self, "wb") as f:
                    f.write(data[: len(data) // 2])
                    f.flush()
                pathlib.Path(signal_file).write_text(str(self))
                time.sleep(600)
        return original(self, data)
    pathlib.Path.write_bytes = slow_write
    YOLO(model).train(data=data, epochs=2, imgsz=64, batch=2, workers=0, device="cpu", plots=False, val=False,
                      project=project, name="run", exist_ok=True, seed=0)
    """
)


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpt_data")
    generate(root / "data", seed=0, n_train=4, n_val=2, imgsz=128)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    path = root / "tiny.yaml"
    path.write_text(f"path: {root / 'data'}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return path


def _kill_mid_write(model: str, data: Path, project: Path, **env: str) -> Path:
    signal_file = project / "writing"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, model, str(data), str(project), str(signal_file)],
                            env=offline_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not signal_file.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"training ended before the slowed write: {proc.communicate()[0][-3000:]}")
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return Path(signal_file.read_text())  # the file that was being written


def _loads(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=False)
        return True
    except Exception:
        return False


@pytest.mark.slow
def test_sigkill_while_writing_last_pt_of_a_fine_training_keeps_a_resumable_last_pt(tiny_yaml, tmp_path):
    writing = _kill_mid_write("yolov8n-fine.yaml", tiny_yaml, tmp_path)
    last = tmp_path / "run" / "weights" / "last.pt"
    assert writing == last.parent / checkpoints.STAGING / "last.pt"  # the half-written file was the staged one
    assert _loads(last)
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0  # epoch 1's checkpoint, intact
    yolo = Path(sys.executable).parent / "yolo"
    proc = subprocess.run([str(yolo), "train", "resume=True", f"model={last}"], cwd=tmp_path, env=offline_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Resuming training" in proc.stdout + proc.stderr
    with open(tmp_path / "run" / "results.csv") as f:
        epochs = [int(float(r["epoch"])) for r in csv.DictReader(f)]
    # The killed process had logged epoch 2 before saving it; the resumed one redid epoch 2 and logged it again.
    assert epochs == [1, 2, 2]
    assert not (last.parent / checkpoints.STAGING).exists()  # the next write cleared what the kill left


@pytest.mark.slow
def test_control_the_same_kill_truncates_a_baseline_training_in_place(tiny_yaml, tmp_path):
    # Non-FINE trainings outside compare keep ultralytics' in-place write: the failure the patch prevents.
    writing = _kill_mid_write("yolov8n.yaml", tiny_yaml, tmp_path, **{checkpoints.ENV: ""})
    assert writing == tmp_path / "run" / "weights" / "last.pt"
    assert not _loads(writing)


@pytest.mark.slow
def test_the_same_kill_of_a_baseline_training_started_by_compare_keeps_last_pt(tiny_yaml, tmp_path):
    # compare's baseline arm runs with FINE_YOLO_ATOMIC_CHECKPOINTS=1: the same kill leaves epoch 1's last.pt.
    writing = _kill_mid_write("yolov8n.yaml", tiny_yaml, tmp_path, **{checkpoints.ENV: "1"})
    last = tmp_path / "run" / "weights" / "last.pt"
    assert writing == last.parent / checkpoints.STAGING / "last.pt"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0
