"""`fine-yolo reproduce`: the paper's recipes as plans of `fine-yolo compare` (checks, identical arms, the table)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fine_yolo.compare.command as compare_command
import fine_yolo.recipes as recipes
from fine_yolo.cli import run_subcommand
from fine_yolo.errors import UsageError


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A data YAML with existing train/val image folders and its own COCO GT JSON (not read by a dry run)."""
    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val.json").write_text("{}")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: a\n")
    return data


def _train_commands(out: str) -> list[dict[str, str]]:
    """The `yolo train` lines a dry run prints, as key -> value."""
    lines = [line for line in out.splitlines() if line.startswith("yolo train ")]
    return [dict(t.split("=", 1) for t in line.split()[2:]) for line in lines]


def test_table1_dry_run_checks_paths_and_prints_three_comparisons(dataset: Path, tmp_path: Path, capsys) -> None:
    project = tmp_path / "p"
    assert run_subcommand("reproduce", ["table1", "dry_run=True", f"data={dataset}", f"project={project}"]) == 0
    out = capsys.readouterr().out
    assert "[MISSING]" not in out and "all checks passed" in out
    assert f"[ok] ground-truth JSON {dataset.parent / 'annotations' / 'instances_val.json'}" in out
    for base in ("yolov8s", "yolov10s", "yolo12s"):
        assert f"[ok] model {base}-fine.yaml" in out and f"[ok] model {base}.yaml" in out
    runs = _train_commands(out)
    assert [(r["model"], r["name"]) for r in runs] == [
        (f"{base}{arm}.yaml", f"seed0-{name}") for base in ("yolov8s", "yolov10s", "yolo12s")
        for arm, name in (("", "baseline"), ("-fine", "fine"))
    ]  # one seed (the paper's single run), two arms, three pairs
    assert not project.exists()  # a dry run writes nothing


def test_table1_arms_differ_only_in_model_and_follow_each_familys_schedule(dataset: Path, tmp_path: Path,
                                                                           capsys) -> None:
    assert run_subcommand("reproduce", ["table1", "dry_run=True", f"data={dataset}", f"project={tmp_path}"]) == 0
    runs = _train_commands(capsys.readouterr().out)
    for (base, fine), epochs, pair in zip(zip(runs[::2], runs[1::2]), ("500", "500", "600"),
                                          ("yolov8s", "yolov10s", "yolo12s")):
        assert (base.pop("model"), fine.pop("model")) == (f"{pair}.yaml", f"{pair}-fine.yaml")
        assert (base.pop("name"), fine.pop("name")) == ("seed0-baseline", "seed0-fine")
        assert base == fine  # identical settings, device included (devices_per_run=4: one DDP group per run)
        assert (base["epochs"], base["seed"], base["deterministic"], base["imgsz"], base["batch"], base["device"]) == (
            epochs, "0", "True", "640", "64", "0,1,2,3")
        assert base["data"] == str(dataset) and base["project"] == str(tmp_path / pair / "runs")
        assert not {"lr0", "optimizer", "mosaic"} & base.keys()  # ultralytics' defaults
    assert run_subcommand("reproduce", ["table1", "dry_run=True", f"data={dataset}", f"project={tmp_path}",
                                        "epochs=3", "seeds=2", "launcher_hint=x"]) == 0
    runs = _train_commands(capsys.readouterr().out)
    assert len(runs) == 12 and {r["epochs"] for r in runs} == {"3"} and {r["seed"] for r in runs} == {"0", "1"}
    assert {r["launcher_hint"] for r in runs} == {"x"}  # an unknown key passes through to every `yolo train`


def test_dry_run_reports_missing_paths(tmp_path: Path, capsys) -> None:
    data = tmp_path / "missing.yaml"
    assert run_subcommand("reproduce", ["table8", "dry_run=True", f"data={data}", f"project={tmp_path}"]) == 1
    out = capsys.readouterr().out
    assert f"[MISSING] data YAML {data}:" in out and "1 check(s) failed" in out
    assert "imgsz=800" in out and "epochs=100" in out  # the commands are printed anyway


def test_finetune_dry_run(dataset: Path, tmp_path: Path, capsys) -> None:
    weights = tmp_path / "yolov8s.pt"
    weights.write_bytes(b"")
    argv = ["finetune", "dry_run=True", f"data={dataset}", f"project={tmp_path / 'p'}", f"weights={weights}"]
    assert run_subcommand("reproduce", argv) == 0
    out = capsys.readouterr().out
    assert out.count(f"[ok] checkpoint {weights}") == 1
    runs = _train_commands(out)
    assert [r["model"] for r in runs] == ["yolov8s.yaml", "yolov8s-fine.yaml"]
    assert {r["pretrained"] for r in runs} == {str(weights)} and {r["epochs"] for r in runs} == {"30"}
    assert run_subcommand("reproduce", ["finetune", "dry_run=True", f"data={dataset}", "base=yolo12s",
                                        f"project={tmp_path / 'q'}"]) == 0
    out = capsys.readouterr().out
    assert "[download] checkpoint yolo12s.pt not here; `yolo` downloads it by name (needs network)" in out
    assert [r["model"] for r in _train_commands(out)] == ["yolo12s.yaml", "yolo12s-fine.yaml"]


