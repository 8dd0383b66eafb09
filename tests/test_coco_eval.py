"""``fine-yolo coco-eval``: AP worked out by hand, id mapping rules, errors, and agreement with faster-coco-eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fine_yolo.cli import run_subcommand
from fine_yolo.eval import coco

# Hand-made pair. Image 1, category 1: g1 = [10,10,20,20] (area 400, small), g2 = [100,100,50,50] (area 2500, medium).
#   p1 0.9 = g2 exactly (IoU 1); p2 0.8 on empty space, area 100 (small); p3 0.7 = [10,10,20,12.5]: IoU with g1 =
#   250/400 = 0.625, so a true positive at IoU thresholds 0.50, 0.55, 0.60 and a false positive at the other 7.
# Image 2, category 2: one large GT box (area 40000) found exactly: AP 1 at every threshold and size.
# COCO AP samples the interpolated precision at 101 recall points 0, 0.01, ..., 1 (51 of them are <= 0.5):
#   cat 1, t <= 0.60: TP, FP, TP -> precision 1 up to recall 0.5, then 2/3 -> (51 + 50 * 2/3) / 101 = 253/303
#   cat 1, t >= 0.65: TP, FP, FP -> recall stops at 0.5                       ->  51 / 101       = 153/303
#   AP50:95 = mean(cat 1 = (3 * 253 + 7 * 153) / 3030, cat 2 = 1) = 2430/3030;  AP50 = mean(253/303, 1) = 278/303;
#   AP75 = mean(153/303, 1) = 228/303.
#   APs (only cat 1 has a small GT, g1; p1 sits on a medium GT and is ignored): FP then TP -> 0.5 at 3 thresholds,
#   FP, FP -> 0 at 7: 0.15.  APm: p1 on g2 at every threshold, the rest is ignored (small) -> 1.  APl: cat 2 -> 1.
HAND_GT = {
    "images": [{"id": 1, "file_name": "1.jpg", "width": 400, "height": 400}, {"id": 2, "file_name": "2.jpg"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 100, 50, 50], "area": 2500, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [0, 0, 200, 200], "area": 40000, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
}
HAND_PRED = [
    {"image_id": 1, "category_id": 1, "bbox": [100, 100, 50, 50], "score": 0.9},
    {"image_id": 1, "category_id": 1, "bbox": [300, 300, 10, 10], "score": 0.8},
    {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 12.5], "score": 0.7},
    {"image_id": 2, "category_id": 2, "bbox": [0, 0, 200, 200], "score": 0.5},
]
HAND_AP = {
    "AP50:95": 2430 / 3030,
    "AP50": 278 / 303,
    "AP75": 228 / 303,
    "APs": 0.15,
    "APm": 1.0,
    "APl": 1.0,
}


def _write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_hand_computed_ap() -> None:
    r = coco.evaluate(HAND_PRED, HAND_GT)
    assert r["metrics"] == pytest.approx(HAND_AP, abs=1e-9)
    assert (r["image_ids"], r["category_ids"], r["detections"], r["gt_images_with_detections"]) == (
        "image_id",
        "ids",
        4,
        2,
    )


def test_size_range_without_gt_is_none() -> None:
    gt = {**HAND_GT, "annotations": HAND_GT["annotations"][:2], "images": HAND_GT["images"][:1]}
    r = coco.evaluate(HAND_PRED[:3], gt)
    assert r["metrics"]["APl"] is None  # pycocotools' -1: no large object in the GT
    assert r["metrics"]["AP50:95"] == pytest.approx(1830 / 3030)


def _coco80_gt() -> dict:
    """COCO's 80 categories; image 1 holds a person (id 1) and a stop sign (class 11, COCO id 13)."""
    from ultralytics.data.converter import coco80_to_coco91_class

    return {
        "images": [{"id": 139, "file_name": "000000000139.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 139, "category_id": 1, "bbox": [0, 0, 50, 100], "area": 5000, "iscrowd": 0},
            {"id": 2, "image_id": 139, "category_id": 13, "bbox": [100, 0, 40, 40], "area": 1600, "iscrowd": 0},
        ],
        "categories": [{"id": i, "name": f"c{i}"} for i in coco80_to_coco91_class()],
    }


@pytest.mark.parametrize(
    "ids, cats, rule",
    [
        ((1, 13), "auto", "ids"),  # what `yolo val data=coco.yaml save_json=True` writes
        ((1, 12), "auto", "index1"),  # class + 1, what it writes when it does not recognise COCO; 12 is no COCO id
        ((0, 11), "auto", "index0"),  # plain class indices
        ((1, 12), "index1", "index1"),
    ],
)
def test_coco80_category_mapping(ids: tuple[int, int], cats: str, rule: str) -> None:
    pred = [
        {"image_id": 139, "category_id": ids[0], "bbox": [0, 0, 50, 100], "score": 0.9},
        {"image_id": 139, "category_id": ids[1], "bbox": [100, 0, 40, 40], "score": 0.8},
    ]
    r = coco.evaluate(pred, _coco80_gt(), cats=cats)
    assert r["category_ids"] == rule
    assert r["metrics"]["AP50:95"] == pytest.approx(1.0)


def test_category_errors_and_ambiguity_note() -> None:
    pred = [{"image_id": 139, "category_id": 12, "bbox": [0, 0, 5, 5], "score": 0.9}]
    with pytest.raises(coco.CocoEvalError, match="category ids 12 are not in the ground truth"):
        coco.evaluate(pred, _coco80_gt(), cats="ids")
    with pytest.raises(coco.CocoEvalError, match="category ids 500 are not ground-truth category ids"):
        coco.evaluate([{**pred[0], "category_id": 500}], _coco80_gt())
    with pytest.raises(coco.CocoEvalError, match="cats=bogus"):
        coco.evaluate(pred, _coco80_gt(), cats="bogus")
    r = coco.evaluate([{**pred[0], "category_id": 1}], _coco80_gt())  # 1 is both a COCO id and a class + 1
    assert r["category_ids"] == "ids" and any("cats=index1" in n for n in r["notes"])


def test_ultralytics_style_predictions_on_converter_gt() -> None:
    """Predictions as `yolo val save_json=True` writes them on a converted VisDrone set (stem ids, class + 1)."""
    from fine_yolo.data.visdrone import ImageRecord, class_names, coco_ground_truth

    names = ("0000001_02999_d_0000005.jpg", "0000002_00005_d_0000014.jpg", "0007.jpg", "0009.jpg")
    records = {n: ImageRecord(Path(n), 100, 100, boxes=[(k, 10, 10, 60, 60)]) for k, n in enumerate(names)}
    gt = coco_ground_truth(records, class_names())  # ids 1..4 in name order; 0007.jpg is id 3, not 7
    stem_id = [int(Path(n).stem) if Path(n).stem.isnumeric() else Path(n).stem for n in names]  # ultralytics' rule
    pred = [
        {"image_id": i, "file_name": n, "category_id": k + 1, "bbox": [10, 10, 50, 50], "score": 0.9}
        for k, (n, i) in enumerate(zip(names, stem_id))
    ]
    r = coco.evaluate(pred, gt)
    assert (r["image_ids"], r["category_ids"], r["metrics"]["AP50:95"]) == ("file_name", "ids", pytest.approx(1.0))
    no_names = [{k: v for k, v in d.items() if k != "file_name"} for d in pred]
    r = coco.evaluate(no_names, gt)  # 7 and 9 are not GT ids -> matched to the numeric stems 0007 and 0009
    assert (r["image_ids"], r["metrics"]["AP50:95"]) == ("image_id = file stem", pytest.approx(1.0))
    other_split = [{**pred[0], "file_name": "elsewhere.jpg"}]
    with pytest.raises(coco.CocoEvalError, match="image file names are not in ground truth.*elsewhere.jpg"):
        coco.evaluate(other_split, gt)
    with pytest.raises(coco.CocoEvalError, match="image ids are not in ground truth.*'nope'"):
        coco.evaluate([{**no_names[0], "image_id": "nope"}], gt)


def test_missing_images_are_a_note_not_an_error() -> None:
    r = coco.evaluate(HAND_PRED[:3], HAND_GT)
    assert r["gt_images_with_detections"] == 1 and any("1 of 2 ground-truth images" in n for n in r["notes"])
    assert r["metrics"]["AP50:95"] == pytest.approx((1830 / 3030 + 0) / 2)


def test_gt_fields_filled_with_a_note() -> None:
    gt = {
        **HAND_GT,
        "annotations": [
            {k: v for k, v in a.items() if k not in ("area", "iscrowd", "id")} for a in HAND_GT["annotations"]
        ],
    }
    r = coco.evaluate(HAND_PRED, gt)
    assert r["metrics"] == pytest.approx(HAND_AP)
    assert len(r["notes"]) == 3 and "area" in r["notes"][0]
    assert "area" not in gt["annotations"][0]  # the caller's object is not modified


@pytest.mark.parametrize(
    "pred, gt, message",
    [
        ([], HAND_GT, "empty list, no detections"),
        (HAND_GT, HAND_GT, "got an object with keys .*is this a ground-truth file"),
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}], HAND_GT, "detection #0: missing score"),
        ([{**HAND_PRED[0], "bbox": [0, 0, -1, 1]}], HAND_GT, r"detection #0: bbox must be"),
        ([{**HAND_PRED[0], "score": "high"}], HAND_GT, "score must be a finite number"),
        (HAND_PRED, HAND_PRED, "got a JSON list .are pred= and gt= swapped"),
        (HAND_PRED, {"images": [], "categories": []}, "missing or non-list 'annotations'"),
        (HAND_PRED, {**HAND_GT, "annotations": []}, "has no annotations"),
        (HAND_PRED, {**HAND_GT, "annotations": [{**HAND_GT["annotations"][0], "category_id": 7}]}, "category_id 7"),
        ([{**HAND_PRED[0], "image_id": 99}], {**HAND_GT, "images": [{"id": 1}, {"id": 2}]}, "ids are not in .*99"),
    ],
)
def test_input_errors(pred: object, gt: object, message: str) -> None:
    with pytest.raises(coco.CocoEvalError, match=message):
        coco.evaluate(pred, gt)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    gt = _write(tmp_path / "gt.json", HAND_GT)
    with pytest.raises(coco.CocoEvalError, match=f"predictions {tmp_path / 'missing.json'}: cannot read"):
        coco.evaluate(tmp_path / "missing.json", gt)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image_id": 1,\n "score": }]')
    with pytest.raises(coco.CocoEvalError, match=f"predictions {bad}: not valid JSON: .* at line 2 column 11"):
        coco.evaluate(bad, gt)
    with pytest.raises(coco.CocoEvalError, match=f"ground truth {tmp_path}: cannot read"):
        coco.evaluate(_write(tmp_path / "p.json", HAND_PRED), tmp_path)


