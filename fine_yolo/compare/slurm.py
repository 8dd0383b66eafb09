"""``fine-yolo compare ... launcher=slurm``: every unfinished (seed, arm) run as one task of a SLURM job array.

The comparison is the one :mod:`fine_yolo.compare.command` orchestrates for the local launcher: the same plan, run
folders, ``yolo train`` commands, logs (``PROJECT/logs/NAME.log``), evaluation and report. Only how a run is executed
differs: :func:`run_plan_slurm` takes the runs :func:`~fine_yolo.compare.runner.prepare` left to do (finished runs
are not resubmitted, changed ones are moved aside), submits them through ``submitit`` (``pip install
'fine-yolo[slurm]'``) as one job array, one task per run (``slurm_array_parallelism=`` caps how many run at once),
records each task's job id in ``PROJECT/logs/jobs.json`` and waits, reading ``squeue`` and submitit's result files in
``PROJECT/slurm/`` (not ``sacct``, which needs SLURM's accounting). A run still queued or running from an earlier
``compare`` is waited for, not submitted twice. Stopping ``compare`` (Ctrl-C) leaves the jobs running: a later
``compare`` with the same keys collects them, ``status=True`` shows them.

Each task runs :class:`TrainRun`: the run's ``yolo train`` on the node, ``device=0..g-1`` for
``slurm_gpus_per_run=g`` (g > 1: ultralytics' DDP inside the job; 0: CPU). Preemption and time limits:

* SLURM sends ``SIGUSR2`` 120 s before the time limit (and a preempting scheduler can send it): submitit calls
  :meth:`TrainRun.checkpoint`, which stops the training and requeues the task (a ``submitit.helpers.Checkpointable``).
* ``scontrol requeue``, a preemption by requeue or a node failure kill the task without that signal. So a task always
  starts by reading its run folder: an interrupted run resumes from its ``last.pt`` (``yolo train resume=True``), a
  finished one returns at once. Both arms write checkpoints atomically (``FINE_YOLO_ATOMIC_CHECKPOINTS=1``, see
  :mod:`fine_yolo.glue.checkpoints`), so a kill at any moment leaves a loadable ``last.pt`` and never restarts a run
  from epoch 0. A training killed by a signal while SLURM is stopping the job writes no result: the job ends quietly
  and its requeued self resumes; a training that exits with an error fails the task with the log's last lines.

Bad input fails before anything is submitted, one sentence each (:func:`preflight`): no ``submitit``, no ``sbatch``,
an unknown partition (``sinfo``), a data YAML or model that does not resolve here. ``slurm_time=`` defaults to the
partition's limit (none: no limit). Keys: :data:`OPTIONS`.
"""

from __future__ import annotations

import getpass
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fine_yolo.args import Option
from fine_yolo.compare.plan import Plan, RunSpec
from fine_yolo.compare.runner import (
    CompareRunError,
    RunReport,
    failure,
    inspect,
    log_path,
    prepare,
    read_jobs,
    record_job,
    results_epochs,
    start_run,
    tail,
)
from fine_yolo.errors import UsageError

try:  # the optional extra; preflight() says so before anything could be submitted
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover - depends on the environment
    Checkpointable, DelayedSubmission = object, None

OPTIONS = {
    "slurm_partition": Option("", "launcher=slurm: partition (default: the cluster's default partition)"),
    "slurm_time": Option("", "launcher=slurm: time limit per job, minutes or [D-]HH:MM[:SS] (default: the "
                             "partition's); a run reaching it is requeued and resumes"),
    "slurm_gpus_per_run": Option(0, "launcher=slurm: GPUs per run (>1: DDP inside the job; 0: CPU)"),
    "slurm_cpus_per_run": Option(0, "launcher=slurm: CPUs per run (0: the cluster's default)"),
    "slurm_mem": Option("", "launcher=slurm: memory per run, e.g. 32G (default: the cluster's)"),
    "slurm_account": Option("", "launcher=slurm: account to charge"),
    "slurm_qos": Option("", "launcher=slurm: quality of service"),
    "slurm_constraint": Option("", "launcher=slurm: node features, e.g. a100"),
    "slurm_array_parallelism": Option(0, "launcher=slurm: at most this many runs at once (0: all)"),
}
ACTIVE = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
                    "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "PREEMPTED"})
