"""Error analysis (issue 9 §2): Table-5 counts and TIDE types worked out by hand, the count identities, hotcoco against
pycocotools, ids through coco.py's rules, COCO GT from YOLO labels, the false-positive gallery, and the CLI."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import offline_env, script
from PIL import Image

from fine_yolo.data.coco_gt import CocoGtError, coco_gt, dataset_gt, read_labels, yolo_split_to_coco
from fine_yolo.errors import UsageError
from fine_yolo.eval import errors, gallery, matching, tide
from fine_yolo.eval.coco import CocoEvalError

# The hand-made pair. Three 100x100 images; car = category 1, boat = 2; boxes [x, y, w, h].
#   a.png  g1 car  [10,10,20,20]   g2 car [50,50,20,20]   g3 boat [10,60,20,20]   g4 boat [70,10,20,20]
#   b.png  (no ground truth)
#   c.png  g5 boat [40,40,20,20]   g6 boat [70,70,20,20]  g7 car crowd [0,0,30,30]
# Detections (index: image class box score) and what they are at conf 0.5, IoU 0.5:
#   d0 a car  [10,10,20,20] .90  TP on g1 (IoU 1)
#   d1 a car  [11,11,20,20] .80  FP dupe: IoU 361/439 = .82 with g1, which d0 already took
#   d2 a car  [10,60,20,20] .70  FP cls: IoU 1 with boat g3; no car box overlaps
#   d3 a car  [50,50,20, 8] .60  FP loc: IoU 160/400 = .40 with car g2 (in [.1, .5])
#   d4 a boat [60,50,20,20] .58  FP both: IoU 200/600 = .33 with car g2, 0 with every boat
#   d5 a boat [40,85,10,10] .55  FP bkg: overlaps nothing
#   d6 a car  [50,50,20,20] .30  below conf (at conf .25 it takes g2, see test_conf_threshold)
#   d7 b car  [ 5, 5,10,10] .95  FP bkg: image without ground truth
#   d8 c car  [ 5, 5,10,10] .90  ignored: inside crowd g7 (intersection / detection area = 1)
#   d9 c boat [40,40,20,10] .65  TP on g5: IoU 200/400 = .5 exactly (COCO matches IoU >= threshold)
# Totals: TP 2 (d0 d9), FP 6 (d1-d5, d7), crowd-ignored 1 (d8), below conf 1 (d6); 6 non-crowd GT boxes, FN 4
# (g2 g3 g4 g6): TP + FN = 6, TP + FP = 8 = 9 above conf - 1 ignored. TIDE: cls 1, loc 1, both 1, dupe 1, bkg 2
# (sum 6 = FP); miss 2: of the FN boxes g2 is what d3's loc error points at and g3 d2's cls error, so g4 and g6.
# car: TP 1, FP 4 (d1 d2 d3 d7), FN 1 (g2); boat: TP 1, FP 2 (d4 d5), FN 3 (g3 g4 g6).
GT_BOXES = [
    ("a.png", 1, [10, 10, 20, 20], 0),
    ("a.png", 1, [50, 50, 20, 20], 0),
    ("a.png", 2, [10, 60, 20, 20], 0),
    ("a.png", 2, [70, 10, 20, 20], 0),
    ("c.png", 2, [40, 40, 20, 20], 0),
    ("c.png", 2, [70, 70, 20, 20], 0),
    ("c.png", 1, [0, 0, 30, 30], 1),
]
DETS = [
    ("a.png", 1, [10, 10, 20, 20], 0.90),
    ("a.png", 1, [11, 11, 20, 20], 0.80),
    ("a.png", 1, [10, 60, 20, 20], 0.70),
    ("a.png", 1, [50, 50, 20, 8], 0.60),
    ("a.png", 2, [60, 50, 20, 20], 0.58),
    ("a.png", 2, [40, 85, 10, 10], 0.55),
    ("a.png", 1, [50, 50, 20, 20], 0.30),
    ("b.png", 1, [5, 5, 10, 10], 0.95),
    ("c.png", 1, [5, 5, 10, 10], 0.90),
    ("c.png", 2, [40, 40, 20, 10], 0.65),
]
NAMES = ("a.png", "b.png", "c.png")


def make_gt(cat_ids=(1, 2)) -> dict:
    images = [{"id": i, "file_name": n, "width": 100, "height": 100} for i, n in enumerate(NAMES, 1)]
    anns = [
        {"id": k, "image_id": NAMES.index(f) + 1, "category_id": cat_ids[c - 1], "bbox": b, "area": b[2] * b[3],
         "iscrowd": crowd}
        for k, (f, c, b, crowd) in enumerate(GT_BOXES, 1)
    ]
    cats = [{"id": cat_ids[0], "name": "car"}, {"id": cat_ids[1], "name": "boat"}]
    return {"info": {}, "images": images, "annotations": anns, "categories": cats}


def make_pred(dets=DETS, cat=lambda c: c, image=lambda f: NAMES.index(f) + 1) -> list[dict]:
    return [{"image_id": image(f), "category_id": cat(c), "bbox": b, "score": s} for f, c, b, s in dets]


def test_hand_made_counts_and_tide_types():
    d = errors.analyze(make_pred(), make_gt()).to_dict()
    assert (d["images"], d["gt_boxes"], d["detections"]) == (3, 6, 8)
    assert (d["tp"], d["fp"], d["fn"], d["crowd_ignored"], d["below_conf"]) == (2, 6, 4, 1, 1)
    assert d["precision"] == pytest.approx(2 / 8) and d["recall"] == pytest.approx(2 / 6)
    assert d["f1"] == pytest.approx(2 * 2 / (2 * 2 + 6 + 4))
    assert d["tide"] == {"cls": 1, "loc": 1, "both": 1, "dupe": 1, "bkg": 2, "miss": 2}
    assert d["per_class"] == {
        "car": {"tp": 1, "fp": 4, "fn": 1, "precision": 0.2, "recall": 0.5, "f1": pytest.approx(2 / 7)},
        "boat": {"tp": 1, "fp": 2, "fn": 3, "precision": pytest.approx(1 / 3), "recall": 0.25,
                 "f1": pytest.approx(2 / 7)},
    }
    assert (d["conf"], d["iou"]) == (0.5, 0.5) and "greedy by descending score" in d["matching"]
    json.dumps(d)  # JSON-ready


def test_per_detection_status():
    report = errors.analyze(make_pred(), make_gt())
    status = {det.index: det.status for det in report.detections}
    # indices of the detections above conf (d6 dropped): d0 d1 d2 d3 d4 d5 d7 d8 d9 -> 0..8
    assert status == {0: "tp", 1: "fp", 2: "fp", 3: "fp", 4: "fp", 5: "fp", 6: "fp", 7: "ignored", 8: "tp"}


def test_conf_threshold():
    # conf .25 lets d6 in: greedy by score, d3 (.60, IoU .40) cannot take g2, d6 (.30, IoU 1) then does.
    # d3 stays a loc error (TIDE tests loc before dupe, against used boxes too), so the types are unchanged.
    d = errors.analyze(make_pred(), make_gt(), conf=0.25).to_dict()
    assert (d["tp"], d["fp"], d["fn"], d["detections"]) == (3, 6, 3, 9)
    assert d["tide"] == {"cls": 1, "loc": 1, "both": 1, "dupe": 1, "bkg": 2, "miss": 2}
    # conf .99: nothing left; every box missed
    d = errors.analyze(make_pred(), make_gt(), conf=0.99).to_dict()
    assert (d["tp"], d["fp"], d["fn"], d["precision"], d["recall"], d["f1"]) == (0, 0, 6, None, 0.0, 0.0)
    assert d["tide"]["miss"] == 6


def test_iou_threshold():
    # IoU .55: d9 (IoU exactly .5 with g5) is no longer a TP but a loc error pointing at g5, so g5 is not "missed".
    d = errors.analyze(make_pred(), make_gt(), iou=0.55).to_dict()
    assert (d["tp"], d["fp"], d["fn"]) == (1, 7, 5)
    assert d["tide"] == {"cls": 1, "loc": 2, "both": 1, "dupe": 1, "bkg": 2, "miss": 2}


def _random_case(rng, nimg=4, ncat=3):
    gt = {"info": {}, "images": [{"id": i + 1, "file_name": f"{i}.png"} for i in range(nimg)],
          "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(ncat)], "annotations": []}
    for i in range(nimg):
        for _ in range(rng.integers(0, 8)):
            x, y, w, h = (float(v) for v in (*rng.integers(0, 150, 2), *rng.integers(5, 50, 2)))
            a = {"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": int(rng.integers(1, ncat + 1)),
                 "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(rng.random() < 0.1)}
            if rng.random() < 0.1:
                a["ignore"] = 1  # pycocotools overrides it with iscrowd; hotcoco must agree
            gt["annotations"].append(a)
    pred = []
    for a in gt["annotations"]:
        for _ in range(rng.integers(0, 3)):
            b = np.array(a["bbox"]) + rng.normal(0, 5, 4)
            b[2:] = np.abs(b[2:]) + 1
            c = a["category_id"] if rng.random() < 0.8 else int(rng.integers(1, ncat + 1))
            pred.append({"image_id": a["image_id"], "category_id": c, "bbox": b.tolist(),
                         "score": float(np.round(rng.random(), 2))})  # rounded: ties happen
    for _ in range(rng.integers(1, 6)):
        x, y, w, h = (float(v) for v in (*rng.integers(0, 150, 2), *rng.integers(5, 50, 2)))
        pred.append({"image_id": int(rng.integers(1, nimg + 1)), "category_id": int(rng.integers(1, ncat + 1)),
                     "bbox": [x, y, w, h], "score": float(np.round(rng.random(), 2))})
    return gt, pred


@pytest.mark.parametrize("iou", [0.3, 0.5, 0.75])
def test_hotcoco_agrees_with_pycocotools(iou):
    """hotcoco's own per-detection TP/FP equals pycocotools' matching; its TIDE types sum to pycocotools' FP."""
    import hotcoco

    rng = np.random.default_rng(int(iou * 100))
    for _ in range(25):
        gt, pred = _random_case(rng)
        indexed = matching.index_ids(gt, pred)
        ours = matching.match(indexed, iou)
        coco_gt_ = hotcoco.COCO(indexed.gt)
        ev = hotcoco.COCOeval(coco_gt_, coco_gt_.load_res(indexed.results), "bbox")
        p = ev.params
        p.iou_thrs, p.max_dets = [iou], [len(pred) + 1]
        ev.params = p
        ev.evaluate()
        theirs = ev.image_diagnostics(iou_thr=iou, score_thr=0.0)["dt_status"]  # ids 1..N in list order
        counted = {d.index: d.status for d in ours.detections if d.status != "ignored"}
        assert {i - 1: s for i, s in theirs.items()} == counted
        counts = tide.tide_counts(indexed, iou)
        fp = sum(d.status == "fp" for d in ours.detections)
        fn = sum(c["fn"] for c in ours.per_category.values())
        assert sum(counts[k] for k in tide.FP_TYPES) == fp and counts["miss"] <= fn


