"""Detection error analysis: the paper's Table 5 (TP, FP, FN, precision, recall, F1) and the TIDE error types.

``fine-yolo errors pred=predictions.json gt=annotations.json [baseline_pred=...]`` on files as ``coco-eval`` takes
them, or ``fine-yolo errors model=fine.pt [baseline=base.pt] data=<data YAML> [split=val]``, which first runs
ultralytics' own val (``save_json=True``, conf 0.001) and builds the split's COCO ground truth when the dataset has
none (:mod:`fine_yolo.eval.predictions`). Prints markdown tables (overall, per class, TIDE counts, and with two
models the relative change as in Table 5), ``json=PATH`` writes the numbers, ``gallery=PATH.png`` draws each
model's highest-confidence false positives that the other does not make (paper Fig. 9, :mod:`fine_yolo.eval.gallery`).

Counting (the paper's setting: IoU 0.5, confidence 0.5; both configurable). Only detections with score >= ``conf``
take part. Matching is pycocotools' (:mod:`fine_yolo.eval.matching`): class-aware, greedy by descending score per
image and class, each detection matching the unmatched ground-truth box of its class with the highest IoU >=
``iou``; detections on crowd regions are ignored (``crowd_ignored``), crowd boxes are not ground truth. So, always:
``tp + fn = gt_boxes`` and ``tp + fp = detections``. precision = TP / (TP + FP), recall = TP / (TP + FN),
F1 = 2 TP / (2 TP + FP + FN) (= 2PR / (P + R)); a ratio whose denominator is 0 is ``None``.
TIDE types (:mod:`fine_yolo.eval.tide`, computed by hotcoco on the same detections): ``cls + loc + both + dupe +
bkg = fp`` and ``miss <= fn``, checked on every call.

Ids. Image and category ids of the predictions are matched to the ground truth by :mod:`fine_yolo.eval.coco`'s
rules (file name, id, or file stem; ``cats=auto|ids|index1|index0``), so any ``predictions.json`` that
``coco-eval`` reads works here. An empty prediction list is valid (every box missed).

Python: ``analyze(pred, gt, conf, iou, cats) -> ErrorReport``; ``ErrorReport.to_dict()``;
``compare_reports(base, fine)`` -> the relative-change row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fine_yolo.args import Command, Option
from fine_yolo.errors import FineYoloError, UsageError
from fine_yolo.eval import coco, matching, tide
from fine_yolo.tables import markdown_table, num, signed

MATCHING = (
    "pycocotools COCOeval matching at one IoU threshold: class-aware, greedy by descending score per image and "
    "class, each detection with score >= conf takes the unmatched ground-truth box of its class with the highest "
    "IoU >= iou; detections on crowd regions are ignored and crowd boxes are not counted"
)
COUNT_KEYS = ("tp", "fp", "fn")
RATIO_KEYS = ("precision", "recall", "f1")
MODEL_KEYS = ("baseline", "split", "imgsz", "device", "batch", "project", "name")  # keys of the model form only


class ErrorsInputError(FineYoloError, ValueError):
    """Inputs the error analysis cannot use together; the message names them."""


def ratios(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    """precision, recall and F1 from counts (``None`` where the denominator is 0)."""

    def div(a: int, b: int) -> float | None:
        return a / b if b else None

    return {"precision": div(tp, tp + fp), "recall": div(tp, tp + fn), "f1": div(2 * tp, 2 * tp + fp + fn)}


@dataclass
class ErrorReport:
    """The error analysis of one prediction set (see the module docstring for every definition)."""

    images: int
    gt_boxes: int
    tp: int
    fp: int
    fn: int
    per_class: dict[str, dict[str, Any]]
    tide: dict[str, int]
    conf: float
    iou: float
    crowd_ignored: int = 0
    below_conf: int = 0
    detections: list[matching.Detection] = field(default_factory=list, repr=False)  # score >= conf
    image_files: dict[Any, str] = field(default_factory=dict, repr=False)  # GT image id -> file_name
    category_names: dict[Any, str] = field(default_factory=dict, repr=False)  # GT category id -> class name
    source: dict[str, Any] = field(default_factory=dict)  # pred/gt names, id rules, libraries
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers; keys listed in the module docstring (``detections``: counted, above conf)."""
        return {
            "images": self.images,
            "gt_boxes": self.gt_boxes,
            "detections": self.tp + self.fp,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            **ratios(self.tp, self.fp, self.fn),
            "per_class": self.per_class,
            "tide": dict(self.tide),
            "conf": self.conf,
            "iou": self.iou,
            "matching": MATCHING,
            "crowd_ignored": self.crowd_ignored,
            "below_conf": self.below_conf,
            **self.source,
            "notes": list(self.notes),
        }


