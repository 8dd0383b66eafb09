"""Evaluate each finished run's ``best.pt`` once: pycocotools AP and the error counts, cached beside the predictions.

For run ``R``: ``fine_yolo.eval.predictions.val_predictions`` validates ``R/weights/best.pt`` on the dataset's split
and writes the COCO predictions and ground truth under ``PROJECT/eval/R``; ``fine_yolo.eval.coco.evaluate`` gives
AP50:95, AP50, AP75, APs, APm, APl (fractions; None for a size the ground truth lacks) and
``fine_yolo.eval.errors.analyze`` the TP/FP/FN counts at the paper's confidence 0.5 and IoU 0.5 (Table 5) with the
TIDE error types. ``PROJECT/eval/R/eval.json`` keeps the result with what it was computed from (the checkpoint's
size and modification time, the evaluation settings); a later ``compare`` reuses it while those are unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fine_yolo.compare.plan import RunSpec
from fine_yolo.errors import FineYoloError

EVAL_FILE = "eval.json"


class CompareEvalError(FineYoloError, RuntimeError):
    """A run cannot be evaluated (no best.pt); the message names the run and the file."""


@dataclass(frozen=True)
class EvalSettings:
    """What an evaluation depends on besides the checkpoint."""

    data: str
    split: str = "val"
    imgsz: int = 640
    batch: int = 16
    conf: float = 0.5
    iou: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _checkpoint_id(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def evaluate_run(
    spec: RunSpec, settings: EvalSettings, out_root: Path, device: str = "cpu", workers: int | None = None
) -> dict[str, Any]:
    """Metrics of ``spec``'s ``best.pt`` (cached in ``out_root/NAME/eval.json``): ``coco``, ``errors``, ``val``.

    ``device`` and ``workers`` (dataloader processes of the validation) change how fast, not what is computed.
    """
    from fine_yolo.eval.coco import evaluate
    from fine_yolo.eval.errors import analyze
    from fine_yolo.eval.predictions import val_predictions

    best = spec.run_dir / "weights" / "best.pt"
    if not best.is_file():
        raise CompareEvalError(f"{spec.name}: no {best} to evaluate (train the run first)")
    out = out_root / spec.name
    cache = out / EVAL_FILE
    key = {"checkpoint": _checkpoint_id(best), "settings": settings.to_dict()}
    if cache.is_file():
        try:
            cached = json.loads(cache.read_text())
            if cached.get("key") == key:
                return cached["result"]
        except (OSError, ValueError):
            pass  # unreadable cache: evaluate again
    val = val_predictions(
        best, settings.data, split=settings.split, imgsz=settings.imgsz, device=device, project=out_root,
        name=spec.name, batch=settings.batch, **({} if workers is None else {"workers": workers}),
    )
    ap = evaluate(val["pred"], val["gt"], cats="auto", verbose=False)
    err = analyze(val["pred"], val["gt"], conf=settings.conf, iou=settings.iou).to_dict()
    result = {
        "coco": dict(ap["metrics"]),
        "errors": err,
        "val": {"map50_95": val["map50_95"], "map50": val["map50"], "pred": str(val["pred"]), "gt": str(val["gt"])},
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "result": result}, indent=2, default=float))
    os.replace(tmp, cache)
    return result