def test_cli_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred, gt = _write(tmp_path / "predictions.json", HAND_PRED), _write(tmp_path / "gt.json", HAND_GT)
    assert run_subcommand("coco-eval", [f"pred={pred}", f"gt={gt}"]) == 0
    text = capsys.readouterr().out
    assert "| AP50:95 | 0.8020 | 80.20 |" in text and "| APs | 0.1500 | 15.00 |" in text
    written = json.loads((tmp_path / "coco_eval.json").read_text())
    assert written["metrics"] == pytest.approx(HAND_AP) and written["evaluator"].startswith("pycocotools")
    assert run_subcommand("coco-eval", [f"pred={pred}", f"gt={gt}", f"json={tmp_path / 'sub' / 'r.json'}"]) == 0
    assert (tmp_path / "sub" / "r.json").is_file()
    assert run_subcommand("coco-eval", [f"pred={tmp_path / 'nope.json'}", f"gt={gt}"]) == 1
    assert f"{tmp_path / 'nope.json'}: cannot read" in capsys.readouterr().err
    assert run_subcommand("coco-eval", [f"pred={pred}"]) == 2
    assert "fine-yolo coco-eval: missing required argument(s): gt=..." in capsys.readouterr().err
    assert run_subcommand("coco-eval", [f"pred={pred}", f"gt={gt}", "cats=bogus"]) == 2
    assert "'cats=bogus' must be one of auto, ids, index1, index0" in capsys.readouterr().err


