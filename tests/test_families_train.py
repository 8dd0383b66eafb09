"""Every new FINE family and task trained for one epoch on a tiny fine-synth dataset of its task, validated on its
best.pt at the end of training, then loaded from that best.pt in a fresh process to predict.

One fresh Python process trains the 18 models in turn (``train_many.py``: what the test is about is the training
loop, and a process start per model cost ~4 s of CPU each; RT-DETR through ``RTDETR``, as the ``yolo`` command picks
it by the model's name), a second one predicts with them (``YOLO(best.pt)``, as ``yolo predict`` does: ultralytics
hands a checkpoint with an RT-DETR head to ``RTDETR``). yolov8n-fine detection goes through ``yolo train``, ``val``
and ``predict`` in tests/test_cli_e2e.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import offline_env
from helpers import in_depth

from fine_yolo.data.synthetic import generate, write_data_yaml
from fine_yolo.models import is_rtdetr, scales

FINE_MODELS = in_depth()
TRAIN_MANY = Path(__file__).with_name("train_many.py")
IMGSZ = 64  # P5 is 2x2: both FINE stages still hold whole AATS cells
RTDETR_IMGSZ = 128  # RT-DETR's decoder picks 300 queries from the anchors: it needs >= 300 (336 at 128)
N_VAL = 2

# One model per family and task at its smallest scale (yolov9t for YOLOv9, rtdetr-l for RT-DETR).
TRAINED = list({(m.family, m.task): scales(name)[0] for name, m in reversed(FINE_MODELS.items())
                if (m.family, m.task) != ("YOLOv8", "detect")}.values())[::-1]


def _file(model_name: str) -> str:
    return next(name for name in FINE_MODELS if model_name in scales(name))


def _task(model_name: str) -> str:
    return FINE_MODELS[_file(model_name)].task


def _imgsz(model_name: str) -> int:
    return RTDETR_IMGSZ if is_rtdetr(model_name) else IMGSZ


def _stem(model_name: str) -> str:
    return Path(model_name).stem


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
        generate(root / task, seed=0, n_train=4, n_val=N_VAL, imgsz=128, task=task, verbose=False)
        out[task] = write_data_yaml(root / task, task)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, datasets) -> Path:
    """One epoch of every model in TRAINED; per model ``project/<stem>/`` (the run), ``<stem>.log`` (what it logged)
    and ``<stem>.json`` (whether training raised, with the traceback)."""
    project = tmp_path_factory.mktemp("train")
    runs = [{"model": n, "data": str(datasets[_task(n)]), "imgsz": _imgsz(n), "epochs": 1, "batch": 2, "workers": 0,
             "amp": False, "device": "cpu", "plots": False, "project": str(project), "name": _stem(n),
             "exist_ok": True} for n in TRAINED]
    spec = project / "train.json"
    spec.write_text(json.dumps({"runs": runs}))
    run([sys.executable, str(TRAIN_MANY), "train", str(spec)], project)
    return project


@pytest.fixture(scope="module")
def predicted(trained, datasets) -> Path:
    """Each trained best.pt loaded in a fresh process (the start-up hook reads FINE back from the pickle) to predict
    on its dataset's 2 val images: ``<stem>.predict.json`` (task outputs' shapes)."""
    runs = [{"weights": str(trained / _stem(n) / "weights" / "best.pt"),
             "out": str(trained / f"{_stem(n)}.predict.json"),
             "source": str(datasets[_task(n)].parent / "images" / "val"),
             "imgsz": _imgsz(n), "device": "cpu", "conf": 0.001, "max_det": 10, "verbose": False}
            for n in TRAINED if json.loads((trained / f"{_stem(n)}.json").read_text())["ok"]]
    spec = trained / "predict.json"
    spec.write_text(json.dumps({"runs": runs}))
    run([sys.executable, str(TRAIN_MANY), "predict", str(spec)], trained)
    return trained


def test_every_new_family_and_task_is_trained():
    assert {(FINE_MODELS[_file(n)].family, _task(n)) for n in TRAINED} == {
        (m.family, m.task) for m in FINE_MODELS.values()} - {("YOLOv8", "detect")}
    assert len(TRAINED) == 18 and [n for n in TRAINED if is_rtdetr(n)] == ["rtdetr-l-fine.yaml"]


# The task outputs a Results object of each task holds, with the trailing dims of their data tensors (masks at the
# network's input size, the semantic map at the image's).
OUTPUTS = {"detect": {"boxes": [6]}, "segment": {"boxes": [6], "masks": [IMGSZ, IMGSZ]},
           "pose": {"boxes": [6], "keypoints": [5, 3]}, "obb": {"obb": [7]}, "semantic": {"semantic_mask": [128, 128]}}


@pytest.mark.slow
@pytest.mark.parametrize("model_name", TRAINED)
def test_one_epoch_trains_validates_best_pt_and_predicts_in_a_fresh_process(predicted, model_name):
    stem, task = _stem(model_name), _task(model_name)
    status = json.loads((predicted / f"{stem}.json").read_text())
    log = (predicted / f"{stem}.log").read_text()
    assert status["ok"], f"{status['error']}\n{log[-3000:]}"
    best = predicted / stem / "weights" / "best.pt"
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    fines = [m for m in (ckpt.get("ema") or ckpt["model"]).modules() if type(m).__name__ == "FINE"]
    assert len(fines) == 2  # the trained checkpoint holds both FINE blocks (pickled whole, read back by the hook)
    assert ckpt["train_args"]["task"] == task and ckpt["train_args"]["epochs"] == 1
    # ultralytics' end-of-training validation loads best.pt and runs the task's validator on it: the same code path as
    # a separate `yolo val`, without paying another process start per model (the fresh-process load is predict's)
    final = log[log.index(f"Validating {best}"):]
    # the validator's summary row: "all", both val images, their (non-zero) instance or pixel count, then the task's
    # metrics (4 for boxes, 8 with masks/keypoints, mIoU and PixAcc for semantic)
    assert re.search(rf"^\s*all\s+{N_VAL}\s+[1-9]\d*(\s+[0-9.e+-]+)+\s*$", final, re.M), final[-2000:]
    pred = json.loads((predicted / f"{stem}.predict.json").read_text())
    assert pred["ok"], pred.get("error")
    assert len(pred["results"]) == N_VAL  # both val images went through the FINE checkpoint
    for r in pred["results"]:
        assert r["orig_shape"] == [128, 128]
        got = {k: v for k, v in r.items() if k != "orig_shape"}
        assert set(got) == set(OUTPUTS[task]), got
        for key, trailing in OUTPUTS[task].items():
            assert got[key][len(got[key]) - len(trailing):] == trailing, (key, got[key])
