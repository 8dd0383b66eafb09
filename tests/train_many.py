"""Train, or predict with, several tiny models in ONE fresh Python process (a test helper run as a script).

Why: a ``yolo train`` process spends ~3-4 s of CPU before it trains (importing torch and ultralytics, then
torch._inductor through ``torch.use_deterministic_algorithms`` in ultralytics' ``init_seeds``) and ~1 s tearing down;
a one-epoch tiny training costs about as much again. Where a test is about the training loop and not the process
start, one process trains all the models in turn; the tests that are about the ``yolo`` command itself still start it.

    python tests/train_many.py train   SPEC.json   # SPEC: {"runs": [{"model", "project", "name", ...train kwargs}]}
    python tests/train_many.py predict SPEC.json   # SPEC: {"runs": [{"weights", "source", "out", ...predict kwargs}]}

``train`` writes ``project/name.log`` (everything ultralytics logged for that model) and ``project/name.json``
(``{"ok": bool, "error": traceback, "cpu_s": seconds}``); one model's failure does not stop the others.
``predict`` writes ``out``: per result, the image size and the task outputs' shapes. Both exit 0 once every run
was attempted.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path


def _logged_to(path: Path) -> logging.Handler:
    """Copy ultralytics' log (its "ultralytics" logger: model summary, epochs, the final validation) to ``path``."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("ultralytics").addHandler(handler)
    return handler


def train(runs: list[dict]) -> None:
    from fine_yolo.models import model_class

    for run in runs:
        kwargs = dict(run)
        model = kwargs.pop("model")
        stem = Path(kwargs["project"]) / kwargs["name"]
        handler = _logged_to(stem.with_suffix(".log"))
        cpu = time.process_time()
        try:
            model_class(model)(model).train(**kwargs)
            status = {"ok": True, "error": None}
        except Exception:  # noqa: BLE001 - recorded for the test of this model; the next model still trains
            status = {"ok": False, "error": traceback.format_exc()}
        finally:
            logging.getLogger("ultralytics").removeHandler(handler)
            handler.close()
        status["cpu_s"] = round(time.process_time() - cpu, 2)  # this process's CPU time for the run (all threads)
        stem.with_suffix(".json").write_text(json.dumps(status))


def _shapes(result) -> dict:
    """Which task outputs a Results object holds, and their tensor shapes (empty outputs keep their trailing dims)."""
    out = {"orig_shape": list(result.orig_shape)}
    for key in ("boxes", "masks", "keypoints", "obb", "semantic_mask"):
        value = getattr(result, key, None)
        if value is not None:
            out[key] = list(value.data.shape)
    return out


def predict(runs: list[dict]) -> None:
    from ultralytics import YOLO

    for run in runs:
        kwargs = dict(run)
        weights, out = kwargs.pop("weights"), Path(kwargs.pop("out"))
        try:
            results = YOLO(weights).predict(**kwargs)
            status = {"ok": True, "results": [_shapes(r) for r in results]}
        except Exception:  # noqa: BLE001 - recorded for the test of this model
            status = {"ok": False, "error": traceback.format_exc()}
        out.write_text(json.dumps(status))


if __name__ == "__main__":
    mode, spec = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    {"train": train, "predict": predict}[mode](spec["runs"])
