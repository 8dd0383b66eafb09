"""fine-yolo compare launcher=slurm: the bad-input sentences (no SLURM needed), then against a real single-node SLURM
(.ci/slurm_up.sh): a job-array comparison equals the local one, a requeued run resumes from its last epoch, a run
that fails on the node is named with its log. Without SLURM those skip with the reason; with
FINE_YOLO_REQUIRE_SLURM=1 (CI) they fail instead. Every test cancels the jobs it submitted."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from fine_yolo.compare import runner
from fine_yolo.compare import slurm as slurm_module
from fine_yolo.compare.command import COMMAND
from fine_yolo.compare.plan import make_plan
from fine_yolo.compare.slurm import SlurmSettings, parse_time, preflight
from fine_yolo.data.synthetic import CLASS_NAMES, generate
from fine_yolo.errors import UsageError

REQUIRE = os.environ.get("FINE_YOLO_REQUIRE_SLURM") == "1"
TRAIN = {"epochs": 1, "imgsz": 64, "batch": 2, "workers": 0}  # the local end-to-end comparison's settings

# ------------------------------------------------------------------------------------------------- bad input, no SLURM


@pytest.mark.parametrize("value, minutes", [("90", 90), ("0:30", 1), ("90:30", 91), ("1:30:00", 90), ("2-0", 2880),
                                            ("1-01:00", 1500), ("1-01:00:30", 1501)])
def test_slurm_time_formats_in_minutes(value, minutes):
    assert parse_time(value) == minutes


def test_a_bad_slurm_time_names_itself():
    with pytest.raises(UsageError, match=r"slurm_time=1h' must be minutes or \[D-\]HH:MM\[:SS\]"):
        parse_time("1h")


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    """Data like the local comparison's (6 train, 4 val images), without waiting for that comparison's training."""
    root = tmp_path_factory.mktemp("slurm_data")
    generate(root / "data", seed=0, n_train=6, n_val=4, imgsz=128)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    path = root / "tiny.yaml"
    path.write_text(f"path: {root / 'data'}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return path


def _plan(tmp_path, data, model="yolov8n-fine.yaml", baseline="yolov8n.yaml", seeds=(0,), **extra):
    return make_plan(model, baseline, list(seeds), tmp_path / "p", {"data": str(data), **TRAIN, **extra})


@pytest.fixture
def fake_cluster(monkeypatch):
    """sbatch/squeue "on PATH" and sinfo answering two partitions, the default one with a one-day limit."""
    monkeypatch.setattr(slurm_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm_module, "partitions", lambda: {"gpu*": "1-00:00:00", "cpu": "infinite"})


def test_preflight_fills_the_executor_from_sinfo(tmp_path, data_yaml, fake_cluster):
    params = preflight(_plan(tmp_path, data_yaml), SlurmSettings(gpus_per_run=2, mem="8G"))
    assert (params["partition"], params["time"], params["gpus_per_node"], params["mem"]) == ("gpu", 24 * 60, 2, "8G")
    assert "cpus_per_task" not in params and "account" not in params  # 0 / "": the cluster's default
    assert SlurmSettings(gpus_per_run=2).device == "0,1" and SlurmSettings().device == "cpu"
    cpu = preflight(_plan(tmp_path, data_yaml), SlurmSettings(partition="cpu", time="2:00:00"))
    assert (cpu["partition"], cpu["time"]) == ("cpu", 120)
    assert preflight(_plan(tmp_path, data_yaml), SlurmSettings(partition="cpu"))["time"] == 0  # infinite: no limit


def test_no_submitit_or_no_sbatch_is_one_sentence(tmp_path, data_yaml, monkeypatch):
    monkeypatch.setattr(slurm_module, "DelayedSubmission", None)
    with pytest.raises(UsageError, match=r"submitit, which is not installed: pip install 'fine-yolo\[slurm\]'"):
        preflight(_plan(tmp_path, data_yaml), SlurmSettings())
    monkeypatch.undo()
    monkeypatch.setattr(slurm_module.shutil, "which", lambda name: None)
    with pytest.raises(UsageError, match="needs SLURM's sbatch and squeue on PATH, and there are none here"):
        preflight(_plan(tmp_path, data_yaml), SlurmSettings())


def test_unknown_partition_data_or_model_fail_before_anything_is_submitted(tmp_path, data_yaml, fake_cluster,
                                                                          monkeypatch):
    submitted = []
    monkeypatch.setattr(slurm_module, "submit", lambda *a, **k: submitted.append(a))
    common = [f"data={data_yaml}", "epochs=1", f"project={tmp_path / 'p'}", "launcher=slurm"]
    cases = [
        (["model=yolov8n-fine.yaml", "slurm_partition=a100"], "'slurm_partition=a100': no such partition; sinfo "
                                                              "lists cpu, gpu"),
        (["model=yolov8n-fine.yaml", f"data={tmp_path / 'nope.yaml'}"], "does not resolve on this machine"),
        (["model=yolov8q-fine.yaml", "baseline=nope.yaml"], "'baseline=nope.yaml' does not resolve on this machine"),
        (["model=yolov8n-fine.yaml", f"pretrained={tmp_path / 'gone' / 'base.pt'}"], "no such file"),
        (["model=yolov8n-fine.yaml", "baseline=yolov8n.pt"], "'baseline=yolov8n.pt' does not resolve"),
    ]
    for keys, message in cases:
        with pytest.raises(UsageError, match=re.escape(message)):
            COMMAND.run(*COMMAND.parse(common + keys))
    assert submitted == [] and not (tmp_path / "p").exists()  # nothing submitted, no run folder touched


# ----------------------------------------------------------------------------------- status, shared by both launchers


def _trained(spec, epoch: int = -1) -> None:
    """What ultralytics leaves: args.yaml as recorded, last.pt (epoch -1 once done) and best.pt."""
    (spec.run_dir / "weights").mkdir(parents=True)
    (spec.run_dir / "args.yaml").write_text(yaml.safe_dump(spec.expected()))
    for f in ("last.pt", "best.pt"):
        torch.save({"epoch": epoch}, spec.run_dir / "weights" / f)


def test_status_and_complete_pairs_of_local_runs(tmp_path):
    plan = _plan(tmp_path, "d.yaml", seeds=(0, 1), epochs=3)
    base0, fine0, base1, fine1 = plan.runs
    for spec, epoch in ((base0, -1), (fine0, -1), (fine1, 1)):  # seed1-fine: epoch 2 of 3 saved
        _trained(spec, epoch)
    here = socket.gethostname()
    runner.record_job(plan.project, fine1.name, launcher="local", pid=os.getpid(), host=here)
    runner.record_job(plan.project, base1.name, launcher="local", pid=1, host=here)
    runner.record_job(plan.project, base1.name, exit=1)  # merged into the record
    runner.log_path(base1).write_text("$ yolo train ...\nepoch 1\nTraceback (most recent call last):\nError: boom\n")
    assert runner.read_jobs(plan.project)[base1.name] == {"launcher": "local", "pid": 1, "host": here, "exit": 1}
    rows = {r["run"]: r for r in runner.status(plan)}
    assert {n: r["state"] for n, r in rows.items()} == {
        "seed0-baseline": "finished", "seed0-fine": "finished", "seed1-baseline": "failed", "seed1-fine": "running"}
    assert rows["seed1-baseline"]["tail"] == "epoch 1\nTraceback (most recent call last):\nError: boom"
    assert (rows["seed1-baseline"]["job"], rows["seed1-baseline"]["log"]) == (1, str(runner.log_path(base1)))
    assert rows["seed1-fine"]["epochs"] == "0/3" and rows["seed0-fine"]["log"] is None
    runner.record_job(plan.project, fine1.name, exit=-15)  # stopped by a signal: resumable from its last.pt
    assert runner.status(plan)[3]["state"] == "interrupted"
    seeds, missing = runner.complete_pairs(plan, {base1.name: "seed1-baseline failed (exit 1): ..."})
    assert seeds == [0] and missing == {"seed1-baseline": f"failed, log {runner.log_path(base1)}",
                                        "seed1-fine": "interrupted, not finished"}


def test_a_task_reads_its_run_folder_first(tmp_path):
    # What every start of a SLURM task does, requeued or not: a finished run returns at once, a changed one stops.
    plan = _plan(tmp_path, "d.yaml", seeds=(0,), epochs=3)
    base, fine = plan.runs
    _trained(base)
    task = slurm_module.TrainRun(base, "cpu")
    assert task() == "finished" and not runner.log_path(base).exists()  # no training was started
    _trained(fine)
    changed = _plan(tmp_path, "d.yaml", seeds=(0,), epochs=5).run(0, "fine")
    with pytest.raises(runner.CompareRunError, match=r"seed0-fine: .* was changed after submission \(epochs: 3 -> 5\)"):
        slurm_module.TrainRun(changed, "cpu")()
    task._proc = subprocess.Popen(["sleep", "60"])
    copy = pickle.loads(pickle.dumps(task))  # what submitit pickles: the spec and device, never the process
    assert (copy.spec, copy.device, copy._proc) == (base, "cpu", None)
    requeued = task.checkpoint()  # on SIGUSR2: the training is signalled, the same run is resubmitted
    assert task._proc.wait(timeout=30) == -signal.SIGTERM
    assert (requeued.function.spec, requeued.function.device, requeued.args) == (base, "cpu", ())


# ------------------------------------------------------------------------------------------------- the real SLURM


def _slurm_missing() -> str | None:
    """Why the tests cannot use a SLURM here (None when sinfo shows a usable node and submitit imports)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM here (sinfo/sbatch not on PATH; `bash .ci/slurm_up.sh` starts a single-node one as root)"
    if slurm_module.DelayedSubmission is None:
        return "submitit is not installed (pip install -e '.[slurm]')"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"sinfo does not answer ({e})"
    if out.returncode or not re.search(r"^(idle|mix|alloc)", out.stdout, re.M):
        return f"SLURM has no usable node: sinfo says {(out.stdout + out.stderr).strip()!r}"
    return None