def test_count_identities_on_random_cases():
    rng = np.random.default_rng(7)
    for _ in range(20):
        gt, pred = _random_case(rng)
        conf = float(rng.choice([0.0, 0.3, 0.5, 0.8]))
        d = errors.analyze(pred, gt, conf=conf).to_dict()
        crowd = sum(a["iscrowd"] for a in gt["annotations"])
        assert d["tp"] + d["fn"] == d["gt_boxes"] == len(gt["annotations"]) - crowd
        assert d["tp"] + d["fp"] == d["detections"] == sum(p["score"] >= conf for p in pred) - d["crowd_ignored"]
        assert sum(c["tp"] for c in d["per_class"].values()) == d["tp"]
        assert sum(c["fn"] for c in d["per_class"].values()) == d["fn"]


def test_ids_through_coco_rules():
    # GT category ids 3 and 7; predictions as ultralytics writes them for a non-COCO dataset: class index + 1,
    # and image ids as file stems ('a', 'b', 'c'), which coco.py maps to the GT's file names.
    gt = make_gt(cat_ids=(3, 7))
    pred = make_pred(image=lambda f: Path(f).stem)
    report = errors.analyze(pred, gt, cats="index1")
    d = report.to_dict()
    assert (d["tp"], d["fp"], d["fn"]) == (2, 6, 4) and d["category_ids"] == "index1"
    assert d["image_ids"] == "image_id = file stem"
    assert set(d["per_class"]) == {"car", "boat"} and d["per_class"]["boat"]["fn"] == 3
    assert {det.category_id for det in report.detections} == {3, 7}
    # class indices 0/1 (index0), found by cats=auto; with file_name on every detection, matched by file name
    pred0 = [dict(p, category_id=p["category_id"] - 1, file_name=NAMES[p["image_id"] - 1]) for p in make_pred()]
    d0 = errors.analyze(pred0, gt).to_dict()
    assert (d0["tp"], d0["fp"], d0["category_ids"], d0["image_ids"]) == (2, 6, "index0", "file_name")
    # string image ids in the GT (what coco_gt writes for non-numeric stems) work as well
    gt_s = copy.deepcopy(make_gt())
    for im in gt_s["images"]:
        im["id"] = Path(im["file_name"]).stem
    for a in gt_s["annotations"]:
        a["image_id"] = NAMES[a["image_id"] - 1][0]
    assert errors.analyze(make_pred(image=lambda f: f[0]), gt_s).to_dict()["tp"] == 2


