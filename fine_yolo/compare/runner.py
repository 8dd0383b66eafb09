"""Run the trainings of a :class:`~fine_yolo.compare.plan.Plan`: one ``yolo train`` process per run, resumably.

State of a run, read from its directory ``PROJECT/runs/seed{s}-{arm}`` (nothing else is kept):

* **finished** — ``weights/last.pt`` loads, and its epoch is -1 (ultralytics strips the optimizer and sets -1 when a
  training ends) or the last one, ``weights/best.pt`` exists, and ``args.yaml`` matches the plan: skipped.
* **interrupted** — ``last.pt`` loads from an earlier epoch and the settings match: resumed with ultralytics' own
  ``yolo train resume=True model=RUN/weights/last.pt`` (every run of a comparison, either arm, writes its checkpoints
  atomically: :func:`train_env` sets ``FINE_YOLO_ATOMIC_CHECKPOINTS=1``, see :mod:`fine_yolo.glue.checkpoints`, so a
  kill at any moment leaves a loadable ``last.pt``).
* **changed** — ``args.yaml`` differs from the plan in a setting (:meth:`RunSpec.mismatches`): the old directory is
  moved to ``PROJECT/runs/stale/`` (never mixed in, never deleted) and the run starts afresh.
* **empty** — no directory, or one without a loadable ``last.pt`` (killed before its first checkpoint): started afresh.

Devices. ``device=0,1,2,3`` gives four slots, each running one training at a time (independent processes, so the
runs are the same commands a cluster would run); ``devices_per_run=2`` groups them as ``0,1`` and ``2,3`` and each run
is then a DDP training on its group (ultralytics starts DDP itself for a multi-device ``device=``). ``device=cpu`` (or
``mps``, or nothing) is one slot.

Progress: one tqdm bar counting runs (fractions of a run as its epochs complete, read from the run's
``results.csv``), with the current run and epoch and the time left. Each run's output goes to
``PROJECT/logs/NAME.log``.

Launchers. How a run is executed is the only thing that differs between this module's local slots and SLURM
(:mod:`fine_yolo.compare.slurm`): both take the runs to do from :func:`prepare`, start each with :func:`start_run`
(the same command, log and environment), and record where it runs in ``PROJECT/logs/jobs.json``
(:func:`record_job`), which :func:`status` reads: queued / running (epoch) / finished / failed, with the log's tail.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fine_yolo.compare.plan import Plan, RunSpec
from fine_yolo.errors import FineYoloError, UsageError

POLL_S = 2.0


ENV_ATOMIC = "FINE_YOLO_ATOMIC_CHECKPOINTS"  # read by fine_yolo.glue.checkpoints
JOBS_FILE = "jobs.json"
AUTO_RESOLVED = ("optimizer", "lr0", "warmup_bias_lr")  # what optimizer=auto rewrites (BaseTrainer.build_optimizer)


class CompareRunError(FineYoloError, RuntimeError):
    """A training of the comparison failed; the message names the run, its command and its log.

    ``report`` (when set) is what the launcher did before it gave up, ``failed`` included.
    """

    def __init__(self, message: str, report: RunReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class RunState:
    """What the runner found for one run: ``finished``, ``interrupted``, ``changed`` or ``empty``."""

    spec: RunSpec
    state: str
    epochs_done: int = 0
    why: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    """What :func:`run_plan` did: names of runs trained from scratch, resumed, skipped, moved aside."""

    started: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # the directories they were moved to
    failed: dict[str, str] = field(default_factory=dict)  # run name -> why (exit code, log path and tail)

    @property
    def trained(self) -> list[str]:
        return self.started + self.resumed


def device_slots(device: str, devices_per_run: int = 1) -> list[str | None]:
    """``"0,1,2,3"`` -> ``["0", "1", "2", "3"]``; ``devices_per_run=2`` -> ``["0,1", "2,3"]``; cpu -> ``["cpu"]``."""
    device = str(device).strip()
    if not device:
        return [None]
    items = [d.strip() for d in device.split(",")]
    if any(not d for d in items):
        raise UsageError(f"argument 'device={device}' must be a comma-separated device list")
    if not all(d.isdigit() for d in items):
        if len(items) > 1:
            raise UsageError(f"argument 'device={device}': only GPU indices can be listed, not {device!r}")
        return [device]
    if devices_per_run < 1 or len(items) % devices_per_run:
        raise UsageError(
            f"argument 'devices_per_run={devices_per_run}' must divide the {len(items)} devices of device={device}"
        )
    return [",".join(items[i : i + devices_per_run]) for i in range(0, len(items), devices_per_run)]


def results_epochs(run_dir: Path) -> int:
    """Epochs completed so far: the distinct ``epoch`` values of ultralytics' ``results.csv`` (0 before it exists).

    Distinct, because a run killed after logging epoch N but before saving it logs epoch N again when resumed.
    """
    try:
        with open(run_dir / "results.csv", newline="") as f:
            rows = list(csv.reader(f))
    except OSError:
        return 0
    return len({row[0].strip() for row in rows[1:] if row})


def checkpoint_epoch(path: Path) -> int | None:
    """The ``epoch`` stored in an ultralytics checkpoint (-1 once training ended), or None if it does not load."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        return int(ckpt.get("epoch", -1))
    except Exception:  # a truncated or foreign file: the run cannot resume from it
        return None


