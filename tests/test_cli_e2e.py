"""FINE through the plain ``yolo`` command in fresh processes: the start-up hook, train, val, predict, resume,
restricted loading, the DDP-worker rebuild path, and the ``fine-yolo`` fallback with the hook off."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import offline_env, script

from fine_yolo.data.synthetic import CLASS_NAMES, generate

YOLO, FINE_YOLO = script("yolo"), script("fine-yolo")
DATA_IMGSZ = 128  # the fine-synth images
IMGSZ = 64  # what the networks see: P5 is 2x2, both FINE stages still hold whole AATS cells; ~16% less CPU than 128


def run(cmd: list[str], cwd: Path, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=offline_env(**env), capture_output=True, text=True, timeout=timeout)
    return proc


def ok(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root / "data", seed=0, n_train=8, n_val=4, imgsz=DATA_IMGSZ)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    path = root / "synth.yaml"
    path.write_text(f"path: {root / 'data'}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return path


@pytest.fixture
def trained(local_comparison) -> Path:
    """best.pt of a plain ``yolo train model=yolov8n-fine.yaml ... epochs=1 imgsz=64`` subprocess: the FINE arm of
    seed 0 in the session's toy demo (``conftest.local_comparison``; ``compare`` runs each arm as that command, here
    from the demo's 1-epoch yolov8n), trained once for this file, test_compare and test_slurm."""
    best = local_comparison.project / "runs" / "seed0-fine" / "weights" / "best.pt"
    assert best.is_file(), local_comparison.proc.stdout[-3000:] + local_comparison.proc.stderr[-3000:]
    return best


@pytest.fixture
def val_data(local_comparison) -> Path:
    """The data YAML ``trained`` was trained on (4 val images)."""
    return local_comparison.data


def test_hook_costs_nothing_until_ultralytics_is_imported(tmp_path):
    code = "import sys; print('fine_yolo._hook' in sys.modules, 'torch' in sys.modules, 'ultralytics' in sys.modules)"
    out = ok(run([sys.executable, "-c", code], cwd=tmp_path))
    assert out.split() == ["True", "False", "False"]


def test_from_ultralytics_import_yolo_knows_fine_without_importing_fine_yolo(tmp_path):
    code = textwrap.dedent(
        """
        from ultralytics import YOLO
        m = YOLO("yolov8n-fine.yaml", verbose=False)  # no fine_yolo import here: importing it would register FINE too
        print(sum(type(x).__name__ == "FINE" for x in m.model.modules()))
        """
    )
    assert ok(run([sys.executable, "-c", code], cwd=tmp_path)).strip().splitlines()[-1] == "2"


def test_ddp_worker_style_rebuild_from_yaml_name(tmp_path):
    # ultralytics' DDP workers import only ultralytics and rebuild the model from the YAML name (utils/dist.py)
    code = "from ultralytics.nn.tasks import DetectionModel; m = DetectionModel('yolov8n-fine.yaml', verbose=False); "
    code += "print(type(m.model[11].fine).__name__, len(m.model))"
    assert ok(run([sys.executable, "-c", code], cwd=tmp_path)).split()[-2:] == ["FINE", "23"]  # upstream's 23 layers


def _all_row(out: str, data_yaml: Path) -> re.Match | None:
    """ultralytics' validation summary row ``all <images> <instances> P R mAP50 mAP50-95`` for the 4 val images and
    every box in their label files."""
    labels = sum(len(f.read_text().splitlines()) for f in (data_yaml.parent / "data" / "labels" / "val").glob("*.txt"))
    return re.search(rf"^\s*all\s+4\s+{labels}(\s+[0-9.e-]+){{4}}\s*$", out, re.M)


def test_hook_off_plain_yolo_fails_and_fine_yolo_works(tmp_path):
    code = "from ultralytics import YOLO; YOLO('yolov8n-fine.yaml', verbose=False)"
    proc = run([sys.executable, "-c", code], cwd=tmp_path, FINE_YOLO_HOOK="0")
    # upstream alone does not know the name (it looks for the scale-less file name, as for any YAML it lacks)
    assert proc.returncode == 1 and proc.stderr.rstrip().endswith(
        "FileNotFoundError: 'yolov8-fine.yaml' does not exist"), proc.stderr[-2000:]
    out = ok(run([FINE_YOLO, "cfg"], cwd=tmp_path, FINE_YOLO_HOOK="0"))  # any yolo mode goes through
    assert {"task: detect", "mode: train", "model: null"} <= set(out.splitlines())  # ultralytics' default.yaml


def test_hook_failure_warns_and_never_breaks_ultralytics():
    from fine_yolo import _hook

    with pytest.warns(RuntimeWarning, match="could not apply fine_yolo.glue.fine_rows to ultralytics.nn.tasks"):
        _hook.apply("ultralytics.nn.tasks", object())  # a 'module' without parse_model