def _random_pair(seed: int) -> tuple[dict, list[dict]]:
    """30 images, 5 categories, boxes of every size, some crowd; detections jittered, some missed, some spurious."""
    rng = np.random.default_rng(seed)
    images, anns, preds = [], [], []
    for img in range(1, 31):
        images.append({"id": img, "file_name": f"{img}.jpg", "width": 640, "height": 480})
        for _ in range(rng.integers(1, 12)):
            w, h = (float(v) for v in rng.choice([8, 20, 40, 80, 150, 300]) * rng.uniform(0.7, 1.3, 2))
            x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h))
            cat = int(rng.integers(1, 6))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(rng.random() < 0.1),  # crowd regions: matches there are neither TP nor FP
                }
            )
            if rng.random() < 0.85:  # detected, with box noise and a random category error now and then
                j = rng.normal(0, 0.08, 4) * [w, h, w, h]
                c = cat if rng.random() < 0.9 else int(rng.integers(1, 6))
                preds.append(
                    {
                        "image_id": img,
                        "category_id": c,
                        "bbox": [x + j[0], y + j[1], w + j[2], h + j[3]],
                        "score": float(rng.uniform(0.05, 1)),
                    }
                )
        for _ in range(rng.integers(0, 5)):  # false positives
            w, h = (float(v) for v in rng.uniform(5, 200, 2))
            preds.append(
                {
                    "image_id": img,
                    "category_id": int(rng.integers(1, 6)),
                    "bbox": [float(rng.uniform(0, 500)), float(rng.uniform(0, 350)), w, h],
                    "score": float(rng.uniform(0, 0.6)),
                }
            )
    for p in preds:
        p["bbox"] = [round(v, 3) for v in p["bbox"]]  # ultralytics rounds boxes to 3 decimals
        p["score"] = round(p["score"], 2)  # and scores to 5; 2 makes ties, whose order both must break alike
        p["bbox"][2:] = [max(v, 0.5) for v in p["bbox"][2:]]
    gt = {"images": images, "annotations": anns, "categories": [{"id": i, "name": f"c{i}"} for i in range(1, 6)]}
    return gt, preds