def inspect(spec: RunSpec) -> RunState:
    """Classify ``spec``'s directory (see the module docstring)."""
    import yaml

    run_dir = spec.run_dir
    if not (run_dir / "args.yaml").is_file():
        return RunState(spec, "empty")
    try:
        recorded = yaml.safe_load((run_dir / "args.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        return RunState(spec, "changed", why=[f"{run_dir / 'args.yaml'} unreadable ({e})"])
    if recorded.get("resume") and spec.expected().get("optimizer") == "auto":
        # optimizer=auto: ultralytics writes its choice into the trainer's args (optimizer, lr0, warmup_bias_lr=0),
        # and a resumed training records those in args.yaml. They are the plan's own settings, resolved.
        recorded = {**recorded, **{k: spec.expected()[k] for k in AUTO_RESOLVED}}
    why = spec.mismatches(recorded)
    if why:
        return RunState(spec, "changed", why=why)
    last = run_dir / "weights" / "last.pt"
    epoch = checkpoint_epoch(last) if last.is_file() else None
    if epoch is None:
        return RunState(spec, "empty", why=[f"no loadable {last}"])
    done = results_epochs(run_dir)
    if (epoch == -1 or epoch + 1 >= spec.epochs) and (run_dir / "weights" / "best.pt").is_file():
        return RunState(spec, "finished", epochs_done=done)
    return RunState(spec, "interrupted", epochs_done=epoch + 1)


def _move_aside(run_dir: Path) -> Path:
    stale_root = run_dir.parent / "stale"
    stale_root.mkdir(parents=True, exist_ok=True)
    n = 1
    while (stale_root / f"{run_dir.name}.{n}").exists():
        n += 1
    target = stale_root / f"{run_dir.name}.{n}"
    os.replace(run_dir, target)
    return target


@dataclass
class _Active:
    state: RunState
    proc: subprocess.Popen
    log: Path
    argv: list[str]
    counted: float = 0.0  # fraction of this run already shown on the bar


class _Terminated(BaseException):
    """SIGTERM arrived: stop the children (their last.pt is intact) and exit with 128 + 15 like a killed process."""


def _on_sigterm(signum, frame):
    raise _Terminated


def tail(path: Path, n: int = 25) -> str:
    """The last ``n`` lines of a text file ('' when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def train_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a run's ``yolo train``: ``env`` (default: this process's) with atomic checkpoint writes."""
    return {**(os.environ if env is None else env), ENV_ATOMIC: "1"}


def prepare(plan: Plan, echo: Callable[[str], None] = print) -> tuple[RunReport, list[RunState]]:
    """Classify every run: finished ones are skipped, changed ones moved aside; return the runs still to train."""
    report = RunReport()
    todo: list[RunState] = []
    for spec in plan.runs:
        st = inspect(spec)
        if st.state == "finished":
            report.skipped.append(spec.name)
            continue
        if st.state == "changed":
            target = _move_aside(spec.run_dir)
            report.stale.append(str(target))
            echo(f"{spec.name}: settings changed ({'; '.join(st.why)}); old run moved to {target}, training afresh")
            st = RunState(spec, "empty")
        todo.append(st)
    if report.skipped:
        echo(f"{len(report.skipped)} finished run(s) found, {len(todo)} to train")
    return report, todo


def log_path(spec: RunSpec) -> Path:
    """``PROJECT/logs/NAME.log``: every launcher appends a run's command and output there."""
    return Path(spec.args["project"]).parent / "logs" / f"{spec.name}.log"


def start_run(st: RunState, device: str | None, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, list]:
    """Start ``st``'s training (``yolo train resume=True`` when interrupted), appending to its log; (process, argv).

    A directory without a loadable ``last.pt`` holds nothing that can be continued and is removed first.
    """
    spec = st.spec
    if st.state == "empty" and spec.run_dir.exists():
        shutil.rmtree(spec.run_dir)
    argv = spec.resume_argv(device) if st.state == "interrupted" else spec.argv(device)
    log = log_path(spec)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(argv)}\n")
        fh.flush()
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=train_env(env))
    return proc, argv