POLL_S = 5.0
SIGNAL_DELAY_S = 120  # SIGUSR2 this long before the time limit: time to stop a training and requeue
MAX_REQUEUES = 1000  # submitit's count of time-limit requeues; a long training resumes across many


@dataclass(frozen=True)
class SlurmSettings:
    """The ``slurm_*`` keys (empty or 0: the cluster's default)."""

    partition: str = ""
    time: str = ""
    gpus_per_run: int = 0
    cpus_per_run: int = 0
    mem: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    array_parallelism: int = 0

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> SlurmSettings:
        return cls(**{k[len("slurm_"):]: args[k] for k in OPTIONS if k in args})

    @property
    def device(self) -> str:
        """The ``device=`` of each run inside its job (SLURM numbers a job's GPUs from 0)."""
        return ",".join(map(str, range(self.gpus_per_run))) if self.gpus_per_run > 0 else "cpu"


def parse_time(value: str) -> int:
    """SLURM's time formats (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``) in minutes, rounded up."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
    if not m:
        raise UsageError(f"argument 'slurm_time={value}' must be minutes or [D-]HH:MM[:SS]")
    d, a, b, c = (int(x) if x else None for x in m.groups())
    if d is not None:  # D-H[:M[:S]]
        seconds = ((d * 24 + a) * 60 + (b or 0)) * 60 + (c or 0)
    elif c is not None:  # H:M:S
        seconds = (a * 60 + b) * 60 + c
    else:  # M or M:S
        seconds = a * 60 + (b or 0)
    return math.ceil(seconds / 60)


def _run(argv: Sequence[str]) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True, timeout=60).stdout


def partitions() -> dict[str, str]:
    """Partition -> its time limit as ``sinfo`` prints it; the default partition's name carries a ``*``."""
    out = {}
    for line in _run(["sinfo", "-h", "-o", "%P %l"]).splitlines():
        if line.strip():
            name, limit = line.split()
            out.setdefault(name, limit)
    return out


def preflight(plan: Plan, settings: SlurmSettings) -> dict[str, Any]:
    """Check everything that can be checked here, before anything is submitted; the executor's parameters.

    One :class:`UsageError` sentence each for: submitit missing, no ``sbatch``, an unknown partition, a data YAML or
    model (or ``pretrained=``) that does not resolve on this machine.
    """
    if DelayedSubmission is None:
        raise UsageError("launcher=slurm submits through submitit, which is not installed: "
                         "pip install 'fine-yolo[slurm]' (or launcher=local)")
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise UsageError("launcher=slurm needs SLURM's sbatch and squeue on PATH, and there are none here: "
                         "run compare on a SLURM login node (or launcher=local)")
    try:
        parts = partitions()
    except (OSError, subprocess.SubprocessError) as e:
        raise UsageError(f"launcher=slurm: sinfo does not answer ({e}); is SLURM running?") from None
    names = {p.rstrip("*"): limit for p, limit in parts.items()}
    default = next((p.rstrip("*") for p in parts if p.endswith("*")), None)
    partition = settings.partition or default
    if partition not in names:
        raise UsageError(f"argument 'slurm_partition={settings.partition}': no such partition; sinfo lists "
                         f"{', '.join(sorted(names)) or 'none'}" if settings.partition else
                         "launcher=slurm: the cluster has no default partition; give slurm_partition=")
    limit = settings.time or names[partition]
    minutes = 0 if limit.lower() in ("infinite", "unlimited", "n/a") else parse_time(limit)
    _check_resolves(plan)
    params: dict[str, Any] = {"partition": partition, "time": minutes, "nodes": 1, "ntasks_per_node": 1,
                              "job_name": f"fine-compare-{plan.project.name}", "signal_delay_s": SIGNAL_DELAY_S,
                              "stderr_to_stdout": True}
    optional = {"gpus_per_node": settings.gpus_per_run, "cpus_per_task": settings.cpus_per_run, "mem": settings.mem,
                "account": settings.account, "qos": settings.qos, "constraint": settings.constraint,
                "array_parallelism": settings.array_parallelism}
    params.update({k: v for k, v in optional.items() if v})
    return params


