"""The 12 metrics ``fine-yolo compare`` reports: where each value lives in a run's evaluation, and how it prints.

pycocotools' AP50:95, AP50, AP75, APs, APm, APl (printed x100, in points) and, at the ``conf=``/``iou=`` of the
paper's Table 5, TP, FP, FN (boxes; FP and FN lower-is-better), precision, recall and F1 (points). Kept free of
numpy/scipy so the command's option list (``primary=``'s choices) costs nothing to import.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PRIMARY = "AP50:95"


@dataclass(frozen=True)
class Metric:
    """One reported metric: where its value lives in a run's evaluation, and how it prints."""

    name: str
    source: str  # "coco" or "errors"
    key: str
    higher_is_better: bool = True
    scale: float = 1.0
    digits: int = 1
    unit: str = ""


METRICS: tuple[Metric, ...] = (
    *(Metric(k, "coco", k, True, 100.0, 1, "points") for k in ("AP50:95", "AP50", "AP75", "APs", "APm", "APl")),
    Metric("TP", "errors", "tp", True, 1.0, 1, "boxes"),
    Metric("FP", "errors", "fp", False, 1.0, 1, "boxes"),
    Metric("FN", "errors", "fn", False, 1.0, 1, "boxes"),
    Metric("precision", "errors", "precision", True, 100.0, 1, "points"),
    Metric("recall", "errors", "recall", True, 100.0, 1, "points"),
    Metric("F1", "errors", "f1", True, 100.0, 1, "points"),
)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