def failure(spec: RunSpec, code: int | None, argv: Sequence[str]) -> str:
    """The message of a failed run: its name, exit code, command, log path and the log's last lines."""
    log = log_path(spec)
    return f"{spec.name} failed (exit {code}): {' '.join(map(str, argv))}\nlog {log}:\n{tail(log)}"


def read_jobs(project: Path) -> dict[str, dict]:
    """``PROJECT/logs/jobs.json``: run name -> where it was last started (launcher, pid or SLURM job id, ...)."""
    try:
        return json.loads((Path(project) / "logs" / JOBS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def record_job(project: Path, name: str, **info) -> None:
    """Merge ``info`` into run ``name``'s record in ``jobs.json`` (written beside, then replaced)."""
    jobs = read_jobs(project)
    jobs[name] = {**(jobs.get(name, {}) if info.get("launcher") is None else {}), **info}
    path = Path(project) / "logs" / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(jobs, indent=1))
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status(plan: Plan, job_state: Callable[[dict], str | None] | None = None, lines: int = 3) -> list[dict]:
    """For every run: ``state`` (queued / running / finished / failed / interrupted / not started / changed), the epochs
    done, the job (SLURM job id or local pid), the log and its last ``lines``.

    ``job_state`` tells a SLURM job's state from its ``jobs.json`` record (:func:`fine_yolo.compare.slurm.job_state`:
    queued, running, failed, or None once it left the queue). A local run is running while its recorded process
    lives. A run whose job or process is gone without finishing it is interrupted (``last.pt`` to resume) or failed.
    """
    jobs = read_jobs(plan.project)
    out = []
    for spec in plan.runs:
        st, job = inspect(spec), jobs.get(spec.name, {})
        known = job_state(job) if job.get("launcher") == "slurm" and job_state is not None else None
        if st.state == "finished":
            state = "finished"
        elif job.get("exit", 0) > 0:
            state = "failed"
        elif known is not None:
            state = known
        elif job.get("launcher") == "local" and job.get("host") == socket.gethostname() and "exit" not in job \
                and _pid_alive(int(job["pid"])):
            state = "running"
        elif job:
            state = "interrupted" if st.state == "interrupted" else "failed"
        else:
            state = {"interrupted": "interrupted", "changed": "changed"}.get(st.state, "not started")
        log = log_path(spec)
        out.append({"run": spec.name, "state": state, "epochs": f"{results_epochs(spec.run_dir)}/{spec.epochs}",
                    "job": job.get("job_id") or job.get("pid"), "log": str(log) if log.is_file() else None,
                    "tail": tail(log, lines), **({"why": st.why} if st.why else {})})
    return out


def run_plan(
    plan: Plan,
    device: str = "",
    devices_per_run: int = 1,
    env: dict[str, str] | None = None,
    echo: Callable[[str], None] = print,
) -> RunReport:
    """Train every run of ``plan`` that is not finished (see the module docstring); raise on a failed training."""
    from tqdm import tqdm

    slots = device_slots(device, devices_per_run)
    report, todo = prepare(plan, echo)
    if not todo:
        return report
    from fine_yolo.glue.font import offline_fonts

    offline_fonts()  # offline, the runs' ultralytics finds a font where it looks instead of trying the network

    queue = list(todo)
    active: dict[int, _Active] = {}
    n_total = len(todo)
    # SIGTERM (a scheduler, `kill`) and Ctrl-C both stop the running trainings before this process ends; a background
    # shell may have SIGINT ignored, so SIGTERM is the one signal that always reaches us.
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() \
        else None
    fmt = "{desc}{percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} runs [{elapsed}<{remaining}{postfix}]"
    done_before = sum(st.epochs_done / st.spec.epochs for st in todo)  # resumed runs: not progress of this session
    with tqdm(total=n_total, initial=done_before, desc="compare", bar_format=fmt) as bar:
        try:
            while active or (queue and not report.failed):
                for slot, dev in enumerate(slots):
                    if slot in active or not queue or report.failed:
                        continue
                    st = queue.pop(0)
                    (report.resumed if st.state == "interrupted" else report.started).append(st.spec.name)
                    proc, argv = start_run(st, dev, env)
                    record_job(plan.project, st.spec.name, launcher="local", pid=proc.pid,
                               host=socket.gethostname(), command=argv)
                    active[slot] = _Active(st, proc, log_path(st.spec), argv, counted=st.epochs_done / st.spec.epochs)
                time.sleep(POLL_S)
                for slot in list(active):
                    a = active[slot]
                    done = min(results_epochs(a.state.spec.run_dir), a.state.spec.epochs)
                    code = a.proc.poll()
                    frac = 1.0 if code == 0 else done / a.state.spec.epochs
                    if frac > a.counted:
                        bar.update(frac - a.counted)
                        a.counted = frac
                    if code is not None:
                        del active[slot]
                        record_job(plan.project, a.state.spec.name, exit=code)
                        if code != 0:
                            report.failed[a.state.spec.name] = failure(a.state.spec, code, a.argv)
                current = [f"{a.state.spec.name} epoch {results_epochs(a.state.spec.run_dir)}/{a.state.spec.epochs}"
                           for a in active.values()]
                started = len(report.trained)
                bar.set_description(f"run {min(started, n_total)}/{n_total}")
                bar.set_postfix_str(", ".join(current), refresh=True)
        except BaseException as e:
            for a in active.values():  # a Ctrl-C or a failure here: stop the children; their last.pt is intact
                a.proc.terminate()
            for a in active.values():
                record_job(plan.project, a.state.spec.name, exit=a.proc.wait())
            if isinstance(e, _Terminated):
                raise SystemExit(128 + signal.SIGTERM) from None
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    if report.failed:
        raise CompareRunError("\n\n".join(report.failed.values()), report)
    return report


def complete_pairs(plan: Plan, failed: dict[str, str] | None = None) -> tuple[list[int], dict[str, str]]:
    """Seeds whose two runs are both finished, and every other run with why it is left out (failure or state)."""
    states = {spec.name: inspect(spec).state for spec in plan.runs}
    seeds = [s for s in plan.seeds if all(states[plan.run(s, arm).name] == "finished" for arm in ("baseline", "fine"))]
    missing = {}
    for spec in plan.runs:
        if spec.seed not in seeds:
            missing[spec.name] = f"failed, log {log_path(spec)}" if spec.name in (failed or {}) else \
                "its pair is incomplete" if states[spec.name] == "finished" else f"{states[spec.name]}, not finished"
    return seeds, missing


def missing_best(specs: Sequence[RunSpec]) -> list[str]:
    """Names of runs without ``weights/best.pt`` (what ``dry_run`` users must still train)."""
    return [s.name for s in specs if not (s.run_dir / "weights" / "best.pt").is_file()]