def _load(pred: Any, gt: Any, cats: str) -> tuple[dict, list[dict], dict[str, Any], list[str]]:
    """Validated GT and the predictions with GT image/category ids (coco.py's rules); names, rules, notes."""
    if cats not in coco.CAT_RULES:
        raise UsageError(f"cats={cats} must be one of {', '.join(coco.CAT_RULES)}")
    pred_name = str(pred) if isinstance(pred, (str, Path)) else "<in memory>"
    gt_name = str(gt) if isinstance(gt, (str, Path)) else "<in memory>"
    notes: list[str] = []
    gt_obj = coco.check_gt(coco.load_json(gt, "ground truth") if isinstance(gt, (str, Path)) else gt, gt_name, notes)
    dets = coco.load_json(pred, "predictions") if isinstance(pred, (str, Path)) else pred
    source: dict[str, Any] = {"pred": pred_name, "gt": gt_name, "image_ids": None, "category_ids": None}
    if isinstance(dets, list) and not dets:  # a model that detects nothing: valid, every box is missed
        notes.append("no detections at all")
        return gt_obj, [], source, notes
    dets = coco.check_predictions(dets, pred_name)
    image_ids, source["image_ids"] = coco.match_image_ids(dets, gt_obj, pred_name, gt_name)
    cat_ids, source["category_ids"] = coco.map_categories(dets, gt_obj, cats, pred_name, notes)
    results = [
        {"image_id": i, "category_id": c, "bbox": [float(v) for v in d["bbox"]], "score": float(d["score"])}
        for d, i, c in zip(dets, image_ids, cat_ids)
    ]
    return gt_obj, results, source, notes


def _class_names(gt: dict) -> dict[Any, str]:
    """GT category id -> a unique display name (``name``; ``name (id)`` where names repeat; the id when absent)."""
    raw = {c["id"]: str(c.get("name") or c["id"]) for c in gt["categories"]}
    repeated = {n for n in raw.values() if list(raw.values()).count(n) > 1}
    return {i: f"{n} ({i})" if n in repeated else n for i, n in raw.items()}


def analyze(
    pred: str | Path | list,
    gt: str | Path | dict,
    conf: float = 0.5,
    iou: float = 0.5,
    cats: str = "auto",
) -> ErrorReport:
    """Error analysis of ``pred`` (COCO results JSON path or list) against ``gt`` (COCO GT path or dict).

    Raises :class:`fine_yolo.eval.coco.CocoEvalError` for unusable files (naming them) and
    :class:`fine_yolo.errors.UsageError` for a bad ``conf``/``iou``/``cats``.
    """
    if not 0.0 <= conf <= 1.0:
        raise UsageError(f"conf={conf} must lie in [0, 1]")
    if not 0.0 < iou <= 1.0:
        raise UsageError(f"iou={iou} must lie in (0, 1]")
    gt_obj, results, source, notes = _load(pred, gt, cats)
    kept = [d for d in results if d["score"] >= conf]
    indexed = matching.index_ids(gt_obj, kept)
    m = matching.match(indexed, iou)
    tide_counts = tide.tide_counts(indexed, iou)
    names = _class_names(gt_obj)
    per_class = {}
    for cat, c in m.per_category.items():
        per_class[names[cat]] = {"tp": c["tp"], "fp": c["fp"], "fn": c["fn"], **ratios(c["tp"], c["fp"], c["fn"])}
    tp, fp, fn = (sum(c[k] for c in m.per_category.values()) for k in COUNT_KEYS)
    if tp + fn != m.gt_boxes or tp + fp + sum(c["crowd_ignored"] for c in m.per_category.values()) != len(kept):
        raise RuntimeError(f"inconsistent matching: tp={tp} fp={fp} fn={fn}, {m.gt_boxes} boxes, {len(kept)} dets")
    if sum(tide_counts[k] for k in tide.FP_TYPES) != fp or tide_counts["miss"] > fn:
        raise RuntimeError(
            f"{tide.hotcoco_version()} and pycocotools disagree: TIDE {tide_counts} against fp={fp}, fn={fn}"
        )
    source["tide_library"] = tide.hotcoco_version()
    source["evaluator"] = matching.pycocotools_version()
    return ErrorReport(
        images=len(gt_obj["images"]),
        gt_boxes=m.gt_boxes,
        tp=tp,
        fp=fp,
        fn=fn,
        per_class=per_class,
        tide=tide_counts,
        conf=conf,
        iou=iou,
        crowd_ignored=len(kept) - tp - fp,
        below_conf=len(results) - len(kept),
        detections=m.detections,
        image_files={im["id"]: str(im.get("file_name", "")) for im in gt_obj["images"]},
        category_names=names,
        source=source,
        notes=notes,
    )


