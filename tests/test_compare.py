"""fine-yolo compare: interval and verdict maths, the plan's commands and settings check, the runner's resumability
(with a stand-in `yolo` that records what it is asked to do), the report, and the command end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import offline_env

from fine_yolo.compare import plan as plan_module
from fine_yolo.compare import runner
from fine_yolo.compare.command import COMMAND, parse_seeds
from fine_yolo.compare.plan import NOT_SETTINGS, make_plan
from fine_yolo.compare.report import METRICS, markdown, read_curve, summarize, table5
from fine_yolo.compare.stats import paired, t_quantile, verdict
from fine_yolo.data.synthetic import CLASS_NAMES, generate
from fine_yolo.errors import UsageError

# ------------------------------------------------------------------------------------------------------------- stats


def test_t_quantiles_are_students():
    # two-sided 95%: t_{0.975, n-1} from any t table
    assert [round(t_quantile(n), 3) for n in (2, 3, 4, 5, 10)] == [12.706, 4.303, 3.182, 2.776, 2.262]


def test_paired_interval_worked_by_hand():
    # d = [0.01, 0.03, -0.01]: mean 0.01, sd = sqrt((0 + 0.02^2 + 0.02^2) / 2) = 0.02, se = 0.02 / sqrt(3)
    # half width = 4.302653 * 0.011547 = 0.049683
    p = paired([0.19, 0.20, 0.17], [0.18, 0.17, 0.18])
    assert p.n == 3 and p.mean == pytest.approx(0.01) and p.sd == pytest.approx(0.02)
    assert (p.low, p.high) == (pytest.approx(-0.039683, abs=1e-6), pytest.approx(0.059683, abs=1e-6))
    assert p.contains_zero()
    assert verdict("AP50:95", p, scale=100, unit="points") == (
        "AP50:95 +1.0 [-4.0, +6.0] points: no measurable difference at 3 seeds (95% t-interval contains 0)")


def test_paired_interval_of_the_issue_numbers():
    # issue 9: seeds 0-3 of the 20-epoch demo, "paired difference -0.002 with a 95% t-interval of about
    # [-0.056, +0.052]"
    p = paired([0.1688, 0.1269, 0.1900, 0.1916], [0.1879, 0.1505, 0.1418, 0.2052])
    assert p.mean == pytest.approx(-0.002025)
    assert (round(p.low, 3), round(p.high, 3)) == (-0.056, 0.052)


def test_verdict_direction_only_when_the_interval_excludes_zero():
    # d = [2, 3, 4, 3]: mean 3, sd = sqrt(2/3) = 0.8165, se = 0.40825, t_{0.975,3} = 3.182446 -> half 1.299228
    p = paired([12, 13, 14, 13], [10, 10, 10, 10])
    assert (p.low, p.high) == (pytest.approx(1.700772, abs=1e-6), pytest.approx(4.299228, abs=1e-6))
    assert verdict("FP", p, higher_is_better=False, unit="boxes") == (
        "FP +3.0 [+1.7, +4.3] boxes: FINE higher (worse) at 4 seeds (95% t-interval excludes 0)")
    assert verdict("TP", p, unit="boxes").endswith("FINE higher (better) at 4 seeds (95% t-interval excludes 0)")
    neg = paired([10, 10, 10, 10], [12, 13, 14, 13])
    assert "FINE lower (better)" in verdict("FN", neg, higher_is_better=False)


def test_one_seed_has_no_interval_and_says_so():
    p = paired([0.3], [0.2])
    assert (p.n, p.low, p.high) == (1, None, None)
    assert verdict("AP50", p, scale=100) == "AP50 +10.0: 1 seed, no interval (a single seed cannot tell a difference)"


def test_paired_rejects_unpaired_or_nonfinite_values():
    with pytest.raises(ValueError, match="one FINE value per baseline value"):
        paired([1, 2], [1])
    with pytest.raises(ValueError, match="finite"):
        paired([float("nan"), 1], [1, 1])


# -------------------------------------------------------------------------------------------------------------- plan


def _plan(tmp_path, seeds=(0, 1), **extra):
    args = {"data": "fine-synth.yaml", "epochs": 3, "imgsz": 64, "batch": 2, "workers": 0, **extra}
    return make_plan("yolov8n-fine.yaml", "yolov8n.yaml", list(seeds), tmp_path / "proj", args)


def test_plan_runs_and_their_exact_commands(tmp_path):
    plan = _plan(tmp_path, pretrained="/w/base.pt")
    assert [r.name for r in plan.runs] == ["seed0-baseline", "seed0-fine", "seed1-baseline", "seed1-fine"]
    proj = tmp_path.resolve() / "proj" / "runs"
    assert plan.run(1, "fine").command("0") == (
        f"yolo train model=yolov8n-fine.yaml deterministic=True plots=False data=fine-synth.yaml epochs=3 imgsz=64 "
        f"batch=2 workers=0 pretrained=/w/base.pt exist_ok=True seed=1 project={proj} name=seed1-fine device=0")
    base, fine = plan.run(0, "baseline").args, plan.run(0, "fine").args
    assert {k for k in base if base[k] != fine[k]} == {"model", "name"}  # the two arms differ only there
    assert plan.run(0, "fine").resume_argv("cpu")[1:] == [
        "train", "resume=True", f"model={proj / 'seed0-fine' / 'weights' / 'last.pt'}", "device=cpu"]


def test_plan_refuses_keys_it_owns_and_repeated_seeds(tmp_path):
    with pytest.raises(ValueError, match="compare sets seed itself"):
        _plan(tmp_path, seed=3)
    with pytest.raises(ValueError, match="distinct"):
        make_plan("a-fine.yaml", "a.yaml", [1, 1], tmp_path, {"data": "d.yaml", "epochs": 1})


def test_fingerprint_follows_settings_not_placement(tmp_path):
    a = _plan(tmp_path).run(0, "fine")
    assert a.fingerprint() == _plan(tmp_path, workers=8).run(0, "fine").fingerprint()  # workers: not a setting
    assert a.fingerprint() != _plan(tmp_path, lr0=0.02).run(0, "fine").fingerprint()
    assert a.fingerprint() != _plan(tmp_path).run(1, "fine").fingerprint()  # seed
    assert a.fingerprint() != _plan(tmp_path).run(0, "baseline").fingerprint()  # model
    assert len(a.fingerprint()) == 12 and "device" in NOT_SETTINGS


def test_mismatches_read_args_yaml_as_ultralytics_records_it(tmp_path):
    spec = _plan(tmp_path).run(0, "fine")
    recorded = dict(spec.expected())
    assert spec.mismatches(recorded) == []
    resumed = {**recorded, "model": str(spec.run_dir / "weights" / "last.pt"), "device": "0", "resume": True}
    assert spec.mismatches(resumed) == []  # what ultralytics records after resume=True
    assert spec.mismatches({**recorded, "epochs": 20, "lr0": 0.02}) == ["epochs: 20 -> 3", "lr0: 0.02 -> 0.01"]
    assert spec.mismatches({**recorded, "model": "yolov8s-fine.yaml"}) == [
        "model: 'yolov8s-fine.yaml' -> 'yolov8n-fine.yaml'"]


def test_seeds_argument():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("0,4,7") == [0, 4, 7]
    for bad in ("0", "1,1", "a", "1,,2"):
        with pytest.raises(UsageError, match="seeds"):
            parse_seeds(bad)


def test_device_slots():
    assert runner.device_slots("0,1,2,3") == ["0", "1", "2", "3"]
    assert runner.device_slots("0,1,2,3", 2) == ["0,1", "2,3"]
    assert runner.device_slots("cpu") == ["cpu"] and runner.device_slots("") == [None]
    with pytest.raises(UsageError, match="devices_per_run=3"):
        runner.device_slots("0,1", 3)


# ----------------------------------------------------------------------------------------- runner with a stand-in yolo

# Does what `yolo train` leaves behind, without training: args.yaml as ultralytics records it, one results.csv row
# per epoch, last.pt/best.pt (epoch -1 once done). FAKE_STOP_AT=N stops after N epochs with an unstripped last.pt.
# It imports no torch (2-3 s a process): the fixture saves {"epoch": e} with torch once, the script copies the bytes.
_FAKE_YOLO = textwrap.dedent(
    """\
    #!{python}
    import ast, os, sys, json, pathlib
    import yaml
    CKPT = pathlib.Path(os.environ["FAKE_CKPTS"])  # epoch<e>.pt: torch.save({{"epoch": e}}), for e in -1..19
    def save(epoch, path):
        path.write_bytes((CKPT / f"epoch{{epoch}}.pt").read_bytes())
    DEFAULTS = json.loads(pathlib.Path(os.environ["FAKE_DEFAULTS"]).read_text())
    def typed(v):  # ultralytics' smart_value for the values these tests pass
        if v in ("True", "False", "None"):
            return {{"True": True, "False": False, "None": None}}[v]
        try:
            return ast.literal_eval(v)
        except (ValueError, SyntaxError):
            return v
    kv = dict(a.split("=", 1) for a in sys.argv[2:])
    with open(os.environ["FAKE_LOG"], "a") as f:
        f.write(json.dumps(sys.argv[1:]) + "\\n")
    if os.environ.get("FAKE_SLEEP"):
        pathlib.Path(os.environ["FAKE_LOG"] + ".pid").write_text(str(os.getpid()))
        import time; time.sleep(float(os.environ["FAKE_SLEEP"]))
    if kv.get("resume") == "True":
        run = pathlib.Path(kv["model"]).parent.parent
        args = yaml.safe_load((run / "args.yaml").read_text())
        last = pathlib.Path(kv["model"]).read_bytes()
        start = next(e for e in range(-1, 20) if (CKPT / f"epoch{{e}}.pt").read_bytes() == last) + 1
    else:
        args = {{**DEFAULTS, **{{k: typed(v) for k, v in kv.items()}}}}
        run = pathlib.Path(args["project"]) / args["name"]
        (run / "weights").mkdir(parents=True)
        (run / "args.yaml").write_text(yaml.safe_dump(args))
        (run / "results.csv").write_text("epoch,metrics/mAP50-95(B)\\n")
        start = 0
    stop = int(os.environ.get("FAKE_STOP_AT", args["epochs"]))
    for e in range(start, min(stop, args["epochs"])):
        with open(run / "results.csv", "a") as f:
            f.write(f"{{e + 1}},{{0.1 * (e + 1)}}\\n")
        save(e, run / "weights" / "last.pt")
        save(e, run / "weights" / "best.pt")
    if stop < args["epochs"]:
        sys.exit(3)
    save(-1, run / "weights" / "last.pt")
    """
)


@pytest.fixture
def fake_yolo(tmp_path, monkeypatch):
    exe = tmp_path / "fake-yolo"
    exe.write_text(_FAKE_YOLO.format(python=sys.executable))
    exe.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    from ultralytics.cfg import DEFAULT_CFG_DICT

    defaults = tmp_path / "defaults.json"
    defaults.write_text(json.dumps(DEFAULT_CFG_DICT))
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    for e in range(-1, 20):
        torch.save({"epoch": e}, ckpts / f"epoch{e}.pt")
    monkeypatch.setenv("FAKE_CKPTS", str(ckpts))
    monkeypatch.setenv("FAKE_DEFAULTS", str(defaults))
    monkeypatch.setattr(plan_module, "yolo_executable", lambda: str(exe))
    monkeypatch.setattr(runner, "POLL_S", 0.05)
    monkeypatch.setenv("FAKE_LOG", str(log))

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return calls


def test_runner_trains_then_skips_everything_on_a_rerun(tmp_path, fake_yolo):
    plan = _plan(tmp_path)
    first = runner.run_plan(plan, device="cpu", echo=lambda s: None)
    assert first.started == [r.name for r in plan.runs] and first.resumed == []
    assert len(fake_yolo()) == 4 and all(c[-1] == "device=cpu" for c in fake_yolo())
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "proj" / "runs").rglob("*.pt")}
    assert [runner.inspect(r).state for r in plan.runs] == ["finished"] * 4
    second = runner.run_plan(plan, device="cpu", echo=lambda s: None)
    assert (second.trained, second.skipped) == ([], [r.name for r in plan.runs])
    assert len(fake_yolo()) == 4  # no process was started
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "proj" / "runs").rglob("*.pt")} == mtimes
    assert read_curve(plan.runs[0].run_dir) == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3)]


def test_runner_resumes_an_interrupted_run_with_ultralytics_resume(tmp_path, fake_yolo, monkeypatch):
    plan = _plan(tmp_path, seeds=[0])
    spec = plan.run(0, "baseline")
    monkeypatch.setenv("FAKE_STOP_AT", "2")
    with pytest.raises(runner.CompareRunError, match=r"seed0-baseline failed \(exit 3\)"):
        runner.run_plan(plan, device="cpu", echo=lambda s: None)
    state = runner.inspect(spec)
    assert (state.state, state.epochs_done) == ("interrupted", 2)
    monkeypatch.delenv("FAKE_STOP_AT")
    done = runner.run_plan(plan, device="cpu", echo=lambda s: None)
    assert done.resumed == ["seed0-baseline"] and done.started == ["seed0-fine"]
    assert fake_yolo()[1] == ["train", "resume=True", f"model={spec.run_dir / 'weights' / 'last.pt'}", "device=cpu"]
    assert runner.results_epochs(spec.run_dir) == 3 and runner.inspect(spec).state == "finished"


def test_runner_moves_a_run_with_changed_settings_aside_and_redoes_it(tmp_path, fake_yolo):
    runner.run_plan(_plan(tmp_path, seeds=[0]), device="cpu", echo=lambda s: None)
    messages: list[str] = []
    again = runner.run_plan(_plan(tmp_path, seeds=[0], lr0=0.02), device="cpu", echo=messages.append)
    assert len(again.started) == 2 and len(again.stale) == 2
    stale = tmp_path / "proj" / "runs" / "stale" / "seed0-fine.1"
    assert (stale / "weights" / "best.pt").is_file()  # kept, not mixed in, not deleted
    assert any("seed0-fine: settings changed (lr0: 0.01 -> 0.02)" in m for m in messages)


def test_sigterm_stops_the_running_training_too(tmp_path, fake_yolo):
    # A scheduler's `kill` reaches compare, not its `yolo train` child: the child must not train on unattended.
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from fine_yolo.compare import plan as plan_module, runner
        plan_module.yolo_executable = lambda: {str(tmp_path / 'fake-yolo')!r}
        runner.POLL_S = 0.05
        plan = plan_module.make_plan("yolov8n-fine.yaml", "yolov8n.yaml", [0], Path({str(tmp_path)!r}) / "p",
                                     {{"data": "d.yaml", "epochs": 1}})
        runner.run_plan(plan, device="cpu")
        """
    )
    log = tmp_path / "calls.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", code], env=offline_env(FAKE_LOG=str(log), FAKE_SLEEP="120",
                                                                     FAKE_DEFAULTS=os.environ["FAKE_DEFAULTS"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pid_file = Path(str(log) + ".pid")
    for _ in range(600):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    child = int(pid_file.read_text())
    proc.terminate()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # the child is gone (reaped by compare) within moments
            os.kill(child, 0)
            time.sleep(0.05)


def test_inspect_treats_a_truncated_last_pt_as_nothing_to_resume(tmp_path):
    spec = _plan(tmp_path).run(0, "fine")
    (spec.run_dir / "weights").mkdir(parents=True)
    (spec.run_dir / "args.yaml").write_text(yaml.safe_dump(spec.expected()))
    torch.save({"epoch": 1, "pad": torch.zeros(1000)}, spec.run_dir / "weights" / "last.pt")
    assert runner.inspect(spec).state == "interrupted"
    data = (spec.run_dir / "weights" / "last.pt").read_bytes()
    (spec.run_dir / "weights" / "last.pt").write_bytes(data[: len(data) // 2])
    assert runner.inspect(spec).state == "empty"


# ------------------------------------------------------------------------------------------------------------ report


def _result(ap: float, tp: int, fp: int, fn: int) -> dict:
    coco = {"AP50:95": ap, "AP50": 2 * ap, "AP75": ap / 2, "APs": ap, "APm": None, "APl": None}
    p, r = tp / (tp + fp), tp / (tp + fn)
    return {"coco": coco, "errors": {"images": 40, "tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r,
                                     "f1": 2 * p * r / (p + r)}, "curve": [ap / 2, ap]}


def test_summary_markdown_and_table5(tmp_path):
    plan = _plan(tmp_path)
    results = {"seed0-baseline": _result(0.20, 100, 20, 50), "seed0-fine": _result(0.21, 104, 18, 46),
               "seed1-baseline": _result(0.18, 98, 22, 52), "seed1-fine": _result(0.20, 100, 21, 50)}
    s = summarize(plan, results)
    assert s["AP50:95"]["diff"] == [pytest.approx(0.01), pytest.approx(0.02)]
    # d = [1, 2] points: mean 1.5, sd = 0.7071, se = 0.5, t_{0.975,1} = 12.706 -> [-4.85, +7.85]
    assert s["AP50:95"]["verdict"] == (
        "AP50:95 +1.5 [-4.9, +7.9] points: no measurable difference at 2 seeds (95% t-interval contains 0)")
    assert s["FP"]["diff"] == [-2, -1] and s["APm"]["paired"] is None and "no value" in s["APm"]["verdict"]
    md = markdown(plan, s, results, "t")
    assert all(s[m.name]["verdict"] in md for m in METRICS)
    t5 = table5(plan, results).splitlines()
    # TP mean 99 -> 102 (+3.0%), FP 21 -> 19.5 (-7.1%), FN 51 -> 48 (-5.9%)
    assert t5[2].startswith("| yolov8n | 40 | 99.0 | 21.0 | 51.0 |")
    assert t5[3].startswith("| yolov8n-fine | 40 | 102.0 | 19.5 | 48.0 |")
    assert t5[4].startswith("| relative change | - | +3.0% | -7.1% | -5.9% |")


# ---------------------------------------------------------------------------------------------------------- command


def test_dry_run_prints_every_command_and_trains_nothing(tmp_path, capsys):
    args, extra = COMMAND.parse(["model=yolov8n-fine.yaml", "data=fine-synth.yaml", "seeds=2", "epochs=5",
                                 "imgsz=64", f"project={tmp_path / 'p'}", "device=0,1", "dry_run=True", "lr0=0.02"])
    assert extra == {"lr0": 0.02}
    assert COMMAND.run(args, extra) == 0
    out = capsys.readouterr().out
    lines = out[out.index("# seed0-baseline"):].splitlines()  # (ultralytics may print its settings notice first)
    assert lines[0] == "# seed0-baseline (empty)" and len(lines) == 8
    assert lines[1].startswith("yolo train model=yolov8n.yaml ") and lines[1].endswith("name=seed0-baseline device=0")
    assert lines[3].endswith("name=seed0-fine device=1") and " lr0=0.02 " in lines[3]
    assert not (tmp_path / "p").exists()


def test_bad_arguments_name_themselves(tmp_path):
    with pytest.raises(UsageError, match="pretrained=nope/base.pt': no such file"):
        COMMAND.run(*COMMAND.parse(["model=yolov8n-fine.yaml", "data=d.yaml", "pretrained=nope/base.pt"]))
    with pytest.raises(UsageError, match="model=yolov8n.yaml"):
        COMMAND.run(*COMMAND.parse(["model=yolov8n.yaml", "data=d.yaml"]))
    with pytest.raises(UsageError, match="compare sets seed itself"):
        COMMAND.run(*COMMAND.parse(["model=yolov8n-fine.yaml", "data=d.yaml", "seed=1", "dry_run=True"]))


@pytest.mark.slow
def test_compare_end_to_end_through_the_console_script(local_comparison):
    # The session's comparison (conftest.local_comparison: the toy demo's), trained once and shared with test_slurm;
    # the `fine-yolo compare` line the demo printed is rerun here through the console script.
    tmp_path, root, cmd, proc = local_comparison.cwd, local_comparison.root, local_comparison.cmd, local_comparison.proc
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert cmd[1:3] == ["compare", "model=yolov8n-fine.yaml"], proc.stdout
    cmp = local_comparison.project
    doc = json.loads((cmp / "compare.json").read_text())
    assert sorted(doc["runs"]) == ["seed0-baseline", "seed0-fine", "seed1-baseline", "seed1-fine"]
    assert doc["settings"]["this_invocation"]["trained"] == ["seed0-baseline", "seed0-fine", "seed1-baseline",
                                                             "seed1-fine"]
    ap = doc["metrics"]["AP50:95"]
    assert len(ap["baseline"]) == len(ap["fine"]) == 2 and ap["verdict"].startswith("AP50:95 ")
    for run in doc["runs"].values():
        e = run["errors"]
        assert e["tp"] + e["fn"] == sum(1 for f in (root / "labels" / "val").glob("*.txt")
                                        for line in f.read_text().splitlines() if line.strip())
        assert len(run["curve"]) == 1
    for png in ("curves.png", "differences.png"):
        assert (cmp / png).stat().st_size > 10_000
    assert "## Paired differences" in (cmp / "compare.md").read_text()
    best = {p: p.stat().st_mtime_ns for p in (cmp / "runs").rglob("best.pt")}
    again = subprocess.run(cmd, cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert "4 finished run(s) found, 0 to train" in again.stdout
    assert json.loads((cmp / "compare.json").read_text())["settings"]["this_invocation"]["trained"] == []
    assert {p: p.stat().st_mtime_ns for p in (cmp / "runs").rglob("best.pt")} == best


# ------------------------------------------------------------------------------------------- same initial weights


class _Stop(Exception):
    pass


def _initial_state(model: str, data: Path, seed: int, **extra) -> dict[str, torch.Tensor]:
    """The model ultralytics' trainer is about to train (after its own seeding and any pretrained transfer)."""
    from ultralytics import YOLO

    captured = {}

    def grab(trainer):
        captured.update({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
        raise _Stop

    y = YOLO(model)
    y.add_callback("on_pretrain_routine_end", grab)
    with pytest.raises(_Stop):
        y.train(data=str(data), epochs=1, imgsz=64, batch=2, workers=0, device="cpu", plots=False, seed=seed,
                deterministic=True, project=str(data.parent / "init"), name=f"{Path(model).stem}-{seed}",
                exist_ok=True, verbose=False, **extra)
    return captured


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("init")
    generate(root / "data", seed=0, n_train=2, n_val=2, imgsz=128)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    path = root / "tiny.yaml"
    path.write_text(f"path: {root / 'data'}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return path


def test_both_arms_start_from_the_same_baseline_weights(tiny_data):
    # What `yolo train model=... seed=s` trains: ultralytics seeds, then builds the FINE YAML's baseline layers first.
    base, fine = _initial_state("yolov8n.yaml", tiny_data, 3), _initial_state("yolov8n-fine.yaml", tiny_data, 3)
    new = set(fine) - set(base)
    assert new and all(k.startswith(("model.11.fine.", "model.14.fine.")) for k in new)  # inside the fusion rows
    assert all(torch.equal(v, fine[k]) for k, v in base.items())
    other = _initial_state("yolov8n.yaml", tiny_data, 4)
    assert not all(torch.equal(v, other[k]) for k, v in base.items())  # the seed does set the initialisation
    for k in ("model.11.fine.out.weight", "model.11.fine.out.bias", "model.14.fine.out.weight",
              "model.14.fine.out.bias"):
        assert torch.count_nonzero(fine[k]) == 0  # W_O = 0, b_O = 0: FINE starts as the identity


def test_pretrained_arms_start_from_the_checkpoint(tiny_data):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(123)  # a checkpoint unlike any seeded initialisation, with the dataset's 3 classes
    ckpt = tiny_data.parent / "base.pt"
    torch.save({"model": DetectionModel("yolov8n.yaml", nc=3, verbose=False)}, ckpt)
    saved = {k: v.float() for k, v in torch.load(ckpt, weights_only=False)["model"].state_dict().items()}
    base = _initial_state("yolov8n.yaml", tiny_data, 1, pretrained=str(ckpt))
    fine = _initial_state("yolov8n-fine.yaml", tiny_data, 1, pretrained=str(ckpt))
    for k, v in saved.items():
        assert torch.equal(base[k].float(), v) and torch.equal(fine[k].float(), v), k