@pytest.fixture(scope="module")
def cluster():
    why = _slurm_missing()
    if why:
        if REQUIRE:
            pytest.fail(f"FINE_YOLO_REQUIRE_SLURM=1, but {why}")
        pytest.skip(why)


@pytest.fixture
def cancel_after(tmp_path):
    """Cancel every SLURM job recorded under the test's projects when the test ends, however it ends."""
    yield
    ids = {j["job_id"].split("_")[0] for f in tmp_path.rglob(runner.JOBS_FILE)
           for j in json.loads(f.read_text()).values() if j.get("launcher") == "slurm"}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True, timeout=60)


def _states(plan) -> dict[str, str]:
    return {r["run"]: r["state"] for r in runner.status(plan, slurm_module.job_state(slurm_module.queue_states()))}


@pytest.mark.slow
def test_a_job_array_comparison_equals_the_local_one(cluster, local_comparison, tmp_path, monkeypatch, capsys,
                                                     cancel_after):
    monkeypatch.setattr(slurm_module, "POLL_S", 1.0)
    local = local_comparison.project
    argv = [arg.replace(str(local), str(tmp_path / "cmp")) for arg in local_comparison.cmd[2:]]
    assert f"project={tmp_path / 'cmp'}" in argv
    args, extra = COMMAND.parse(argv + ["launcher=slurm", "slurm_cpus_per_run=1"])
    assert COMMAND.run(args, extra) == 0
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    ref = json.loads((local / "compare.json").read_text())
    names = ["seed0-baseline", "seed0-fine", "seed1-baseline", "seed1-fine"]
    assert doc["settings"]["launcher"] == "slurm" and doc["settings"]["this_invocation"]["trained"] == names
    jobs = runner.read_jobs(tmp_path / "cmp")
    assert sorted(jobs) == names and len({j["job_id"].split("_")[0] for j in jobs.values()}) == 1  # one job array
    assert sorted(j["job_id"].split("_")[1] for j in jobs.values()) == ["0", "1", "2", "3"]
    # CPU training with deterministic=True is reproducible here: the same weights, so the same numbers and verdicts.
    for name in names:
        mine = torch.load(tmp_path / "cmp" / "runs" / name / "weights" / "best.pt", weights_only=False)["model"]
        theirs = torch.load(local / "runs" / name / "weights" / "best.pt", weights_only=False)["model"]
        assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in mine.state_dict().items()), name
        assert doc["runs"][name]["coco"] == ref["runs"][name]["coco"]
        paths = ("pred", "gt")  # the evaluation files, under each project
        assert {k: v for k, v in doc["runs"][name]["errors"].items() if k not in paths} == \
            {k: v for k, v in ref["runs"][name]["errors"].items() if k not in paths}
    assert {k: v["verdict"] for k, v in doc["metrics"].items()} == {k: v["verdict"] for k, v in ref["metrics"].items()}
    # A rerun submits nothing: every run is finished.
    capsys.readouterr()
    assert COMMAND.run(args, extra) == 0
    assert "4 finished run(s) found, 0 to train" in capsys.readouterr().out
    assert runner.read_jobs(tmp_path / "cmp") == jobs
    assert COMMAND.run(*COMMAND.parse(argv + ["status=True"])) == 0
    out = capsys.readouterr().out
    for name in names:
        assert f"{name}: finished, epoch 1/1, job {jobs[name]['job_id']}, log {tmp_path / 'cmp' / 'logs'}" in out


