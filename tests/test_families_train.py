"""Every new FINE family and task through the plain ``yolo`` command in fresh processes: one training epoch on a tiny
fine-synth dataset of its task, validated on its best.pt at the end of training, then ``yolo predict`` on that best.pt
in a fresh process (yolov8n-fine detection, with a separate ``yolo val``: tests/test_cli_e2e.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import offline_env

from fine_yolo.data.synthetic import generate, write_data_yaml
from fine_yolo.models import FINE_MODELS, is_rtdetr, scales


def _script(name: str) -> str:
    """The console script installed beside this interpreter (the same environment), else the one on PATH."""
    sibling = Path(sys.executable).parent / name
    return str(sibling) if sibling.is_file() else shutil.which(name) or name


YOLO = _script("yolo")
IMGSZ = 64  # P5 is 2x2: both FINE stages still hold whole AATS cells
RTDETR_IMGSZ = 128  # RT-DETR's decoder picks 300 queries from the anchors: it needs >= 300 (336 at 128)

# One model per family and task at its smallest scale (yolov9t for YOLOv9, rtdetr-l for RT-DETR).
TRAINED = list({(m.family, m.task): scales(name)[0] for name, m in reversed(FINE_MODELS.items())
                if (m.family, m.task) != ("YOLOv8", "detect")}.values())[::-1]


def run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=offline_env(), capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{out[-4000:]}"
    return out


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """A tiny fine-synth dataset per task (4 train, 2 val images) and its YAML; detection uses the same images."""
    root = tmp_path_factory.mktemp("synth")
    out = {}
    for task in ("detect", "segment", "pose", "obb", "semantic"):
        generate(root / task, seed=0, n_train=4, n_val=2, imgsz=128, task=task, verbose=False)
        out[task] = write_data_yaml(root / task, task)
    return out


def _file(model_name: str) -> str:
    return next(name for name in FINE_MODELS if model_name in scales(name))


def test_every_new_family_and_task_is_trained():
    assert {(FINE_MODELS[_file(n)].family, FINE_MODELS[_file(n)].task) for n in TRAINED} == {
        (m.family, m.task) for m in FINE_MODELS.values()} - {("YOLOv8", "detect")}
    assert len(TRAINED) == 18


@pytest.mark.slow
@pytest.mark.parametrize("model_name", TRAINED)
def test_yolo_train_val_predict(tmp_path, datasets, model_name):
    task = FINE_MODELS[_file(model_name)].task
    data = datasets[task]
    imgsz = RTDETR_IMGSZ if is_rtdetr(model_name) else IMGSZ
    common = [f"data={data}", f"imgsz={imgsz}", "device=cpu", "plots=False", f"project={tmp_path}", "exist_ok=True"]
    out = run([YOLO, "train", f"model={model_name}", "epochs=1", "batch=2", "workers=0", "amp=False", *common,
         "name=train"], tmp_path)
    best = tmp_path / "train" / "weights" / "best.pt"
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    fines = [m for m in (ckpt.get("ema") or ckpt["model"]).modules() if type(m).__name__ == "FINE"]
    assert len(fines) == 2  # the trained checkpoint holds both FINE blocks (pickled whole, read back by the hook)
    assert ckpt["train_args"]["task"] == task
    # ultralytics' end-of-training validation loads best.pt and runs the task's validator on it: the same code path as
    # a separate `yolo val`, without paying another process start per model (the fresh-process load is `predict`'s)
    final = out[out.index(f"Validating {best}"):]
    assert "all" in final or "mIoU" in final, final[-2000:]
    source = data.parent / "images" / "val"
    out = run([YOLO, "predict", f"model={best}", f"source={source}", f"imgsz={imgsz}", "device=cpu",
               f"project={tmp_path}", "name=predict", "exist_ok=True"], tmp_path)
    assert "image 2/2" in out, out[-2000:]  # both val images went through the FINE checkpoint