def _check_resolves(plan: Plan) -> None:
    """The data YAML and both models (YAML names or local files) resolve here: a job would fail on them later."""
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.nn.tasks import yaml_model_load

    data = str(plan.runs[0].args["data"])
    try:
        check_det_dataset(data, autodownload=False)
    except Exception as e:  # ultralytics raises FileNotFoundError, SyntaxError, KeyError... for a bad dataset
        raise UsageError(f"argument 'data={data}' does not resolve on this machine: {str(e).strip()}") from None
    keys = [("baseline", plan.baseline), ("model", plan.model)]
    if plan.runs[0].args.get("pretrained"):
        keys.append(("pretrained", str(plan.runs[0].args["pretrained"])))
    for key, name in keys:
        if Path(name).suffix in (".yaml", ".yml"):
            try:
                yaml_model_load(name)
                continue
            except FileNotFoundError:
                pass
        elif Path(name).is_file() or name in ("True", "False"):
            continue
        raise UsageError(f"argument '{key}={name}' does not resolve on this machine (no such model YAML or file; "
                         "compute nodes may be offline, so give a local path)")


def queue_states() -> dict[str, str] | None:
    """This user's jobs in ``squeue`` (all states still listed): job id (``12_0`` for array tasks) -> state.

    None when ``squeue`` does not answer (then nothing is concluded from its silence).
    """
    try:
        out = _run(["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%T"])
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(line.strip().split("|", 1) for line in out.splitlines() if "|" in line)


QUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SUSPENDED"})


def job_state(queue: dict[str, str] | None) -> Callable[[dict], str | None]:
    """For :func:`fine_yolo.compare.runner.status`: a job record's state from submitit's result file and ``queue``
    (:func:`queue_states`): failed (an error result), queued, running, or None (no verdict: left the queue, or done)."""

    def state(record: dict) -> str | None:
        outcome = _outcome(record)
        if outcome is not None:
            return "failed" if outcome[0] != "success" else None
        q = None if queue is None else queue.get(record["job_id"])
        return None if q not in ACTIVE else "queued" if q in QUEUED else "running"

    return state


def _being_stopped(wait_s: float = 10.0) -> bool:
    """Whether SLURM is ending this job (requeue, preemption, cancel): its state leaves RUNNING."""
    job = os.environ.get("SLURM_JOB_ID")
    deadline = time.time() + wait_s
    while job:
        try:
            state = _run(["squeue", "-h", "-j", job, "-o", "%T"]).strip()
        except (OSError, subprocess.SubprocessError):
            return True  # the job is gone from the queue: it is being ended
        if state != "RUNNING":
            return True
        if time.time() > deadline:
            return False
        time.sleep(1.0)
    return False


class TrainRun(Checkpointable):
    """One run as a SLURM task: train it (or resume it, or return if finished), requeue when signalled."""

    def __init__(self, spec: RunSpec, device: str):
        self.spec, self.device, self._proc = spec, device, None

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "device": self.device, "_proc": None}

    def __call__(self) -> str:
        st = inspect(self.spec)
        if st.state == "finished":
            return "finished"
        if st.state == "changed":
            raise CompareRunError(f"{self.spec.name}: {self.spec.run_dir} was changed after submission "
                                  f"({'; '.join(st.why)}); run compare again")
        self._proc, argv = start_run(st, self.device)
        try:
            code = self._proc.wait()
        finally:
            if self._proc.poll() is None:
                self._proc.terminate()
                self._proc.wait()
        if code == 0:
            return "resumed" if st.state == "interrupted" else "trained"
        if code < 0 and _being_stopped():
            raise SystemExit(128 - code)  # SLURM is requeueing or cancelling the job: no result, its next start resumes
        raise CompareRunError(failure(self.spec, code, argv))

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on SIGUSR2 (time limit, preemption): stop the training, requeue this run.

        Runs in a signal handler that interrupted ``__call__``'s ``wait()``, which holds the process's wait lock: so
        only a SIGTERM here; the training's atomic checkpoint writes make any moment safe, and ``__call__`` reaps it
        as submitit's exit unwinds.
        """
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
        return DelayedSubmission(TrainRun(self.spec, self.device))


def submit(plan: Plan, states: Sequence, params: dict[str, Any], device: str) -> list:
    """Submit ``states``' runs as one job array; record each task's job id in ``jobs.json``; the submitit jobs."""
    import submitit

    executor = submitit.SlurmExecutor(folder=plan.project / "slurm" / "%j", max_num_timeout=MAX_REQUEUES)
    executor.update_parameters(**params)
    with executor.batch():
        jobs = [executor.submit(TrainRun(st.spec, device)) for st in states]
    for st, job in zip(states, jobs):
        record_job(plan.project, st.spec.name, launcher="slurm", job_id=str(job.job_id),
                   slurm_log=str(job.paths.stdout), result=str(job.paths.result_pickle),
                   command=st.spec.command(device))
    return jobs


def _outcome(record: dict[str, Any]) -> tuple[str, Any] | None:
    """submitit's ``("success", value)`` or ``("error", traceback)`` for a task, None before it has one."""
    from submitit.core.utils import pickle_load

    path = Path(record["result"])
    try:
        return pickle_load(path) if path.is_file() else None
    except Exception:  # half-written by a filesystem that is not atomic: read it next time
        return None