def compare_reports(base: ErrorReport, fine: ErrorReport) -> dict[str, float | None]:
    """Table 5's "Improvement" row: relative change (fine - base) / base of tp, fp, fn, precision, recall, f1.

    Fractions (``-0.0993`` is Table 5's -9.93%); ``None`` where the base value is 0 or undefined. Both reports must
    count the same ground truth at the same ``conf`` and ``iou``.
    """
    same = ("images", "gt_boxes", "conf", "iou")
    diff = [k for k in same if getattr(base, k) != getattr(fine, k)]
    if diff:
        pairs = ", ".join(f"{k} {getattr(base, k)} vs {getattr(fine, k)}" for k in diff)
        raise ErrorsInputError(f"the two analyses are not of the same ground truth and thresholds: {pairs}")
    a, b = base.to_dict(), fine.to_dict()
    out: dict[str, float | None] = {}
    for k in COUNT_KEYS + RATIO_KEYS:
        out[k] = None if not a[k] or b[k] is None else (b[k] - a[k]) / a[k]
    return out


def _pct(x: float | None) -> str | None:
    return None if x is None else f"{signed(100 * x, '.2f')}%"


def format_tables(reports: dict[str, ErrorReport], change: dict | None = None) -> str:
    """Markdown: Table 5 (one row per model, plus the relative change), TIDE counts, per class per model."""
    rows = []
    for label, r in reports.items():
        d = r.to_dict()
        rows.append([label, d["images"], d["tp"], d["fp"], d["fn"], *(num(d[k]) for k in RATIO_KEYS)])
    if change is not None:
        rows.append(["relative change", None, *(_pct(change[k]) for k in COUNT_KEYS + RATIO_KEYS)])
    first = next(iter(reports.values()))
    parts = [
        f"Detections at IoU {first.iou:g} and confidence >= {first.conf:g} ({first.gt_boxes} ground-truth boxes)",
        "",
        markdown_table(["", "#images", "TP", "FP", "FN", "precision", "recall", "F1"], rows),
        "",
        "TIDE error types (cls + loc + both + dupe + bkg = FP; miss = FN boxes no cls/loc error points at)",
        "",
        markdown_table(
            ["", *tide.TIDE_TYPES],
            [[label, *(r.tide[k] for k in tide.TIDE_TYPES)] for label, r in reports.items()],
        ),
    ]
    for label, r in reports.items():
        per = [[n, c["tp"], c["fp"], c["fn"], *(num(c[k]) for k in RATIO_KEYS)] for n, c in r.per_class.items()]
        header = ["class", "TP", "FP", "FN", "precision", "recall", "F1"]
        parts += ["", f"Per class: {label}", "", markdown_table(header, per)]
    notes = [f"{label}: {n}" for label, r in reports.items() for n in r.notes]
    parts += [f"note: {n}" for n in notes]
    return "\n".join(parts)


def _label(path: str | Path) -> str:
    """Short display name: the run folder of ``<run>/weights/best.pt`` or ``<run>/predictions.json``, else the name."""
    p = Path(str(path))
    if p.parent.name == "weights" and p.parent.parent.name:
        return p.parent.parent.name
    if p.name == "predictions.json" and p.parent.name:
        return p.parent.name
    return p.stem


def _labels(model: str | Path, baseline: str | Path) -> tuple[str, str]:
    """Display names of the two models; "model"/"baseline" when their short names coincide."""
    a, b = _label(model), _label(baseline) if baseline else ""
    return ("model", "baseline") if a == b else (a, b)


