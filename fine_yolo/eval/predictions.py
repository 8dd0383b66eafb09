"""Predictions of a checkpoint on a dataset split, as ``yolo val save_json=True`` writes them, and their ground truth.

:func:`val_predictions` runs ultralytics' own ``YOLO(weights).val(...)`` with ``save_json=True`` and ``conf=0.001``
(val's default: the analysis applies its own confidence threshold later), so the detections are exactly those
``yolo val`` scores. Ground truth: the dataset's own COCO file when it ships one
(``<path>/annotations/instances_{split}.json``, e.g. from ``fine-yolo visdrone``, or COCO's
``instances_val2017.json``), else one built from the YOLO labels (:mod:`fine_yolo.data.coco_gt`) into the run folder.
ultralytics writes no ``predictions.json`` when a model detects nothing; then an empty list is written, which the
error analysis reads as "every box missed". A ``predictions.json`` left by an earlier run in the same folder is
removed first, so a result never belongs to another model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fine_yolo.data.coco_gt import dataset_gt, yolo_split_to_coco
from fine_yolo.errors import FineYoloError

# Arguments val_predictions sets itself (its own parameters, and what makes the output what the analysis reads).
RESERVED = frozenset({"save_json", "project", "name", "exist_ok", "data", "split", "imgsz", "device", "batch"})


class PredictionsError(FineYoloError, ValueError):
    """A checkpoint that cannot be validated for the error analysis; the message names it."""


def val_predictions(
    weights: str | Path,
    data: str | Path,
    split: str = "val",
    imgsz: int = 640,
    device: str = "cpu",
    project: Path = Path("runs/errors"),
    name: str = "val",
    batch: int = 16,
    **val_args: Any,
) -> dict[str, Any]:
    """Validate ``weights`` on ``split`` of ``data``; return ``{"pred", "gt", "map50_95", "map50"}``.

    ``pred`` is ``<project>/<name>/predictions.json``, ``gt`` the COCO ground truth it is to be scored against,
    ``map50_95``/``map50`` ultralytics' own box mAPs of this val. ``val_args`` go to ``YOLO.val`` unchanged (e.g.
    ``workers=0``, ``half=True``). Reruns with the same ``project``/``name`` overwrite the folder's results.
    """
    from ultralytics import YOLO  # FINE checkpoints unpickle even with the start-up hook off: fine_yolo is imported

    fixed = sorted(set(val_args) & RESERVED)
    if fixed:
        raise PredictionsError(f"val argument(s) {', '.join(fixed)}: set by the error analysis itself")
    weights = Path(weights)
    if not weights.exists():  # a file, or an export folder (``*_openvino_model``)
        raise PredictionsError(f"model {weights}: no such file")
    save_dir = Path(project).resolve() / name
    (save_dir / "predictions.json").unlink(missing_ok=True)
    try:
        model = YOLO(str(weights))
    except Exception as e:  # a truncated or foreign file: ultralytics' own words
        raise PredictionsError(f"model {weights}: cannot load ({str(e).strip().splitlines()[0]})") from None
    if model.task != "detect":
        raise PredictionsError(f"model {weights}: a '{model.task}' model; the error analysis needs a detection model")
    gt = dataset_gt(data, split)  # before val: a bad data YAML or split fails here with the file named
    args = {"conf": 0.001, "plots": False, "verbose": False, **val_args}
    metrics = model.val(
        data=str(data),
        split=split,
        imgsz=imgsz,
        device=device,
        batch=batch,
        save_json=True,
        project=str(save_dir.parent),
        name=save_dir.name,
        exist_ok=True,
        **args,
    )
    save_dir = Path(metrics.save_dir)
    pred = save_dir / "predictions.json"
    if not pred.exists():  # ultralytics writes the file only when something was detected
        pred.write_text("[]\n", encoding="utf-8")
    if gt is None:
        gt = yolo_split_to_coco(data, split, out=save_dir / f"instances_{split}.json")
    return {"pred": pred, "gt": gt, "map50_95": float(metrics.box.map), "map50": float(metrics.box.map50)}
