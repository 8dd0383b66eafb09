"""The runs of a comparison: one (seed, arm) pair each, its exact ``yolo train`` command, and its settings check.

A comparison of a FINE model against its baseline over seeds ``s_1..s_n`` is ``2n`` independent ultralytics
trainings. Run ``seed{s}-{arm}`` (arm ``baseline`` or ``fine``) is::

    yolo train model=M data=D epochs=E imgsz=S batch=B seed=s deterministic=True workers=W plots=False \
        project=PROJECT/runs name=seed{s}-{arm} exist_ok=True [pretrained=P] [every extra train key]

Both arms of one seed get exactly the same arguments except ``model=`` (and the name), so they share the seed, the
data order and augmentation stream, and — because ultralytics builds a FINE YAML's baseline layers first from the
same seeded generator and FINE starts as the identity — the baseline layers' initial weights (a test checks it). With
``pretrained=P`` both arms start from the checkpoint ``P`` (the FINE arm's extra tensors start as the identity).
``device=`` is added by the runner per run; it does not belong to a run's settings.

Settings check. ultralytics records every argument of a training in ``RUN/args.yaml`` (its defaults overlaid with
the command line). A run directory belongs to this plan only if that record equals ultralytics' defaults overlaid
with the plan's arguments, on every key except :data:`NOT_SETTINGS` (where and how fast a run goes, not what it
computes). This works for runs the runner started and for runs a cluster started from ``dry_run=True``'s commands;
:meth:`RunSpec.mismatches` names each differing key. :meth:`RunSpec.fingerprint` is the hash of the same settings,
recorded in ``compare.json`` so two reports can be told apart.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keys that say where/how fast a run goes or how it is displayed, not what it computes. `model` and `resume` name
# last.pt after ultralytics' resume; the runner checks the model by run name instead.
NOT_SETTINGS = frozenset(
    {"device", "workers", "project", "name", "exist_ok", "plots", "verbose", "resume", "save_dir", "model", "cache",
     "save_period", "mode", "task"}
)
ARMS = ("baseline", "fine")


def yolo_executable() -> str:
    """The ``yolo`` console script of this interpreter's environment (else the one on PATH, else ``yolo``)."""
    sibling = Path(sys.executable).parent / "yolo"
    return str(sibling) if sibling.is_file() else shutil.which("yolo") or "yolo"


def cli_value(v: Any) -> str:
    """How a value is written on the ``yolo`` command line (ultralytics' ``smart_value`` reads it back)."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(cli_value(x) for x in v) + "]"
    return str(v)


@dataclass(frozen=True)
class RunSpec:
    """One training: ``arm`` of ``seed``, with every ``yolo train`` argument except ``device``."""

    seed: int
    arm: str  # "baseline" or "fine"
    model: str
    args: dict[str, Any]  # every train key, including model=, project= and name=

    @property
    def name(self) -> str:
        return f"seed{self.seed}-{self.arm}"

    @property
    def run_dir(self) -> Path:
        return Path(self.args["project"]) / self.args["name"]

    @property
    def epochs(self) -> int:
        return int(self.args["epochs"])

    def argv(self, device: str | None = None) -> list[str]:
        """``yolo train k=v ...`` as a list (``device=`` appended when given)."""
        keys = dict(self.args)
        if device is not None:
            keys["device"] = device
        return [yolo_executable(), "train", *(f"{k}={cli_value(v)}" for k, v in keys.items())]

    def command(self, device: str | None = None) -> str:
        """The shell-quoted command line, with ``yolo`` as its first word (what a cluster job runs)."""
        return shlex.join(["yolo", *self.argv(device)[1:]])

    def resume_argv(self, device: str | None = None) -> list[str]:
        """``yolo train resume=True model=RUN/weights/last.pt [device=...]``: ultralytics' own resume."""
        argv = [yolo_executable(), "train", "resume=True", f"model={self.run_dir / 'weights' / 'last.pt'}"]
        return argv + ([f"device={device}"] if device is not None else [])

    def expected(self) -> dict[str, Any]:
        """ultralytics' defaults overlaid with this run's arguments, typed as the ``yolo`` CLI types them."""
        from ultralytics.cfg import DEFAULT_CFG_DICT, smart_value

        typed = {k: smart_value(cli_value(v)) for k, v in self.args.items()}
        return {**DEFAULT_CFG_DICT, **typed}

    def settings(self) -> dict[str, Any]:
        """What the run computes: :meth:`expected` without :data:`NOT_SETTINGS`, plus the model."""
        exp = self.expected()
        return {"model": self.model, **{k: exp[k] for k in sorted(exp) if k not in NOT_SETTINGS}}

    def fingerprint(self) -> str:
        """12 hex digits of the SHA-256 of :meth:`settings` (canonical JSON)."""
        text = json.dumps(self.settings(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def mismatches(self, recorded: dict[str, Any]) -> list[str]:
        """``key: recorded -> planned`` for every setting in which ``recorded`` (an ``args.yaml``) differs."""
        out = []
        exp = self.expected()
        for k in sorted(set(exp) | set(recorded)):
            if k in NOT_SETTINGS:
                continue
            if recorded.get(k) != exp.get(k):
                out.append(f"{k}: {recorded.get(k)!r} -> {exp.get(k)!r}")
        model = str(recorded.get("model"))
        if model not in (self.model, str(self.run_dir / "weights" / "last.pt")):
            out.append(f"model: {model!r} -> {self.model!r}")
        return out


@dataclass
class Plan:
    """Every run of a comparison, seed-major (seed 0 baseline, seed 0 FINE, seed 1 baseline, ...)."""

    model: str
    baseline: str
    seeds: list[int]
    project: Path
    runs: list[RunSpec] = field(default_factory=list)

    def run(self, seed: int, arm: str) -> RunSpec:
        return next(r for r in self.runs if r.seed == seed and r.arm == arm)


def make_plan(
    model: str,
    baseline: str,
    seeds: Sequence[int],
    project: str | Path,
    train_args: dict[str, Any],
) -> Plan:
    """Build the runs; ``train_args`` are the shared ``yolo train`` keys (data, epochs, imgsz, pretrained, ...).

    The plan sets ``deterministic=True``, ``plots=False`` and ``exist_ok=True`` unless ``train_args`` says otherwise,
    and owns ``model``, ``seed``, ``project``, ``name`` and ``device`` (a ``train_args`` key among them is an error).
    """
    owned = {"model", "seed", "project", "name", "device", "resume"} & set(train_args)
    if owned:
        raise ValueError(f"compare sets {', '.join(sorted(owned))} itself; remove it from the train arguments")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    project = Path(project).resolve()
    plan = Plan(model=model, baseline=baseline, seeds=list(seeds), project=project)
    shared = {"deterministic": True, "plots": False, **train_args, "exist_ok": True}
    for seed in seeds:
        for arm, m in zip(ARMS, (baseline, model)):
            spec = RunSpec(seed, arm, m, {})
            args = {"model": m, **shared, "seed": int(seed), "project": str(project / "runs"), "name": spec.name}
            plan.runs.append(RunSpec(int(seed), arm, m, args))
    return plan