def test_bad_inputs_name_the_file(tmp_path):
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(make_gt()))
    bad = tmp_path / "pred.json"
    bad.write_text('[{"image_id": 1,')
    with pytest.raises(CocoEvalError, match=r"pred\.json: not valid JSON"):
        errors.analyze(bad, gt_path)
    with pytest.raises(CocoEvalError, match="swapped"):
        errors.analyze(make_pred(), make_pred())
    broken = make_pred()
    broken[3]["bbox"] = [1, 2, -3, 4]
    with pytest.raises(CocoEvalError, match="detection #3: bbox"):
        errors.analyze(broken, gt_path)
    with pytest.raises(CocoEvalError, match="image ids are not in ground truth"):
        errors.analyze(make_pred(image=lambda f: 99), gt_path)
    with pytest.raises(CocoEvalError, match="missing.*no_such.json"):
        errors.analyze(make_pred(), tmp_path / "missing" / "no_such.json")
    with pytest.raises(UsageError, match="conf=1.5"):
        errors.analyze(make_pred(), gt_path, conf=1.5)
    with pytest.raises(UsageError, match="cats=foo"):
        errors.analyze(make_pred(), gt_path, cats="foo")


def test_no_detections_is_all_missed():
    d = errors.analyze([], make_gt()).to_dict()
    assert (d["tp"], d["fp"], d["fn"], d["tide"]["miss"]) == (0, 0, 6, 6)
    assert d["notes"] == ["no detections at all"]