def _interrupt(plan, spec, job, after: int, how: list[str], deadline: float) -> int:
    """Once ``last.pt`` holds an epoch later than ``after``, interrupt the job ``how``; wait until SLURM has ended it
    (no result written) and holds it requeued (~2 min, BeginTime), release it; the epoch it must resume from."""
    last = spec.run_dir / "weights" / "last.pt"
    while (epoch := runner.checkpoint_epoch(last) if last.is_file() else None) is None or 0 <= epoch <= after:
        assert time.time() < deadline, runner.tail(runner.log_path(spec))
        time.sleep(0.2)
    assert epoch >= 0, "the training finished before it could be interrupted"
    subprocess.run(how, check=True, timeout=60)
    while _states(plan)[spec.name] != "queued":
        assert time.time() < deadline and not Path(job.paths.result_pickle).exists()
        time.sleep(0.5)
    saved = runner.checkpoint_epoch(last)
    assert 0 <= saved < spec.epochs - 1, "the training finished before the interruption reached it"
    subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now"], check=True, timeout=60)
    return saved


@pytest.mark.slow
def test_a_requeued_or_preempted_run_resumes_from_its_last_epoch(cluster, data_yaml, tmp_path, cancel_after):
    plan = _plan(tmp_path, data_yaml, epochs=8)
    spec = plan.run(0, "baseline")
    (job,) = slurm_module.submit(plan, [runner.RunState(spec, "empty")], preflight(plan, SlurmSettings()), "cpu")
    deadline = time.time() + 300
    # scontrol requeue (also a node failure, a preemption by requeue): killed without warning, resumes on its own
    first = _interrupt(plan, spec, job, -1, ["scontrol", "requeue", job.job_id], deadline)
    # SIGUSR2, what SLURM sends before a time limit (and a preemption can): submitit calls TrainRun.checkpoint
    second = _interrupt(plan, spec, job, first, ["scancel", "--signal=USR2", job.job_id], deadline)
    assert job.result() == "resumed"
    last = spec.run_dir / "weights" / "last.pt"
    log = runner.log_path(spec).read_text()
    assert log.count("\n$ ") == 3 and log.count(f"train resume=True model={last} device=cpu") == 2
    for saved in (first, second):  # ultralytics' "Resuming training ... from epoch N to 8 total epochs"
        assert f"from epoch {saved + 2} to 8 total epochs" in log
    assert runner.inspect(spec).state == "finished" and runner.results_epochs(spec.run_dir) == 8
    assert "Caught signal SIGUSR2" in Path(job.paths.stdout).read_text()  # submitit's checkpoint-and-requeue
    restarts = subprocess.run(["scontrol", "show", "job", job.job_id], capture_output=True, text=True).stdout
    assert "Restarts=2" in restarts