def _fake_compare(calls: list[list[str]], coco: dict[str, dict[str, float | None]], rc: int = 0):
    """Stand-in for compare's run: records its arguments and writes compare.json the way compare does."""

    def run(args: dict, extra: dict) -> int:
        calls.append([args["model"], args["baseline"], str(args["project"]), args["seeds"]])
        if rc:
            return rc
        project = Path(args["project"])
        project.mkdir(parents=True, exist_ok=True)
        runs = {f"seed{s}-{arm}": {"seed": s, "arm": arm, "coco": coco[f"{arm}{s}"]}
                for s in (0, 1) for arm in ("baseline", "fine")}
        (project / "compare.json").write_text(json.dumps({"runs": runs}))
        return 0

    return run


def test_table8_runs_through_compare_and_writes_the_table(monkeypatch, dataset: Path, tmp_path: Path) -> None:
    coco = {"baseline0": {"AP50": 0.460, "AP50:95": 0.280, "APs": 0.2},
            "baseline1": {"AP50": 0.466, "AP50:95": 0.282, "APs": None},
            "fine0": {"AP50": 0.470, "AP50:95": 0.290, "APs": None},
            "fine1": {"AP50": 0.480, "AP50:95": 0.2848, "APs": None}}
    calls: list[list[str]] = []
    monkeypatch.setattr(compare_command.COMMAND, "run", _fake_compare(calls, coco))
    project = tmp_path / "p"
    argv = ["table8", f"data={dataset}", f"project={project}", "pretrained=yolov8s.pt", "seeds=2"]
    assert run_subcommand("reproduce", argv) == 0
    assert calls == [["yolov8s-fine.yaml", "yolov8s.yaml", str(project / "yolov8s"), "2"]]
    table = (project / "results.md").read_text()
    assert "| pair | model | AP50 | AP50:95 | APs | Δ AP50 | paper AP50 | paper Δ AP50 |" in table
    # means over the two seeds: AP50 46.3 / 47.5, AP50:95 28.1 / 28.74; APs only where a run has it
    assert "| yolov8s | `yolov8s.yaml` | 46.3 | 28.1 | 20.0 | — | 46.3 | — |" in table
    assert "|  | `yolov8s-fine.yaml` | 47.5 | 28.7 | — | +1.2 | 47.2 | +0.9 |" in table
    assert "Not compared yet" not in table


def test_a_failed_comparison_stops_with_a_rerun_hint(monkeypatch, dataset: Path, tmp_path: Path, capsys) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(compare_command.COMMAND, "run", _fake_compare(calls, {}, rc=3))
    assert run_subcommand("reproduce", ["table1", f"data={dataset}", f"project={tmp_path / 'p'}"]) == 3
    assert len(calls) == 1 and not (tmp_path / "p" / "results.md").exists()
    assert "the comparison of yolov8s failed (exit code 3); rerun with models=yolov8s" in capsys.readouterr().out


def test_collect_marks_pairs_not_compared_yet(dataset: Path, tmp_path: Path) -> None:
    args, extra = recipes.COMMAND.parse(["table1", f"data={dataset}", f"project={tmp_path}"])
    recipe = recipes.build("table1", args, extra)
    (tmp_path / "yolov8s").mkdir()
    runs = {"seed0-fine": {"arm": "fine", "coco": dict.fromkeys(recipes.COCO_METRICS, 0.458)},
            "seed0-baseline": {"arm": "baseline", "coco": None}}  # a run compare could not evaluate
    (tmp_path / "yolov8s" / "compare.json").write_text(json.dumps({"runs": runs}))
    table = recipes.collect(recipe)
    assert "|  | `yolov8s-fine.yaml` | 45.8 | 45.8 | 45.8 | 45.8 | 45.8 | 45.8 | — | 45.8 | +0.8 |" in table
    assert "| yolo12s | `yolo12s.yaml` | — | — | — | — | — | — | — | 47.6 | — |" in table
    assert "Not compared yet (—): yolov10s, yolo12s." in table


def test_unknown_pairs_and_recipes_are_named(tmp_path: Path, capsys) -> None:
    assert run_subcommand("reproduce", ["table8", "dry_run=True", "models=nope", f"project={tmp_path}"]) == 2
    assert "fine-yolo reproduce: unknown models=nope; choose from yolov8s" in capsys.readouterr().err
    assert run_subcommand("reproduce", ["finetune", "dry_run=True", "base=yolov5s", f"project={tmp_path}"]) == 2
    assert "argument 'base=yolov5s' must be one of yolov8s, yolov10s, yolo12s" in capsys.readouterr().err
    with pytest.raises(UsageError, match="recipe=table9' must be one of table1, table8, finetune"):
        recipes.COMMAND.parse(["table9"])