# The second model of the pair: the base predictions without d5 and d7 (two bkg FPs), plus one FP of its own,
#   d10 c boat [75,75,10,10] .70: IoU 100/400 = .25 with boat g6 -> loc.
# Model: TP 2, FP 5, FN 4. Relative change against the base (TP 2, FP 6, FN 4): tp 0, fp -1/6, fn 0,
# precision 2/7 vs 2/8 -> +1/7, recall 0, F1 4/13 vs 4/14 -> +1/13.
# Gallery: FPs only the model makes: d10 (the base has nothing on c.png's boat at [75,75]); only the base makes:
# d7 (.95) and d5 (.55); d1-d4 are in both.
MODEL_DETS = [d for i, d in enumerate(DETS) if i not in (5, 7)] + [("c.png", 2, [75, 75, 10, 10], 0.70)]


def test_compare_reports_relative_change():
    base = errors.analyze(make_pred(), make_gt())
    model = errors.analyze(make_pred(MODEL_DETS), make_gt())
    change = errors.compare_reports(base, model)
    expected = {"tp": 0.0, "fp": -1 / 6, "fn": 0.0, "precision": 1 / 7, "recall": 0.0, "f1": 1 / 13}
    assert change == pytest.approx(expected)
    empty = errors.analyze([], make_gt())
    assert errors.compare_reports(empty, base)["tp"] is None  # from 0 TPs: no relative change
    with pytest.raises(errors.ErrorsInputError, match="conf 0.5 vs 0.3"):
        errors.compare_reports(base, errors.analyze(make_pred(), make_gt(), conf=0.3))


def _write_images(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n in NAMES:
        Image.fromarray(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)).save(root / n)


