"""Run the trainings of a :class:`~fine_yolo.compare.plan.Plan`: one ``yolo train`` process per run, resumably.

State of a run, read from its directory ``PROJECT/runs/seed{s}-{arm}`` (nothing else is kept):

* **finished** — ``weights/last.pt`` loads, and its epoch is -1 (ultralytics strips the optimizer and sets -1 when a
  training ends) or the last one, ``weights/best.pt`` exists, and ``args.yaml`` matches the plan: skipped.
* **interrupted** — ``last.pt`` loads from an earlier epoch and the settings match: resumed with ultralytics' own
  ``yolo train resume=True model=RUN/weights/last.pt`` (checkpoint writes of FINE trainings are atomic, see
  :mod:`fine_yolo.glue.checkpoints`, so a kill at any moment leaves a loadable ``last.pt``).
* **changed** — ``args.yaml`` differs from the plan in a setting (:meth:`RunSpec.mismatches`): the old directory is
  moved to ``PROJECT/runs/stale/`` (never mixed in, never deleted) and the run starts afresh.
* **empty** — no directory, or one without a loadable ``last.pt`` (killed before its first checkpoint): started afresh.

Devices. ``device=0,1,2,3`` gives four slots, each running one training at a time (independent processes, so the
runs are the same commands a cluster would run); ``devices_per_run=2`` groups them as ``0,1`` and ``2,3`` and each run
is then a DDP training on its group (ultralytics starts DDP itself for a multi-device ``device=``). ``device=cpu`` (or
``mps``, or nothing) is one slot.

Progress: one tqdm bar counting runs (fractions of a run as its epochs complete, read from the run's
``results.csv``), with the current run and epoch and the time left. Each run's output goes to ``PROJECT/logs/``.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
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


class CompareRunError(FineYoloError, RuntimeError):
    """A training of the comparison failed; the message names the run, its command and its log."""


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


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


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
        elif st.state == "empty" and spec.run_dir.exists():
            shutil.rmtree(spec.run_dir)  # no loadable checkpoint: nothing in it can be continued
        todo.append(st)
    if report.skipped:
        echo(f"{len(report.skipped)} finished run(s) found, {len(todo)} to train")
    if not todo:
        return report

    logs = plan.project / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    queue = list(todo)
    active: dict[int, _Active] = {}
    failed: list[str] = []
    n_total = len(todo)
    # SIGTERM (a scheduler, `kill`) and Ctrl-C both stop the running trainings before this process ends; a background
    # shell may have SIGINT ignored, so SIGTERM is the one signal that always reaches us.
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() \
        else None
    fmt = "{desc}{percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} runs [{elapsed}<{remaining}{postfix}]"
    done_before = sum(st.epochs_done / st.spec.epochs for st in todo)  # resumed runs: not progress of this session
    with tqdm(total=n_total, initial=done_before, desc="compare", bar_format=fmt) as bar:
        try:
            while active or (queue and not failed):
                for slot, dev in enumerate(slots):
                    if slot in active or not queue or failed:
                        continue
                    st = queue.pop(0)
                    resume = st.state == "interrupted"
                    argv = st.spec.resume_argv(dev) if resume else st.spec.argv(dev)
                    (report.resumed if resume else report.started).append(st.spec.name)
                    log = logs / f"{st.spec.name}.log"
                    with open(log, "a") as fh:
                        fh.write(f"\n$ {' '.join(argv)}\n")
                        fh.flush()
                        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
                    active[slot] = _Active(st, proc, log, argv, counted=st.epochs_done / st.spec.epochs)
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
                        if code != 0:
                            failed.append(
                                f"{a.state.spec.name} failed (exit {code}): {' '.join(a.argv)}\n"
                                f"log {a.log}:\n{_tail(a.log)}"
                            )
                current = [f"{a.state.spec.name} epoch {results_epochs(a.state.spec.run_dir)}/{a.state.spec.epochs}"
                           for a in active.values()]
                started = len(report.trained)
                bar.set_description(f"run {min(started, n_total)}/{n_total}")
                bar.set_postfix_str(", ".join(current), refresh=True)
        except BaseException as e:
            for a in active.values():  # a Ctrl-C or a failure here: stop the children; their last.pt is intact
                a.proc.terminate()
            for a in active.values():
                a.proc.wait()
            if isinstance(e, _Terminated):
                raise SystemExit(128 + signal.SIGTERM) from None
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    if failed:
        raise CompareRunError("\n\n".join(failed))
    return report


def missing_best(specs: Sequence[RunSpec]) -> list[str]:
    """Names of runs without ``weights/best.pt`` (what ``dry_run`` users must still train)."""
    return [s.name for s in specs if not (s.run_dir / "weights" / "best.pt").is_file()]