@pytest.mark.slow
def test_a_run_failing_on_the_node_is_named_with_its_log(cluster, data_yaml, tmp_path, monkeypatch, cancel_after):
    monkeypatch.setattr(slurm_module, "POLL_S", 0.5)
    data = tmp_path / "data.yaml"
    data.write_text(data_yaml.read_text())
    plan = _plan(tmp_path, data)
    params = {**preflight(plan, SlurmSettings()), "additional_parameters": {"hold": True}}
    held = slurm_module.submit(plan, [runner.RunState(spec, "empty") for spec in plan.runs], params, "cpu")
    jobs = runner.read_jobs(plan.project)
    assert [jobs[spec.name]["job_id"] for spec in plan.runs] == [j.job_id for j in held]
    assert _states(plan) == {"seed0-baseline": "queued", "seed0-fine": "queued"}
    raised: list[BaseException] = []
    messages: list[str] = []

    def launch():  # a second compare finds both runs queued: it waits for them instead of submitting them again
        try:
            slurm_module.run_plan_slurm(plan, SlurmSettings(), echo=messages.append)
        except BaseException as e:  # noqa: B036 - handed to the test thread
            raised.append(e)

    thread = threading.Thread(target=launch)
    thread.start()
    deadline = time.time() + 120
    while len(messages) < 2:
        assert time.time() < deadline and thread.is_alive(), raised
        time.sleep(0.2)
    assert messages == [f"{spec.name}: already submitted as SLURM job {jobs[spec.name]['job_id']} (PENDING); waiting "
                        "for it" for spec in plan.runs]
    data.write_text("path: [unclosed\n")  # the dataset YAML turns corrupt after submission: on the node
    array = held[0].job_id.split("_")[0]
    subprocess.run(["scontrol", "release", array], check=True, timeout=60)
    thread.join(timeout=240)
    assert not thread.is_alive() and len(raised) == 1 and isinstance(raised[0], runner.CompareRunError), raised
    assert runner.read_jobs(plan.project) == {**jobs, **{n: {**j, "exit": 1} for n, j in jobs.items()}}  # no resubmit
    failed = raised[0].report.failed
    assert sorted(failed) == ["seed0-baseline", "seed0-fine"]
    for name, message in failed.items():
        log = plan.project / "logs" / f"{name}.log"
        assert message.startswith(f"{name} failed (SLURM job {array}_") and f"log {log}" in message
        assert runner.tail(log) in message and "yolo train" in log.read_text()
    seeds, missing = runner.complete_pairs(plan, failed)
    assert seeds == [] and missing["seed0-fine"] == f"failed, log {plan.project / 'logs' / 'seed0-fine.log'}"
    assert _states(plan) == {"seed0-baseline": "failed", "seed0-fine": "failed"}