def test_gallery_png(tmp_path):
    _write_images(tmp_path / "imgs" / "val")
    base = errors.analyze(make_pred(), make_gt())
    model = errors.analyze(make_pred(MODEL_DETS), make_gt())
    assert [d.index for d in gallery.only_in(model.detections, base.detections, 0.5)] == [7]  # d10
    images = gallery.image_paths(model.image_files, tmp_path / "imgs")
    out = tmp_path / "g" / "fp.png"
    result = gallery.fp_gallery(model, base, images, out, labels=("FINE", "baseline"), k=4)
    assert [(r["label"], r["shown"], r["total"]) for r in result["rows"]] == [
        ("only FINE", 1, 1),
        ("only baseline", 2, 2),
    ]
    assert result["rows"][1]["detections"] == [6, 5]  # d7 (.95) before d5 (.55), indices above conf
    with Image.open(out) as im:
        assert im.size == (int(2.0 * 4 * 110), int(5.2 * 110))
    one = gallery.fp_gallery(model, base, images, tmp_path / "one.png", k=1)
    assert [r["shown"] for r in one["rows"]] == [1, 1]
    (tmp_path / "imgs" / "val" / "b.png").unlink()  # d7's image
    with pytest.raises(gallery.GalleryError, match="'b.png' not found under"):
        gallery.fp_gallery(model, base, gallery.image_paths(model.image_files, tmp_path / "imgs"), out)


# A tiny YOLO dataset: 100x50 images '1.png', 'a.png', 'b.png' (b has no label file).
#   1.txt: "0 0.5 0.5 0.2 0.4" twice (one duplicate removed) -> box [40, 15, 20, 20]
#   a.txt: polygon "1 0.1 0.2 0.3 0.2 0.3 0.6" -> xyxy (10, 10)-(30, 30) -> [10, 10, 20, 20]
def _yolo_dataset(root: Path, label_a: str = "1 0.1 0.2 0.3 0.2 0.3 0.6\n") -> Path:
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for n in ("1.png", "a.png", "b.png"):
        Image.new("RGB", (100, 50), (90, 90, 90)).save(root / "images" / "val" / n)
    (root / "labels" / "val" / "1.txt").write_text("0 0.5 0.5 0.2 0.4\n\n0 0.5 0.5 0.2 0.4\n")
    (root / "labels" / "val" / "a.txt").write_text(label_a)
    data = root / "tiny.yaml"
    data.write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames:\n  0: car\n  1: boat\n")
    return data


def test_coco_gt_from_yolo_labels(tmp_path):
    data = _yolo_dataset(tmp_path / "ds")
    gt = coco_gt(data, "val")
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in gt["images"]] == [
        (1, "1.png", 100, 50),  # numeric stem -> int id, as ultralytics' pred_to_json writes it
        ("a", "a.png", 100, 50),
        ("b", "b.png", 100, 50),
    ]
    assert [(a["image_id"], a["category_id"], a["bbox"]) for a in gt["annotations"]] == [
        (1, 1, pytest.approx([40, 15, 20, 20])),
        ("a", 2, pytest.approx([10, 10, 20, 20])),
    ]
    assert gt["categories"] == [{"id": 1, "name": "car"}, {"id": 2, "name": "boat"}]
    assert gt["info"]["duplicate_rows_removed"] == 1 and gt["info"]["images_without_label_file"] == 1
    # round trip: the GT boxes as predictions (image ids and file names as yolo val writes them) are all TPs
    pred = [{"image_id": a["image_id"], "file_name": f"{a['image_id']}.png", "category_id": a["category_id"],
             "bbox": a["bbox"], "score": 0.9} for a in gt["annotations"]]
    d = errors.analyze(pred, gt).to_dict()
    assert (d["images"], d["tp"], d["fp"], d["fn"]) == (3, 2, 0, 0)


