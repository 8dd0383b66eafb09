"""COCO box AP of a ``predictions.json`` with pycocotools, the reference implementation behind the paper's numbers.

``fine-yolo coco-eval pred=predictions.json gt=instances_val2017.json [json=out.json] [cats=auto] [verbose=false]``
prints AP50:95, AP50, AP75, APs, APm, APl and writes them (plus AR and what was matched how) as JSON, by default
``coco_eval.json`` next to the predictions.

Inputs. ``pred`` is a COCO result list (``image_id``, ``category_id``, ``bbox`` = [x, y, w, h] in pixels, ``score``)
such as ``yolo val save_json=True`` writes; ``gt`` is any COCO-format ground truth (COCO val2017, or the
``annotations/instances_{split}.json`` that ``fine-yolo visdrone`` writes).

Image ids. ultralytics writes ``image_id = int(stem)`` when the file stem is numeric (COCO) and the stem string
otherwise (VisDrone), and adds ``file_name``. Rule: (1) if the detections carry ``file_name`` and the GT file names
are unique, match on the file name; (2) else use ``image_id`` as is when every id is a GT image id; (3) else match
``image_id`` to the GT file-name stems (an integer id to a numeric stem: ``139`` matches ``000000000139.jpg``).
Detections that still match no GT image are an error, never dropped.

Category ids (``cats=auto``). ultralytics writes COCO's category ids (``coco80_to_coco91_class``) when it
recognises COCO (val path ending in ``val2017.txt``) and ``class index + 1`` otherwise. Rule: if every prediction
category is a GT category id, use them as is (``ids``); otherwise, if they all lie in 1..nc, they are class index + 1
(``index1``); otherwise, if they lie in 0..nc-1, class indices (``index0``). Class index i maps to COCO's id
``coco80_to_coco91_class()[i]`` when the GT has COCO's 80 categories, else to the i-th GT category id in ascending
order. ``cats=ids|index1|index0`` forces a rule. On COCO GT a prediction file whose ids are all <= 80 and happen to
be COCO ids is ambiguous; it is read as ``ids`` and a note says how to force ``index1``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from fine_yolo.args import Command, Option
from fine_yolo.errors import FineYoloError
from fine_yolo.tables import markdown_table

# Order of COCOeval.stats[0:6] and [6:12].
AP_KEYS = ("AP50:95", "AP50", "AP75", "APs", "APm", "APl")
AR_KEYS = ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
CAT_RULES = ("auto", "ids", "index1", "index0")


class CocoEvalError(FineYoloError, ValueError):
    """Inputs that cannot be evaluated; the message names the file and what is wrong."""


def load_json(path: str | Path, what: str) -> Any:
    """Read a JSON file; raise :class:`CocoEvalError` naming the file, and for bad JSON the line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:  # missing, a directory, unreadable
        raise CocoEvalError(f"{what} {path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise CocoEvalError(f"{what} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CocoEvalError(f"{what} {path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_id(v: Any) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def _is_box(b: Any) -> bool:
    return isinstance(b, list) and len(b) == 4 and all(_is_number(v) for v in b) and b[2] >= 0 and b[3] >= 0


def check_gt(gt: Any, name: str, notes: list[str]) -> dict:
    """Validate a COCO GT dict; fill what pycocotools needs but COCO-like files often omit, saying so in ``notes``."""
    if not isinstance(gt, dict):
        raise CocoEvalError(
            f"ground truth {name}: expected a COCO object with images/annotations/categories, "
            f"got a JSON {type(gt).__name__} (are pred= and gt= swapped?)"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise CocoEvalError(f"ground truth {name}: missing or non-list '{key}'")
    image_ids = [im.get("id") if isinstance(im, dict) else None for im in gt["images"]]
    if None in image_ids:
        raise CocoEvalError(f"ground truth {name}: image #{image_ids.index(None)} has no 'id'")
    if len(set(image_ids)) != len(image_ids):
        raise CocoEvalError(f"ground truth {name}: duplicate image ids")
    cat_ids = [c.get("id") if isinstance(c, dict) else None for c in gt["categories"]]
    if None in cat_ids or not cat_ids:
        raise CocoEvalError(f"ground truth {name}: 'categories' is empty or has an entry without 'id'")
    if not gt["annotations"]:
        raise CocoEvalError(f"ground truth {name}: has no annotations, AP is undefined")
    images, cats = set(image_ids), set(cat_ids)
    filled = {"area": 0, "iscrowd": 0}
    gt = {**gt, "annotations": [dict(a) if isinstance(a, dict) else a for a in gt["annotations"]]}  # no mutation
    for i, a in enumerate(gt["annotations"]):
        where = f"ground truth {name}: annotation #{i}"
        if not isinstance(a, dict):
            raise CocoEvalError(f"{where} is not an object")
        if not _is_id(a.get("image_id")) or a["image_id"] not in images:
            raise CocoEvalError(f"{where}: image_id {a.get('image_id')!r} is not in 'images'")
        if not _is_id(a.get("category_id")) or a["category_id"] not in cats:
            raise CocoEvalError(f"{where}: category_id {a.get('category_id')!r} is not in 'categories'")
        if not _is_box(a.get("bbox")):
            raise CocoEvalError(f"{where}: bbox must be [x, y, w, h] with w, h >= 0, got {a.get('bbox')!r}")
        if "area" not in a:  # pycocotools sorts objects into small/medium/large by this field
            a["area"], filled["area"] = a["bbox"][2] * a["bbox"][3], filled["area"] + 1
        if "iscrowd" not in a:
            a["iscrowd"], filled["iscrowd"] = 0, filled["iscrowd"] + 1
    for key, n in filled.items():
        if n:
            notes.append(f"ground truth: {n} annotations had no '{key}'; used {'w*h' if key == 'area' else 0}")
    ann_ids = [a.get("id") for a in gt["annotations"]]
    if None in ann_ids or len(set(map(repr, ann_ids))) != len(ann_ids):  # pycocotools indexes annotations by id
        for i, a in enumerate(gt["annotations"], 1):
            a["id"] = i
        notes.append("ground truth: annotation ids missing or duplicated; renumbered 1..N")
    return gt


def check_predictions(pred: Any, name: str) -> list[dict]:
    """Validate a COCO result list; raise :class:`CocoEvalError` naming the first bad detection."""
    if isinstance(pred, dict):
        keys = ", ".join(list(pred)[:5])
        raise CocoEvalError(
            f"predictions {name}: expected a JSON list of detections (what `yolo val save_json=True` "
            f"writes), got an object with keys [{keys}] (is this a ground-truth file?)"
        )
    if not isinstance(pred, list):
        raise CocoEvalError(f"predictions {name}: expected a JSON list of detections, got {type(pred).__name__}")
    if not pred:
        raise CocoEvalError(f"predictions {name}: empty list, no detections to evaluate")
    for i, d in enumerate(pred):
        where = f"predictions {name}: detection #{i}"
        if not isinstance(d, dict):
            raise CocoEvalError(f"{where} is not an object")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in d]
        if missing:
            raise CocoEvalError(f"{where}: missing {', '.join(missing)}")
        bad_ids = [k for k in ("image_id", "category_id") if not _is_id(d[k])]
        if bad_ids:
            raise CocoEvalError(f"{where}: {bad_ids[0]} must be an integer or a string, got {d[bad_ids[0]]!r}")
        if not _is_box(d["bbox"]):
            raise CocoEvalError(f"{where}: bbox must be [x, y, w, h] with w, h >= 0, got {d['bbox']!r}")
        if not _is_number(d["score"]):
            raise CocoEvalError(f"{where}: score must be a finite number, got {d['score']!r}")
    return pred


def _examples(values: Any, n: int = 5) -> str:
    values = sorted(values, key=str)
    return ", ".join(repr(v) for v in values[:n]) + (f" (+{len(values) - n} more)" if len(values) > n else "")


def match_image_ids(pred: list[dict], gt: dict, pred_name: str, gt_name: str) -> tuple[list, str]:
    """Map each detection to a GT image id (rule in the module docstring); return the ids and the rule used."""
    gt_ids = {im["id"] for im in gt["images"]}
    names = [Path(str(im.get("file_name", ""))).name for im in gt["images"]]
    by_name = dict(zip(names, (im["id"] for im in gt["images"]))) if all(names) else {}
    if len(by_name) != len(gt["images"]):  # missing or duplicate base names: names cannot identify images
        by_name = {}
    if by_name and all("file_name" in d for d in pred):
        ids = [by_name.get(os.path.basename(str(d["file_name"]))) for d in pred]  # ~1M detections: no Path()
        unmatched = {pred[i]["file_name"] for i, x in enumerate(ids) if x is None}
        if unmatched:
            raise CocoEvalError(
                f"predictions {pred_name}: {len(unmatched)} image file names are not in ground truth "
                f"{gt_name}: {_examples(unmatched)} (predictions of a different split?)"
            )
        return ids, "file_name"
    if all(d["image_id"] in gt_ids for d in pred):
        return [d["image_id"] for d in pred], "image_id"
    by_stem = {Path(n).stem: i for n, i in by_name.items()}
    by_stem.update({int(s): i for s, i in by_stem.items() if s.isdigit()})  # ultralytics' int(stem) drops zeros
    ids = [by_stem.get(d["image_id"] if isinstance(d["image_id"], int) else str(d["image_id"])) for d in pred]
    if by_stem and None not in ids:
        return ids, "image_id = file stem"
    unmatched = {d["image_id"] for d in pred if d["image_id"] not in gt_ids}
    raise CocoEvalError(
        f"predictions {pred_name}: {len(unmatched)} image ids are not in ground truth {gt_name}: "
        f"{_examples(unmatched)}; ground-truth ids look like {_examples(list(gt_ids)[:5], 3)}"
    )


def class_index_to_category(gt: dict) -> list:
    """Category id of class index i: COCO's 80->91 table for COCO's 80 categories, else ascending GT ids."""
    from ultralytics.data.converter import coco80_to_coco91_class

    cat_ids = sorted(c["id"] for c in gt["categories"])
    coco = coco80_to_coco91_class()
    return coco if set(cat_ids) == set(coco) else cat_ids


def map_categories(pred: list[dict], gt: dict, rule: str, pred_name: str, notes: list[str]) -> tuple[list, str]:
    """Map each detection's ``category_id`` to a GT category id (rule in the module docstring)."""
    if rule not in CAT_RULES:
        raise CocoEvalError(f"cats={rule} must be one of {', '.join(CAT_RULES)}")
    gt_cats = {c["id"] for c in gt["categories"]}
    pred_cats = {d["category_id"] for d in pred}
    table = class_index_to_category(gt)
    nc = len(table)
    ints = all(isinstance(c, int) and not isinstance(c, bool) for c in pred_cats)
    if rule == "auto":
        if pred_cats <= gt_cats:
            rule = "ids"
            if set(table) != set(range(1, nc + 1)) and ints and max(pred_cats) <= nc:
                notes.append(
                    f"category ids all <= {nc} and all valid GT ids: read as GT ids; if the predictions are "
                    "class index + 1 (ultralytics' save_json on a dataset it does not recognise as COCO), "
                    "pass cats=index1"
                )
        elif ints and pred_cats <= set(range(1, nc + 1)):
            rule = "index1"
        elif ints and pred_cats <= set(range(nc)):
            rule = "index0"
        else:
            bad = pred_cats - gt_cats
            raise CocoEvalError(
                f"predictions {pred_name}: category ids {_examples(bad)} are not ground-truth category "
                f"ids ({_examples(gt_cats)}) nor class indices 0..{nc - 1} / 1..{nc}"
            )
    if rule == "ids":
        bad = pred_cats - gt_cats
        if bad:
            raise CocoEvalError(f"predictions {pred_name}: category ids {_examples(bad)} are not in the ground truth")
        return [d["category_id"] for d in pred], rule
    offset = 1 if rule == "index1" else 0
    valid = set(range(offset, nc + offset))
    bad = {c for c in pred_cats if c not in valid}
    if bad:
        raise CocoEvalError(
            f"predictions {pred_name}: cats={rule} expects category ids {offset}..{nc + offset - 1}, "
            f"got {_examples(bad)}"
        )
    return [table[d["category_id"] - offset] for d in pred], rule


def _pycocotools_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"pycocotools {version('pycocotools')}"
    except PackageNotFoundError:
        return "pycocotools"


def evaluate(
    pred: str | Path | list,
    gt: str | Path | dict,
    cats: str = "auto",
    verbose: bool = False,
) -> dict:
    """COCO bbox evaluation with pycocotools' ``COCOeval``; paths or already-loaded JSON objects are accepted.

    Returns a dict with ``metrics`` (AP50:95, AP50, AP75, APs, APm, APl as fractions; ``None`` where the GT has no
    object of that size), ``recall`` (AR1, AR10, AR100, ARs, ARm, ARl), how image and category ids were matched,
    counts and ``notes``. Raises :class:`CocoEvalError` for inputs that cannot be evaluated.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    pred_name = str(pred) if isinstance(pred, (str, Path)) else "<in memory>"
    gt_name = str(gt) if isinstance(gt, (str, Path)) else "<in memory>"
    notes: list[str] = []
    gt_obj = check_gt(load_json(gt, "ground truth") if isinstance(gt, (str, Path)) else gt, gt_name, notes)
    dets = check_predictions(load_json(pred, "predictions") if isinstance(pred, (str, Path)) else pred, pred_name)
    image_ids, image_rule = match_image_ids(dets, gt_obj, pred_name, gt_name)
    cat_ids, cat_rule = map_categories(dets, gt_obj, cats, pred_name, notes)
    results = [
        {"image_id": i, "category_id": c, "bbox": [float(v) for v in d["bbox"]], "score": float(d["score"])}
        for d, i, c in zip(dets, image_ids, cat_ids)
    ]
    n_images, covered = len(gt_obj["images"]), len(set(image_ids))
    if covered < n_images:
        notes.append(
            f"{n_images - covered} of {n_images} ground-truth images have no detection (their objects count "
            "as missed); make sure the predictions cover the same split"
        )

    log = io.StringIO()  # pycocotools prints progress; keep it for verbose=true
    with contextlib.redirect_stdout(log):
        coco_gt = COCO()
        coco_gt.dataset = gt_obj
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if verbose:
        print(log.getvalue())

    def value(x: float) -> float | None:  # pycocotools reports -1 when no GT object falls in a size range
        return None if x < 0 else float(x)

    return {
        "metrics": {k: value(v) for k, v in zip(AP_KEYS, ev.stats[:6])},
        "recall": {k: value(v) for k, v in zip(AR_KEYS, ev.stats[6:12])},
        "pred": pred_name,
        "gt": gt_name,
        "evaluator": _pycocotools_version(),
        "image_ids": image_rule,
        "category_ids": cat_rule,
        "detections": len(dets),
        "gt_images": n_images,
        "gt_images_with_detections": covered,
        "gt_boxes": len(gt_obj["annotations"]),
        "categories": len(gt_obj["categories"]),
        "notes": notes,
    }


def format_table(result: dict) -> str:
    """Markdown summary of one :func:`evaluate` result: what was matched how, then the AP table."""
    lines = [
        f"COCO bbox evaluation ({result['evaluator']})",
        f"- predictions {result['pred']}: {result['detections']} detections on "
        f"{result['gt_images_with_detections']}/{result['gt_images']} images "
        f"(image ids by {result['image_ids']}, category ids as {result['category_ids']})",
        f"- ground truth {result['gt']}: {result['gt_boxes']} boxes, {result['categories']} categories",
        "",
    ]
    rows = [[k, None if v is None else f"{v:.4f}", None if v is None else f"{100 * v:.2f}"]
            for k, v in result["metrics"].items()]
    lines.append(markdown_table(["metric", "value", "%"], rows))
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def _run(args: dict, extra: dict) -> int:
    out = Path(args["json"]) if args["json"] else Path(args["pred"]).parent / "coco_eval.json"
    result = evaluate(args["pred"], args["gt"], cats=args["cats"], verbose=args["verbose"])
    print(format_table(result))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out}")
    return 0


COMMAND = Command(
    options={
        "pred": Option("", "COCO results JSON (what `yolo val save_json=True` writes)", required=True),
        "gt": Option("", "COCO ground-truth JSON", required=True),
        "json": Option("", "where to write the metrics (default: coco_eval.json beside pred)"),
        "cats": Option("auto", "how prediction category ids map to GT ids (module doc)", choices=CAT_RULES),
        "verbose": Option(False, "print pycocotools' own summary too"),
    },
    run=_run,
    example="fine-yolo coco-eval pred=runs/detect/val/predictions.json gt=instances_val2017.json",
)