@pytest.mark.slow
def test_yolo_val_and_predict_on_trained_checkpoint_in_fresh_processes(trained, val_data, tmp_path):
    out = ok(run([YOLO, "val", f"model={trained}", f"data={val_data}", f"imgsz={IMGSZ}", "batch=4", "device=cpu",
                  "plots=False", f"project={tmp_path}", "name=val"], cwd=tmp_path))
    assert _all_row(out, val_data), out[-2000:]  # the summary row: every val image and label was validated
    source = Path(val_data.parent / "data" / "images" / "val")
    out = ok(run([YOLO, "predict", f"model={trained}", f"source={source}", f"imgsz={IMGSZ}", "device=cpu",
                  "save_txt=True", f"project={tmp_path}", "name=pred"], cwd=tmp_path))
    assert "image 4/4" in out  # every val image went through the FINE checkpoint


@pytest.mark.slow
def test_restricted_loading_with_ultralytics_safe_load(trained, val_data, tmp_path):
    out = ok(run([YOLO, "val", f"model={trained}", f"data={val_data}", f"imgsz={IMGSZ}", "batch=4", "device=cpu",
                  "plots=False", f"project={tmp_path}", "name=val"], cwd=tmp_path, ULTRALYTICS_SAFE_LOAD="1"))
    assert _all_row(out, val_data), out[-2000:]


@pytest.mark.slow
def test_checkpoint_holds_fine_and_pretrained_transfer_from_it(trained, tmp_path):
    code = textwrap.dedent(
        f"""
        import torch
        from ultralytics import YOLO
        m = YOLO(r"{trained}")
        print(type(m.model.model[14].fine).__name__, m.model.yaml["yaml_file"])
        """
    )
    out = ok(run([sys.executable, "-c", code], cwd=tmp_path)).strip().splitlines()[-1]
    assert out == "FINE yolov8n-fine.yaml"


@pytest.mark.slow
def test_trainer_updates_fines_parameters(trained):
    """FINE starts as the identity with W_O exactly 0; after the one-epoch ``yolo train`` of ``trained``,
    ultralytics' own trainer (optimizer groups, AMP, EMA, the fp16 checkpoint) has moved it in both blocks."""
    import torch

    from fine_yolo.nn.fine import FINE

    net = torch.load(trained, map_location="cpu", weights_only=False)["model"]
    fines = [m for m in net.modules() if isinstance(m, FINE)]
    assert len(fines) == 2
    for m in fines:
        assert torch.count_nonzero(m.out.weight) > 0.9 * m.out.weight.numel()  # every weight of W_O moved
        assert torch.count_nonzero(m.out.bias) > 0


@pytest.mark.slow
def test_resume_an_interrupted_fine_training(data_yaml, tmp_path):
    # Stop hard after epoch 1 of 2 (last.pt saved), then `yolo train resume=True` in a fresh process finishes it.
    code = textwrap.dedent(
        f"""
        import os
        from ultralytics import YOLO
        m = YOLO("yolov8n-fine.yaml")
        m.add_callback("on_fit_epoch_end", lambda trainer: os._exit(17))
        m.train(data=r"{data_yaml}", epochs=2, imgsz={IMGSZ}, batch=4, workers=0, device="cpu", plots=False,
                project=r"{tmp_path}", name="run", exist_ok=True)
        """
    )
    proc = run([sys.executable, "-c", code], cwd=tmp_path)
    assert proc.returncode == 17, (proc.stdout + proc.stderr)[-3000:]
    last = tmp_path / "run" / "weights" / "last.pt"
    assert last.is_file()
    out = ok(run([YOLO, "train", "resume=True", f"model={last}"], cwd=tmp_path))
    assert "Resuming training" in out
    with open(tmp_path / "run" / "results.csv") as f:
        epochs = [int(float(row["epoch"])) for row in csv.DictReader(f)]
    assert epochs == [1, 2]


@pytest.mark.slow
def test_demo_prints_a_seed_controlled_comparison_with_verdicts_and_onnx(local_comparison):
    # The demo's pipeline at toy size (conftest.local_comparison, shared with test_compare and test_slurm): a 1-epoch
    # shared baseline, 2 seeds x 1 epoch from it, the ONNX check of seed 0.
    proc, demo = local_comparison.proc, local_comparison.demo
    out = ok(proc)
    doc = json.loads((demo / "compare" / "compare.json").read_text())
    base = str(demo / "base" / "weights" / "best.pt")
    assert doc["settings"]["train_args"]["pretrained"] == base  # both arms start from the shared baseline
    assert f"pretrained={base}" in local_comparison.cmd  # the printed `fine-yolo compare` line says so too
    assert doc["settings"]["seeds"] == [0, 1] and len(doc["runs"]) == 4
    assert doc["metrics"]["AP50:95"]["verdict"] in out  # the verdict sentence is printed
    assert "| relative change |" in out and "mAP50-95 ONNX Runtime" in out  # Table-5 rows and the ONNX table
    for png in ("curves.png", "differences.png"):
        assert (demo / "compare" / png).stat().st_size > 10_000
    onnx_rows = (demo / "onnx.md").read_text().splitlines()[2:]
    assert [r.split(" | ")[0] for r in onnx_rows] == ["| yolov8n", "| yolov8n-fine"]