def test_coco_gt_files(tmp_path):
    data = _yolo_dataset(tmp_path / "ds")
    default = yolo_split_to_coco(data)
    assert default == tmp_path / "ds" / "annotations" / "instances_val.json"
    assert "info" in json.loads(default.read_text())
    assert dataset_gt(data) is None  # our own file is not "the dataset's ground truth"
    assert yolo_split_to_coco(data) == default  # ours: rewritten
    default.write_text(json.dumps(make_gt()))  # now a foreign file (e.g. from fine-yolo visdrone)
    assert dataset_gt(data) == default
    with pytest.raises(CocoGtError, match="not written by"):
        yolo_split_to_coco(data)
    elsewhere = yolo_split_to_coco(data, out=tmp_path / "x" / "gt.json")
    assert json.loads(elsewhere.read_text())["info"]["split"] == "val"
    with pytest.raises(CocoGtError, match="no 'test' split"):
        coco_gt(data, "test")


@pytest.mark.parametrize(
    "label, message",
    [
        ("0 0.5 0.5 0.2 0.4\n0 0.5 0.5 0.2\n", r"a\.txt:2: '0 0.5 0.5 0.2': expected"),
        ("3 0.5 0.5 0.2 0.4\n", r"a\.txt:1: .*class 3 is not an integer in 0..1"),
        ("0.5 0.5 0.5 0.2 0.4\n", r"a\.txt:1: .*class 0.5"),
        ("0 0.5 x 0.2 0.4\n", r"a\.txt:1: .*not a number"),
        ("\n0 0.5 0.5 1.2 0.4\n", r"a\.txt:2: .*normalised"),
        ("0 0.5 0.5 0.2 nan\n", r"a\.txt:1: .*finite"),
        ("0 0.5 0.5 0.2 0.4\n1 0.1 0.2 0.3 0.2 0.3 0.6\n", r"a\.txt:2: .*mixed"),
    ],
)
def test_malformed_label_line_names_file_and_line(tmp_path, label, message):
    data = _yolo_dataset(tmp_path / "ds", label_a=label)
    with pytest.raises(CocoGtError, match=message):
        coco_gt(data)


def test_read_labels_negative_size(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("0 0.5 0.5 -0.005 0.2\n")
    with pytest.raises(CocoGtError, match=r"x\.txt:1: .*negative width"):
        read_labels(f, 1)


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    gt, base, model = (
        tmp_path / "gt.json",
        tmp_path / "base" / "predictions.json",
        tmp_path / "fine" / "predictions.json",
    )
    base.parent.mkdir()
    model.parent.mkdir()
    gt.write_text(json.dumps(make_gt()))
    base.write_text(json.dumps(make_pred()))
    model.write_text(json.dumps(make_pred(MODEL_DETS)))
    return gt, base, model


def test_cli_file_form(tmp_path, capsys):
    gt, base, model = _files(tmp_path)
    _write_images(tmp_path / "imgs")
    out, png = tmp_path / "out" / "e.json", tmp_path / "out" / "g.png"
    argv = [f"pred={model}", f"gt={gt}", f"baseline_pred={base}", f"json={out}", f"gallery={png}",
            f"images={tmp_path / 'imgs'}", "k=3"]
    assert errors.COMMAND.run(*errors.COMMAND.parse(argv)) == 0
    text = capsys.readouterr().out
    assert "| relative change | - | +0.00% | -16.67% | +0.00% | +14.29% | +0.00% | +7.69% |" in text
    assert "| fine | 3 | 2 | 5 | 4 | 0.286 | 0.333 | 0.308 |" in text  # labels: the run folders
    assert "| base | 1 | 1 | 1 | 1 | 2 | 2 |" in text  # TIDE row of the base
    result = json.loads(out.read_text())
    assert result["model"]["label"] == "fine" and result["baseline"]["fp"] == 6
    assert result["relative_change"]["fp"] == pytest.approx(-1 / 6)
    assert png.is_file()
    # one model: the plain keys at the top level
    assert errors.COMMAND.run(*errors.COMMAND.parse([f"pred={base}", f"gt={gt}", f"json={out}"])) == 0
    assert {"tp", "fp", "fn", "precision", "recall", "f1", "per_class", "tide"} <= set(json.loads(out.read_text()))


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "either pred="),
        (["pred=p.json"], "needs both pred"),
        (["pred=p.json", "gt=g.json", "model=m.pt"], "not both"),
        (["pred=p.json", "gt=g.json", "gallery=x.png"], "gallery= compares two models"),
        (["pred=p.json", "gt=g.json", "imgsz=320"], "imgsz belong to the model form"),
        (["model=m.pt", "data=d.yaml", "baseline_pred=b.json"], "belong to the file form"),
    ],
)
def test_cli_usage_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        errors.COMMAND.run(*errors.COMMAND.parse(argv))