def _run(args: dict, extra: dict) -> int:
    file_form, model_form = bool(args["pred"] or args["gt"]), bool(args["model"] or args["data"])
    if file_form == model_form:
        raise UsageError("give either pred=... gt=... (files) or model=... data=... (runs `yolo val`), not both")
    if file_form:
        bad = [k for k in MODEL_KEYS if args[k] != COMMAND.defaults[k]] + list(extra)
        if bad:
            raise UsageError(f"argument(s) {', '.join(bad)} belong to the model form (model=... data=...)")
        if not (args["pred"] and args["gt"]):
            raise UsageError("the file form needs both pred=... and gt=...")
        a, b = _labels(args["pred"], args["baseline_pred"])
        runs = {a: (args["pred"], args["gt"])}
        if args["baseline_pred"]:
            runs[b] = (args["baseline_pred"], args["gt"])
        image_dir = args["images"]
    else:
        if args["baseline_pred"] or args["images"]:
            raise UsageError("baseline_pred= and images= belong to the file form; with model= use baseline=...")
        if not (args["model"] and args["data"]):
            raise UsageError("the model form needs both model=... and data=...")
        runs, image_dir = _validate(args, extra), ""
    if args["gallery"] and len(runs) != 2:
        raise UsageError("gallery= compares two models: give baseline_pred= (or baseline= with model=)")
    reports = {
        label: analyze(p, g, conf=args["conf"], iou=args["iou"], cats=args["cats"]) for label, (p, g) in runs.items()
    }
    labels = list(reports)
    change = compare_reports(reports[labels[1]], reports[labels[0]]) if len(reports) == 2 else None
    print(format_tables(reports, change))
    if args["json"]:
        if change is None:
            payload: dict[str, Any] = reports[labels[0]].to_dict()
        else:
            payload = {
                "model": {"label": labels[0], **reports[labels[0]].to_dict()},
                "baseline": {"label": labels[1], **reports[labels[1]].to_dict()},
                "relative_change": change,
            }
        out = Path(args["json"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"written to {out}")
    if args["gallery"]:
        from fine_yolo.eval import gallery

        a, b = reports[labels[0]], reports[labels[1]]
        images = gallery.image_paths(a.image_files, image_dir, args["data"], args["split"])
        result = gallery.fp_gallery(a, b, images, args["gallery"], labels=(labels[0], labels[1]), k=args["k"])
        print(gallery.describe(result))
    return 0


def _validate(args: dict, extra: dict) -> dict[str, tuple[Path, Path]]:
    """Model form: run `yolo val` (save_json) for each model; {label: (predictions.json, ground truth)}."""
    from fine_yolo.eval.predictions import val_predictions

    a, b = _labels(args["model"], args["baseline"])
    models = {a: args["model"], **({b: args["baseline"]} if args["baseline"] else {})}
    runs = {}
    for i, (label, weights) in enumerate(models.items()):
        got = val_predictions(
            weights,
            args["data"],
            split=args["split"],
            imgsz=args["imgsz"],
            device=args["device"],
            project=Path(args["project"]),
            name=f"{args['name']}_{'model' if i == 0 else 'baseline'}",
            batch=args["batch"],
            **extra,
        )
        runs[label] = (got["pred"], got["gt"])
    return runs


COMMAND = Command(
    options={
        "pred": Option("", "COCO results JSON of the model (what `yolo val save_json=True` writes)"),
        "gt": Option("", "COCO ground-truth JSON (file form)"),
        "baseline_pred": Option("", "COCO results JSON of the baseline (file form; adds the relative-change row)"),
        "model": Option("", "checkpoint to validate (model form)"),
        "baseline": Option("", "baseline checkpoint (model form)"),
        "data": Option("", "data YAML (model form); its COCO GT is built from the YOLO labels when it has none"),
        "split": Option("val", "dataset split (model form)"),
        "imgsz": Option(640, "validation image size (model form)"),
        "device": Option("cpu", "validation device (model form)"),
        "batch": Option(16, "validation batch size (model form)"),
        "project": Option("runs/errors", "where the validation runs go (model form)"),
        "name": Option("val", "run name prefix: <project>/<name>_model, <name>_baseline (model form)"),
        "conf": Option(0.5, "confidence threshold (paper: 0.5)"),
        "iou": Option(0.5, "IoU threshold of a match (paper: 0.5)"),
        "cats": Option("auto", "how prediction category ids map to GT ids (see coco-eval)", choices=coco.CAT_RULES),
        "json": Option("", "write the numbers here as JSON"),
        "gallery": Option("", "write a PNG of each model's top false positives that the other does not make"),
        "images": Option("", "folder holding the images named in the GT (gallery, file form)"),
        "k": Option(8, "crops per gallery row"),
    },
    run=_run,
    example="fine-yolo errors model=runs/fine/weights/best.pt baseline=runs/base/weights/best.pt data=fine-synth.yaml",
    description=(
        "Paper Table 5 (TP/FP/FN, precision, recall, F1 at IoU 0.5 and confidence 0.5) and the TIDE error types, "
        "for one model or two (then with the relative change and, with gallery=, paper Fig. 9). File form: "
        "pred= gt= [baseline_pred=] as coco-eval takes them. Model form: model= [baseline=] data= runs `yolo val "
        "save_json=True` first. Counts: TP + FN = ground-truth boxes, TP + FP = detections above conf."
    ),
    passthrough="model form: any other `yolo val` argument (e.g. workers=0, half=True)",
)
