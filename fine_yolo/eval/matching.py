"""Which detection is a true positive, a false positive or ignored, at one IoU threshold: pycocotools' own matching.

Matching rule (pycocotools ``COCOeval.evaluateImg``, run here with one IoU threshold, one area range [0, inf) and
no per-image cap on detections): class-aware; per image and class, detections are taken in descending score order
(stable for ties) and each matches the still-unmatched ground-truth box of its class with the highest IoU >= ``iou``;
a matched detection is a TP, an unmatched one a FP, an unmatched ground-truth box a FN. Crowd boxes (``iscrowd=1``;
pycocotools derives ``ignore`` from ``iscrowd`` alone) are not counted as ground truth: a detection whose best match
is a crowd region (IoU there is intersection over the detection's area) is *ignored*, neither TP nor FP, and a
crowd region can absorb any number of detections. Hence ``TP + FN`` = non-crowd ground-truth boxes and
``TP + FP`` = detections that are not ignored.

Ids. Callers pass ground truth and results whose ids are already the ground truth's (``fine_yolo.eval.coco``'s
rules map them). :func:`index_ids` renumbers images and categories 1..N before any library sees them: YOLO-made
ground truth mixes integer and string image ids (``int(stem)`` or the stem), which pycocotools cannot sort and
hotcoco does not accept.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from typing import Any

STATUSES = ("tp", "fp", "ignored")


@dataclass(frozen=True)
class Detection:
    """One detection after matching. ``bbox`` is [x, y, w, h] in pixels; ids are the ground truth's."""

    index: int  # position in the list given to :func:`match` (results of score >= conf)
    image_id: Any
    category_id: Any
    bbox: tuple[float, float, float, float]
    score: float
    status: str  # "tp", "fp" or "ignored" (matched a crowd region)


@dataclass
class Matching:
    """Result of :func:`match`: every detection's status and per-category counts (keys: GT category ids)."""

    detections: list[Detection]
    per_category: dict[Any, dict[str, int]]  # {"tp", "fp", "fn", "gt", "crowd_ignored"}
    gt_boxes: int  # non-crowd ground-truth boxes
    crowd_boxes: int


@dataclass(frozen=True)
class Indexed:
    """Ground truth and results with images and categories renumbered 1..N (see :func:`index_ids`)."""

    gt: dict
    results: list[dict]
    image_ids: list  # original id of image i + 1
    category_ids: list  # original id of category j + 1


def index_ids(gt: dict, results: list[dict]) -> Indexed:
    """Renumber image, category and annotation ids 1..N (in GT order); results must use GT ids already.

    Only what box evaluation reads is kept: image ``id``; annotation ``id``, ``image_id``, ``category_id``,
    ``bbox``, ``area``, ``iscrowd`` (and ``ignore`` when present).
    """
    image_ids = [im["id"] for im in gt["images"]]
    category_ids = [c["id"] for c in gt["categories"]]
    img = {v: i for i, v in enumerate(image_ids, 1)}
    cat = {v: i for i, v in enumerate(category_ids, 1)}
    anns = []
    for k, a in enumerate(gt["annotations"], 1):
        b = {
            "id": k,
            "image_id": img[a["image_id"]],
            "category_id": cat[a["category_id"]],
            "bbox": [float(v) for v in a["bbox"]],
            "area": float(a["area"]),
            "iscrowd": int(bool(a.get("iscrowd", 0))),
        }
        if "ignore" in a:
            b["ignore"] = a["ignore"]
        anns.append(b)
    out_gt = {
        "info": {},  # pycocotools 2.0.9-2.0.10 copy it in loadRes
        "images": [{"id": i} for i in range(1, len(image_ids) + 1)],
        "categories": [{"id": j, "name": str(c)} for j, c in enumerate(category_ids, 1)],
        "annotations": anns,
    }
    out_res = [
        {
            "image_id": img[d["image_id"]],
            "category_id": cat[d["category_id"]],
            "bbox": [float(v) for v in d["bbox"]],
            "score": float(d["score"]),
        }
        for d in results
    ]
    return Indexed(out_gt, out_res, image_ids, category_ids)


def _evaluator(indexed: Indexed, iou: float):
    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(indexed.gt)
        coco_gt.createIndex()
        if indexed.results:
            coco_dt = coco_gt.loadRes(copy.deepcopy(indexed.results))
        else:  # loadRes cannot take an empty list; an empty result set is valid (every box missed)
            coco_dt = COCO()
            coco_dt.dataset = {**indexed.gt, "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        p = ev.params
        p.iouThrs = np.array([iou])
        p.maxDets = [len(indexed.results) + 1]  # no per-image cap: every detection above conf is counted
        p.areaRng, p.areaRngLbl = [[0.0, float("inf")]], ["all"]
        ev.evaluate()
    return ev


def match(indexed: Indexed, iou: float) -> Matching:
    """Match ``indexed.results`` (already filtered by score) to ``indexed.gt`` with pycocotools at IoU ``iou``."""
    ev = _evaluator(indexed, iou)
    status = [""] * len(indexed.results)
    per_cat = {c: {"tp": 0, "fp": 0, "fn": 0, "gt": 0, "crowd_ignored": 0} for c in indexed.category_ids}
    crowd = 0
    for r in ev.evalImgs:
        if r is None:
            continue
        counts = per_cat[indexed.category_ids[r["category_id"] - 1]]
        for dt_id, m, ignored in zip(r["dtIds"], r["dtMatches"][0], r["dtIgnore"][0]):
            s = "ignored" if ignored else "tp" if m > 0 else "fp"
            status[dt_id - 1] = s  # loadRes numbers results 1..N in list order
            counts["crowd_ignored" if ignored else s] += 1
        gt_ignore = [bool(x) for x in r["gtIgnore"]]
        crowd += sum(gt_ignore)
        counts["gt"] += gt_ignore.count(False)
        counts["fn"] += sum(1 for m, ig in zip(r["gtMatches"][0], gt_ignore) if m == 0 and not ig)
    if "" in status:  # every result has a valid image and category, so pycocotools must have seen it
        raise RuntimeError(f"pycocotools did not evaluate detection #{status.index('')}")
    detections = [
        Detection(
            i,
            indexed.image_ids[d["image_id"] - 1],
            indexed.category_ids[d["category_id"] - 1],
            tuple(d["bbox"]),
            d["score"],
            s,
        )
        for i, (d, s) in enumerate(zip(indexed.results, status))
    ]
    return Matching(detections, per_cat, sum(c["gt"] for c in per_cat.values()), crowd)


def pycocotools_version() -> str:
    from importlib.metadata import version

    return f"pycocotools {version('pycocotools')}"
