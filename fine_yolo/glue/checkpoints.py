"""Patch of ``ultralytics.engine.trainer.BaseTrainer``: checkpoint writes of FINE and ``compare`` trainings are atomic.

ultralytics writes ``last.pt``, ``best.pt`` and ``epoch{N}.pt`` in place (``Path.write_bytes`` in
``BaseTrainer.save_model``), and at the end of training rewrites ``last.pt`` and ``best.pt`` in place without their
optimizer (``torch.save`` inside ``strip_optimizer``, called by ``final_eval``). A process killed during one of these
writes leaves a truncated file: ``yolo train resume=True`` then refuses ``last.pt``, and ``best.pt`` can be lost.

For trainers whose model contains a FINE module, and for every training run with ``FINE_YOLO_ATOMIC_CHECKPOINTS=1``
in its environment (``fine-yolo compare`` sets it for the ``yolo train`` processes of both arms, local or SLURM, so a
baseline killed mid-write resumes exactly as FINE does), and only for them (any other training, e.g. a plain
``yolo train`` of a non-FINE model, keeps ultralytics' code path exactly):

* ``save_model`` runs with ``wdir``/``last``/``best`` pointed at a staging directory ``weights/.partial/`` beside the
  real files; once ultralytics' own function has written everything there, each file is moved into place with
  ``os.replace`` (atomic within one file system): ``best.pt`` and ``epoch{N}.pt`` first and ``last.pt`` last, so a
  kill between two moves leaves a ``last.pt`` no newer than ``best.pt``, and resuming from it redoes at most that
  epoch. If ultralytics' function raises, the staging directory is removed and nothing is replaced.
* ``final_eval`` runs with ``strip_optimizer`` writing to ``<file>.partial`` and replacing ``<file>`` afterwards
  (``strip_optimizer`` is wrapped in the trainer module's namespace and is ultralytics' own function whenever it is
  not called from an atomic trainer's ``final_eval``).

What is guaranteed: after a kill at any moment, every ``.pt`` under ``weights/`` is either the previous complete file
or the new complete file. (Power loss is another matter: nothing here calls ``fsync``.) A staging directory or
``.partial`` file left by a kill is removed by the next write.
"""

from __future__ import annotations

import contextvars
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from fine_yolo.glue._wrap import wrap_once

STAGING = ".partial"  # directory under weights/ that save_model writes into
PARTIAL_SUFFIX = ".partial"  # strip_optimizer's temporary file: <file>.partial

ENV = "FINE_YOLO_ATOMIC_CHECKPOINTS"  # "1": every training of this process writes atomically (set by compare)

_ATOMIC_STRIP = contextvars.ContextVar("fine_yolo_atomic_strip", default=False)


def _atomic(trainer: Any) -> bool:
    """Whether this trainer's writes go through the staging path: a FINE model, or ``ENV=1`` (a compare run)."""
    if os.environ.get(ENV) == "1":
        return True
    from fine_yolo.nn.fine import FINE

    for model in (getattr(trainer, "model", None), getattr(getattr(trainer, "ema", None), "ema", None)):
        if model is not None and hasattr(model, "modules") and any(isinstance(m, FINE) for m in model.modules()):
            return True
    return False


def _commit(stage: Path, wdir: Path, last_name: str) -> None:
    """Move every file of ``stage`` into ``wdir`` (``last_name`` last), then remove ``stage``."""
    files = sorted(p for p in stage.iterdir() if p.is_file())
    for p in sorted(files, key=lambda p: p.name == last_name):  # False sorts first: last.pt is moved last
        os.replace(p, wdir / p.name)
    shutil.rmtree(stage, ignore_errors=True)


def wrap_save_model(original: Callable) -> Callable:
    """Return a ``save_model`` that stages an atomic training's checkpoints and ``os.replace``-s them into place."""

    def save_model(self, *args, **kwargs):
        if not _atomic(self):
            return original(self, *args, **kwargs)
        wdir, last, best = Path(self.wdir), Path(self.last), Path(self.best)
        stage = wdir / STAGING
        shutil.rmtree(stage, ignore_errors=True)  # left by a kill during an earlier write
        self.wdir, self.last, self.best = stage, stage / last.name, stage / best.name
        try:
            result = original(self, *args, **kwargs)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        finally:
            self.wdir, self.last, self.best = wdir, last, best
        if stage.is_dir():
            _commit(stage, wdir, last.name)
        return result

    return wrap_once(original, save_model)


def wrap_final_eval(original: Callable) -> Callable:
    """Return a ``final_eval`` during which an atomic trainer's ``strip_optimizer`` rewrites files atomically."""

    def final_eval(self, *args, **kwargs):
        if not _atomic(self):
            return original(self, *args, **kwargs)
        token = _ATOMIC_STRIP.set(True)
        try:
            return original(self, *args, **kwargs)
        finally:
            _ATOMIC_STRIP.reset(token)

    return wrap_once(original, final_eval)


def wrap_strip_optimizer(original: Callable) -> Callable:
    """A ``strip_optimizer`` that inside an atomic ``final_eval`` (and without ``s``) writes beside, then replaces."""

    def strip_optimizer(f="best.pt", s="", *args, **kwargs):
        if not _ATOMIC_STRIP.get() or s:
            return original(f, s, *args, **kwargs)
        target = Path(f)
        partial = target.with_name(target.name + PARTIAL_SUFFIX)
        partial.unlink(missing_ok=True)
        try:
            result = original(f, str(partial), *args, **kwargs)
            if partial.is_file():  # ultralytics skips (and writes nothing) for a file that is not a checkpoint
                os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return result

    return wrap_once(original, strip_optimizer)


def patch(trainer_module: ModuleType) -> None:
    """Make ``trainer_module.BaseTrainer``'s checkpoint writes atomic for FINE models and compare runs (idempotent)."""
    trainer = trainer_module.BaseTrainer
    trainer.save_model = wrap_save_model(trainer.save_model)
    trainer.final_eval = wrap_final_eval(trainer.final_eval)
    trainer_module.strip_optimizer = wrap_strip_optimizer(trainer_module.strip_optimizer)