def test_console_script(tmp_path):
    gt, base, _ = _files(tmp_path)
    run = dict(capture_output=True, text=True, env=offline_env(), timeout=300)
    proc = subprocess.run([script("fine-yolo"), "errors", f"pred={base}", f"gt={gt}", "conf=0.25"], **run)
    assert proc.returncode == 0, proc.stderr
    assert "| base | 3 | 3 | 6 | 3 | 0.333 | 0.500 | 0.400 |" in proc.stdout
    proc = subprocess.run([script("fine-yolo"), "errors", f"pred={tmp_path / 'nope.json'}", f"gt={gt}"], **run)
    assert proc.returncode == 1 and "fine-yolo errors: predictions" in proc.stderr and "nope.json" in proc.stderr
    proc = subprocess.run([script("fine-yolo"), "errors", "help"], **run)
    assert proc.returncode == 0 and "baseline_pred" in proc.stdout


def _tiny_val_set(tmp_path: Path) -> tuple[Path, Path]:
    """4 images of 64 px, 2 boxes each, and an untrained yolov8n checkpoint (train nothing)."""
    from ultralytics import YOLO

    root = tmp_path / "ds"
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (64, 64), (40 * i, 80, 120)).save(root / "images" / "val" / f"im{i}.png")
        (root / "labels" / "val" / f"im{i}.txt").write_text("0 0.5 0.5 0.25 0.25\n1 0.2 0.2 0.1 0.1\n")
    data = root / "tiny.yaml"
    data.write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames:\n  0: car\n  1: boat\n")
    weights = tmp_path / "untrained.pt"
    YOLO("yolov8n.yaml").save(weights)
    return data, weights


def test_val_predictions(tmp_path):
    from fine_yolo.eval.predictions import PredictionsError, val_predictions

    data, weights = _tiny_val_set(tmp_path)
    stale = tmp_path / "runs" / "v" / "predictions.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps(make_pred()))  # another model's: must not survive
    got = val_predictions(weights, data, imgsz=64, project=tmp_path / "runs", name="v", batch=4, workers=0)
    assert set(got) == {"pred", "gt", "map50_95", "map50"} and got["pred"] == stale
    pred = json.loads(stale.read_text())
    assert isinstance(pred, list) and all(p["file_name"].startswith("im") for p in pred)
    assert got["gt"] == tmp_path / "runs" / "v" / "instances_val.json"
    assert 0.0 <= got["map50"] <= 1.0 and isinstance(got["map50_95"], float)
    with pytest.raises(PredictionsError, match="nope.pt: no such file"):
        val_predictions(tmp_path / "nope.pt", data)
    with pytest.raises(PredictionsError, match="save_json: set by the error analysis"):
        val_predictions(weights, data, save_json=False)


def test_model_form_untrained_checkpoint(tmp_path, capsys):
    """`yolo val` of an untrained yolov8n on 4 images at 64 px: nothing above conf 0.5, so every box is missed."""
    data, weights = _tiny_val_set(tmp_path)
    out = tmp_path / "e.json"
    argv = [f"model={weights}", f"baseline={weights}", f"data={data}", "imgsz=64", "batch=4", "workers=0",
            f"project={tmp_path / 'runs'}", f"json={out}", f"gallery={tmp_path / 'g.png'}"]
    assert errors.COMMAND.run(*errors.COMMAND.parse(argv)) == 0
    result = json.loads(out.read_text())
    for side in ("model", "baseline"):
        assert (result[side]["images"], result[side]["gt_boxes"]) == (4, 8)
        assert (result[side]["tp"], result[side]["fp"], result[side]["fn"]) == (0, 0, 8)
    assert result["model"]["label"] == "model"  # both called untrained: told apart by role
    assert result["relative_change"]["tp"] is None
    gt = json.loads((tmp_path / "runs" / "val_model" / "instances_val.json").read_text())
    assert [im["id"] for im in gt["images"]] == ["im0", "im1", "im2", "im3"]
    assert (tmp_path / "runs" / "val_baseline" / "predictions.json").is_file()
    assert "only model: 0 of 0" in capsys.readouterr().out