def _faster_coco_eval(pred_file: Path, gt_file: Path) -> dict:
    """The evaluation ultralytics runs (DetectionValidator.coco_evaluate), on the same files."""
    fce = pytest.importorskip("faster_coco_eval", reason="faster-coco-eval (ultralytics' evaluator) not installed")
    anno = fce.COCO(str(gt_file))
    val = fce.COCOeval_faster(
        anno, anno.loadRes(str(pred_file)), iouType="bbox", lvis_style=False, print_function=lambda *a: None
    )
    val.params.imgIds = anno.getImgIds()
    val.evaluate()
    val.accumulate()
    val.summarize()
    s = val.stats_as_dict
    return dict(zip(coco.AP_KEYS, (s["AP_all"], s["AP_50"], s["AP_75"], s["AP_small"], s["AP_medium"], s["AP_large"])))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_faster_coco_eval(tmp_path: Path, seed: int) -> None:
    gt, pred = _random_pair(seed)
    gt_file, pred_file = _write(tmp_path / "gt.json", gt), _write(tmp_path / "pred.json", pred)
    ours = coco.evaluate(pred_file, gt_file)["metrics"]
    theirs = _faster_coco_eval(pred_file, gt_file)
    assert 0.2 < ours["AP50:95"] < 0.9  # a non-trivial case, not all zeros or ones
    diff = {k: abs(ours[k] - theirs[k]) for k in coco.AP_KEYS}
    assert max(diff.values()) <= 1e-3, diff


def test_hand_pair_with_faster_coco_eval(tmp_path: Path) -> None:
    theirs = _faster_coco_eval(_write(tmp_path / "p.json", HAND_PRED), _write(tmp_path / "g.json", HAND_GT))
    assert theirs == pytest.approx(HAND_AP, abs=1e-6)
