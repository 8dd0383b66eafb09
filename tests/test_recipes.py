"""`fine-yolo reproduce`: dry-run checks, identical settings for baseline and FINE, and the results table."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import fine_yolo.recipes as recipes
from fine_yolo.cli import run_subcommand
from fine_yolo.errors import UsageError


def _kv(argv: list[str]) -> list[str]:
    """``["--dry-run", "--data", "d.yaml"]`` -> ``["dry_run=True", "data=d.yaml"]`` (the recipes' old flags)."""
    out, i = [], 0
    while i < len(argv):
        key = argv[i].removeprefix("--").replace("-", "_")
        if key == "dry_run":
            out.append("dry_run=True")
            i += 1
        else:
            out.append(f"{key}={argv[i + 1]}")
            i += 2
    return out


def _reproduce(recipe: str, argv: list[str]) -> int:
    return run_subcommand("reproduce", [recipe, *_kv(argv)])


def _build(recipe: str, argv: list[str]) -> recipes.Recipe:
    args, _ = recipes.COMMAND.parse([recipe, *_kv(argv)])
    return recipes.build(recipe, args)


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """A data YAML with existing train/val image folders and a GT JSON (content is not read by a dry run)."""
    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
    (root / "annotations").mkdir()
    gt = root / "annotations" / "instances_val.json"
    gt.write_text("{}")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: a\n")
    return data, gt


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """`yolo` and `fine-yolo` count as installed, whatever this environment has."""
    monkeypatch.setattr(recipes.shutil, "which", lambda exe: f"/venv/bin/{exe}")


@pytest.fixture
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a dry run must not run anything: {args}")

    monkeypatch.setattr(recipes.subprocess, "run", refuse)


def _split(argv: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in argv[2:])


@pytest.mark.usefixtures("on_path", "no_subprocess")
def test_table1_dry_run(dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, gt = dataset
    argv = ["--dry-run", "--data", str(data), "--gt", str(gt), "--project", str(tmp_path / "p")]
    assert _reproduce("table1", argv) == 0
    out = capsys.readouterr().out
    assert "[MISSING]" not in out and "all checks passed" in out
    for model in ("yolov8s", "yolov10s", "yolo12s"):
        assert f"[ok] model {model}-fine.yaml" in out and f"[ok] model {model}.yaml" in out
    commands = [line.strip() for line in out.splitlines() if line.startswith("  yolo ") or "coco-eval" in line]
    assert len(commands) == 18  # 6 runs x train, val, coco-eval
    assert not (tmp_path / "p").exists()  # nothing written


def test_table1_pairs_differ_only_in_model(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    data, gt = dataset
    recipe = _build("table1", ["--data", str(data), "--gt", str(gt)])
    runs = {r.name: r for r in recipe.runs}
    assert list(runs) == ["yolov8s", "yolov8s-fine", "yolov10s", "yolov10s-fine", "yolo12s", "yolo12s-fine"]
    for base, epochs in (("yolov8s", "500"), ("yolov10s", "500"), ("yolo12s", "600")):
        (step_b, train_b), (_, val_b), (_, eval_b) = recipes.commands(recipe, runs[base])
        (step_f, train_f), (_, val_f), (_, eval_f) = recipes.commands(recipe, runs[f"{base}-fine"])
        assert step_b == step_f == "train" and train_b[:2] == ["yolo", "train"]
        b, f = _split(train_b), _split(train_f)
        assert (b.pop("model"), f.pop("model"), b.pop("name"), f.pop("name")) == (
            f"{base}.yaml",
            f"{base}-fine.yaml",
            base,
            f"{base}-fine",
        )
        assert b == f  # identical settings
        assert (b["epochs"], b["seed"], b["deterministic"], b["imgsz"], b["data"]) == (
            epochs,
            "0",
            "True",
            "640",
            str(data),
        )
        assert not {"lr0", "optimizer", "mosaic"} & b.keys()  # ultralytics' defaults
        v = _split(val_f)
        assert v["save_json"] == "True" and v["model"] == str(recipe.project / f"{base}-fine" / "weights" / "best.pt")
        e = _split(eval_f)
        assert eval_f[:2] == ["fine-yolo", "coco-eval"] and e["gt"] == str(gt)
        assert e["pred"] == str(recipe.project / f"{base}-fine-val" / "predictions.json")
    recipe = _build("table1", ["--data", str(data), "--epochs", "3"])
    assert {_split(recipes.commands(recipe, r)[0][1])["epochs"] for r in recipe.runs} == {"3"}


@pytest.mark.usefixtures("no_subprocess")
def test_dry_run_reports_missing_paths(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "missing.yaml"
    rc = _reproduce("table8", ["--dry-run", "--data", str(data), "--project", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"[MISSING] data YAML {data}: data YAML {data} not found" in out
    assert "[MISSING] ground-truth JSON <dataset root of" in out
    assert "imgsz=800" in out and "save_json=True" in out  # the commands are printed anyway


@pytest.mark.usefixtures("on_path", "no_subprocess")
def test_finetune_dry_run(dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, gt = dataset
    weights = tmp_path / "yolov8s.pt"
    weights.write_bytes(b"")
    argv = [
        "--dry-run",
        "--data",
        str(data),
        "--gt",
        str(gt),
        "--project",
        str(tmp_path / "p"),
        "--weights",
        str(weights),
    ]
    assert _reproduce("finetune", argv) == 0
    out = capsys.readouterr().out
    assert out.count(f"[ok] checkpoint {weights}") == 1
    assert f"yolo val model={weights} " in out  # the official checkpoint is evaluated as it is
    for model in ("yolov8s.yaml", "yolov8s-fine.yaml"):
        assert f"yolo train model={model} data={data} imgsz=640 epochs=30 " in out
    assert out.count(f"pretrained={weights}") == 2
    argv = ["--dry-run", "--data", str(data), "--gt", str(gt), "--base", "yolo12s", "--steps", "train"]
    assert _reproduce("finetune", argv) in (0, 1)
    out = capsys.readouterr().out
    assert "[download] checkpoint yolo12s.pt" in out or "[ok] checkpoint yolo12s.pt" in out
    assert "model=yolo12s-fine.yaml" in out and "yolo val" not in out


def _fake_runner(calls: list[list[str]], metrics: dict[str, dict[str, float]], fail: str = ""):
    """Stand-in for subprocess.run: records argv; the coco-eval step writes its JSON like the real one."""

    def run(argv: list[str], check: bool = False) -> subprocess.CompletedProcess:
        calls.append(argv)
        if argv[:2] == ["fine-yolo", "coco-eval"]:
            out = Path(_split(argv)["json"])
            name = out.parent.name.removesuffix("-val")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"metrics": metrics[name]}))
        return subprocess.CompletedProcess(argv, 3 if fail and fail in argv else 0)

    return run


def test_table8_run_and_table(monkeypatch: pytest.MonkeyPatch, dataset: tuple[Path, Path], tmp_path: Path) -> None:
    data, gt = dataset
    metrics = {
        "yolov8s": {"AP50": 0.463, "AP50:95": 0.281, "APs": 0.2},
        "yolov8s-fine": {"AP50": 0.475, "AP50:95": 0.2874, "APs": None},
    }
    calls: list[list[str]] = []
    monkeypatch.setattr(recipes.subprocess, "run", _fake_runner(calls, metrics))
    project = tmp_path / "p"
    argv = ["--data", str(data), "--gt", str(gt), "--project", str(project), "--pretrained", "yolov8s.pt"]
    assert _reproduce("table8", argv) == 0
    assert [c[:2] for c in calls] == [["yolo", "train"], ["yolo", "val"], ["fine-yolo", "coco-eval"]] * 2
    assert all("pretrained=yolov8s.pt" in c for c in calls if c[1] == "train")
    table = (project / "results.md").read_text()
    assert "| run | model | AP50 | AP50:95 | APs | Δ AP50 | paper AP50 | paper Δ AP50 |" in table
    assert "| yolov8s | `yolov8s.yaml` | 46.3 | 28.1 | 20.0 | — | 46.3 | — |" in table
    assert "| yolov8s-fine | `yolov8s-fine.yaml` | 47.5 | 28.7 | — | +1.2 | 47.2 | +0.9 |" in table
    assert "Not evaluated yet" not in table

    calls.clear()  # only the table: nothing is run, the same table comes back
    assert _reproduce("table8", [*argv, "--steps", "table"]) == 0
    assert calls == [] and (project / "results.md").read_text() == table


def test_failure_stops_with_a_rerun_hint(
    monkeypatch: pytest.MonkeyPatch, dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, gt = dataset
    calls: list[list[str]] = []
    monkeypatch.setattr(recipes.subprocess, "run", _fake_runner(calls, {}, fail="name=yolov8s-fine"))
    argv = ["--data", str(data), "--gt", str(gt), "--project", str(tmp_path / "p"), "--steps", "train,table"]
    assert _reproduce("table8", argv) == 3
    assert len(calls) == 2 and not (tmp_path / "p" / "results.md").exists()
    assert "models=yolov8s-fine steps=train,val,eval,table" in capsys.readouterr().out


def test_collect_marks_missing_runs(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    data, gt = dataset
    recipe = _build("table1",
        ["--data", str(data), "--gt", str(gt), "--project", str(tmp_path)]
    )
    (tmp_path / "yolov8s-fine-val").mkdir()
    keys = ("AP50:95", "AP50", "AP75", "APs", "APm", "APl")
    (tmp_path / "yolov8s-fine-val" / "coco_eval.json").write_text(json.dumps({"metrics": dict.fromkeys(keys, 0.458)}))
    table = recipes.collect(recipe)
    assert "| yolov8s-fine | `yolov8s-fine.yaml` | 45.8 | 45.8 | 45.8 | 45.8 | 45.8 | 45.8 | — | 45.8 | +0.8 |" in table
    assert "| yolo12s | `yolo12s.yaml` | — | — | — | — | — | — | — | 47.6 | — |" in table
    assert "Not evaluated yet (—): yolov8s, yolov10s, yolov10s-fine, yolo12s, yolo12s-fine." in table


def test_unknown_models_steps_and_recipe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _reproduce("table8", ["--dry-run", "--models", "nope", "--project", str(tmp_path)]) == 2
    assert "fine-yolo reproduce: unknown models=nope; choose from yolov8s, yolov8s-fine" in capsys.readouterr().err
    assert _reproduce("table8", ["--dry-run", "--steps", "bake", "--project", str(tmp_path)]) == 2
    assert "unknown steps=bake; choose from train, val, eval, table" in capsys.readouterr().err
    with pytest.raises(UsageError, match="recipe=table9' must be one of table1, table8, finetune"):
        recipes.COMMAND.parse(["table9"])