def run_plan_slurm(plan: Plan, settings: SlurmSettings, echo: Callable[[str], None] = print) -> RunReport:
    """Submit every unfinished run of ``plan`` as a job array and wait for all of them (see the module docstring).

    Raises :class:`CompareRunError` (with the report, ``failed`` filled) when a run failed.
    """
    from tqdm import tqdm

    params = preflight(plan, settings)
    report, todo = prepare(plan, echo)
    if not todo:
        return report
    jobs, queue = read_jobs(plan.project), queue_states() or {}
    waiting = {st.spec.name for st in todo if jobs.get(st.spec.name, {}).get("launcher") == "slurm"
               and queue.get(jobs[st.spec.name]["job_id"]) in ACTIVE}
    for name in sorted(waiting):
        echo(f"{name}: already submitted as SLURM job {jobs[name]['job_id']} ({queue[jobs[name]['job_id']]}); "
             "waiting for it")
    new = [st for st in todo if st.spec.name not in waiting]
    if new:
        submitted = submit(plan, new, params, settings.device)
        echo(f"submitted {len(new)} run(s) as SLURM job array {str(submitted[0].job_id).split('_')[0]} "
             f"(partition {params['partition']}); logs in {plan.project / 'logs'}")
    for st in todo:
        (report.resumed if st.state == "interrupted" else report.started).append(st.spec.name)
    pending = {st.spec.name: st.spec for st in todo}
    gone: dict[str, int] = {}  # polls in a row a job was missing from squeue without a result
    fmt = "{desc}{percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} runs [{elapsed}<{remaining}{postfix}]"
    try:
        with tqdm(total=len(todo), desc="SLURM", bar_format=fmt) as bar:
            while pending:
                time.sleep(POLL_S)
                jobs, queue = read_jobs(plan.project), queue_states()
                for name, spec in list(pending.items()):
                    record = jobs[name]
                    outcome = _outcome(record)
                    state = None if queue is None else queue.get(record["job_id"])
                    if outcome is None and (queue is None or state in ACTIVE):
                        continue
                    if outcome is None:  # left the queue without a result: killed, cancelled, node failure
                        gone[name] = gone.get(name, 0) + 1
                        if gone[name] < 2:  # a result file may still be on its way over the network
                            continue
                    del pending[name]
                    bar.update(1)
                    if outcome is not None and outcome[0] == "success":
                        continue
                    why = str(outcome[1]).strip().splitlines()[-1] if outcome else \
                        f"job {record['job_id']} ended ({state or 'gone from squeue'}) without finishing the run"
                    report.failed[name] = (f"{name} failed (SLURM job {record['job_id']}): {why}\n"
                                           f"log {log_path(spec)} (SLURM's: {record['slurm_log']}):\n"
                                           f"{tail(log_path(spec))}")
                    record_job(plan.project, name, exit=1)
                bar.set_postfix_str(", ".join(f"{n} {results_epochs(s.run_dir)}/{s.epochs}"
                                              for n, s in pending.items())[:80], refresh=True)
    except KeyboardInterrupt:
        echo(f"compare stopped; the SLURM jobs go on (`scancel` them to stop): rerun the same command to collect "
             f"them, or add status=True to see them. Job ids: {plan.project / 'logs' / 'jobs.json'}")
        raise
    if report.failed:
        raise CompareRunError("\n\n".join(report.failed.values()), report)
    return report
