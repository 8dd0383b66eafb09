"""VisDrone converter on hand-made fixtures: every label line, every drop reason, and one real ultralytics epoch."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fine_yolo.cli import run_subcommand
from fine_yolo.data import visdrone as vd

W, H = 100, 80  # fixture image size (width, height)

# train/a.jpg: one row per case. Comments give the expected outcome; line numbers matter for the error test.
A_ROWS = [
    "10,10,20,30,1,1,0,0",  # 1 pedestrian -> class 0
    "50,20,10,10,1,4,1,2",  # 2 car, truncated and heavily occluded -> class 3, kept
    "0,60,30,20,0,0,0,0",  # 3 ignored region (category 0)
    "70,5,10,10,1,11,0,0",  # 4 'others' -> dropped, image kept
    "90,70,20,20,1,10,0,1",  # 5 motor reaching past the bottom-right corner -> clipped to 90..100 x 70..80
    "120,10,5,5,1,2,0,0",  # 6 entirely right of the image -> outside_image
    "5,5,0,10,1,3,0,0",  # 7 zero width -> zero_size
    "10,10,20,30,1,1,0,0",  # 8 exact duplicate of row 1 -> duplicate
    "30,40,8,6,1,9,0,0,",  # 9 bus, trailing comma (some VisDrone files have it) -> class 8
    "60,50,10,10,0,4,0,0",  # 10 score 0 -> ignored region although it has a category
    "",  # blank line: not a row
]
A_LABELS = [  # hand-computed: xc = (x + w/2) / W, yc = (y + h/2) / H, w / W, h / H
    "0 0.200000 0.312500 0.200000 0.375000",
    "3 0.550000 0.312500 0.100000 0.125000",
    "9 0.950000 0.937500 0.100000 0.125000",
    "8 0.340000 0.537500 0.080000 0.075000",
]


def _image(path: Path, seed: int) -> None:
    """A smooth random image (smooth so that JPEG re-encoding barely changes it)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (4, 5, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR))


def _ann(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A VisDrone2019-DET tree with train (a, b, c-without-annotation, d-annotation-without-image), val, test-dev."""
    src = tmp_path / "src"
    train = src / "VisDrone2019-DET-train"
    _image(train / "images" / "a.jpg", 0)
    _ann(train / "annotations" / "a.txt", A_ROWS)
    _image(train / "images" / "b.jpg", 1)
    _ann(train / "annotations" / "b.txt", ["1,1,5,5,1,11,0,0"])  # only 'others': ultralytics would lose b.jpg
    _image(train / "images" / "c.jpg", 2)  # no annotation file
    _ann(train / "annotations" / "d.txt", ["1,1,5,5,1,1,0,0"])  # no image
    _image(src / "VisDrone2019-DET-val" / "images" / "v.jpg", 3)
    _ann(src / "VisDrone2019-DET-val" / "annotations" / "v.txt", ["0,0,100,80,1,5,0,0"])
    _image(src / "VisDrone2019-DET-test-dev" / "images" / "t.jpg", 4)
    _ann(src / "VisDrone2019-DET-test-dev" / "annotations" / "t.txt", ["25,20,50,40,1,9,0,0"])
    return src


def _labels(out: Path, split: str, stem: str) -> list[str]:
    return (out / "labels" / split / f"{stem}.txt").read_text().splitlines()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_class_names_match_ultralytics_and_visdrone_ids() -> None:
    from ultralytics.utils import ROOT, YAML

    ours = vd.class_names()
    theirs = YAML.load(ROOT / "cfg" / "datasets" / "VisDrone.yaml")["names"]
    assert list(ours) == [theirs[i] for i in range(10)]
    assert list(ours) == list(vd.VISDRONE_CATEGORIES[1:11])  # class index = category id - 1
    template = YAML.load(Path(__file__).parents[1] / "cfg" / "datasets" / "VisDrone-fine.yaml")
    assert [template["names"][i] for i in range(10)] == list(ours)


def test_labels_line_by_line(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    s = vd.convert_visdrone(source, out)
    assert _labels(out, "train", "a") == A_LABELS
    assert _labels(out, "train", "b") == []  # 'others' dropped, image kept as background
    assert _labels(out, "val", "v") == ["4 0.500000 0.500000 1.000000 1.000000"]
    assert _labels(out, "test", "t") == ["8 0.500000 0.500000 0.500000 0.500000"]
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == ["a.jpg", "b.jpg"]
    assert all((out / "images" / "train" / n).is_symlink() for n in ("a.jpg", "b.jpg"))

    t = s["train"]
    assert (t.images, t.empty_images, t.images_with_others) == (2, 1, 2)
    assert t.images_without_annotations == ["c.jpg"] and t.annotations_without_image == ["d.txt"]
    assert t.lines == 11
    assert dict(t.boxes) == {0: 1, 3: 1, 9: 1, 8: 1}
    assert dict(t.dropped) == {"ignored_region": 2, "others": 2, "outside_image": 1, "zero_size": 1, "duplicate": 1}
    assert t.clipped == 1
    assert (s["val"].images, sum(s["val"].boxes.values()), s["test"].images) == (1, 1, 1)

    text = vd.format_summary(s, vd.class_names())
    assert "c.jpg" in text and "d.txt" in text and "outside_image" in text
    assert "|  | train | val | test |" in text and "|   outside_image | 1 | 0 | 0 |" in text


def test_ultralytics_label_check_keeps_every_image(source: Path, tmp_path: Path) -> None:
    """Our labels pass ultralytics' own check; its converter's class 10 for 'others' fails it and loses the image."""
    from ultralytics.data.utils import verify_image_label

    out = tmp_path / "out"
    vd.convert_visdrone(source, out)
    for stem in ("a", "b"):
        im, lb = out / "images" / "train" / f"{stem}.jpg", out / "labels" / "train" / f"{stem}.txt"
        result = verify_image_label((str(im), str(lb), "", False, 10, 0, 0, False))
        assert result[8] == 0, result[9]  # nc = corrupt count
    bad = tmp_path / "labels" / "b.txt"  # what ultralytics' VisDrone.yaml writes for b's 'others' row
    bad.parent.mkdir()
    bad.write_text("10 0.035000 0.043750 0.050000 0.062500\n")
    result = verify_image_label((str(out / "images" / "train" / "b.jpg"), str(bad), "", False, 10, 0, 0, False))
    assert result[8] == 1 and "exceeds dataset class count" in result[9]


def test_coco_json_and_data_yaml(source: Path, tmp_path: Path) -> None:
    from ultralytics.utils import YAML

    out = tmp_path / "out"
    vd.convert_visdrone(source, out)
    gt = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in gt["images"]] == [
        (1, "a.jpg", W, H),
        (2, "b.jpg", W, H),
    ]
    assert [(a["image_id"], a["category_id"], a["bbox"], a["area"]) for a in gt["annotations"]] == [
        (1, 1, [10, 10, 20, 30], 600),
        (1, 4, [50, 20, 10, 10], 100),
        (1, 10, [90, 70, 10, 10], 100),  # clipped, like the label
        (1, 9, [30, 40, 8, 6], 48),
    ]
    assert [c["id"] for c in gt["categories"]] == list(range(1, 11))
    data = YAML.load(out / vd.YAML_NAME)
    assert data["path"] == str(out.resolve()) and Path(data["path"]).is_absolute()
    assert (data["train"], data["val"], data["test"]) == ("images/train", "images/val", "images/test")
    assert [data["names"][i] for i in range(10)] == list(vd.class_names())


def test_idempotent_stale_files_and_copy_mode(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    vd.convert_visdrone(source, out)
    labels = {p.name: p.read_text() for p in (out / "labels" / "train").glob("*.txt")}
    (out / "labels" / "train" / "old.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # from an earlier, different run
    _image(out / "images" / "train" / "old.jpg", 9)
    (out / "labels" / "train.cache").write_text("stale")
    s = vd.convert_visdrone(source, out)
    assert (s["train"].unchanged, s["train"].linked, s["train"].stale_removed) == (2, 0, 2)
    assert {p.name: p.read_text() for p in (out / "labels" / "train").glob("*.txt")} == labels
    assert not (out / "labels" / "train.cache").exists()

    before = _sha(source / "VisDrone2019-DET-train" / "images" / "a.jpg")
    s = vd.convert_visdrone(source, out, link=False)  # links become copies, the source is not touched
    assert s["train"].copied == 2
    dst = out / "images" / "train" / "a.jpg"
    assert not dst.is_symlink() and _sha(dst) == before
    assert vd.convert_visdrone(source, out, link=False)["train"].unchanged == 2


def test_fill_ignored_regions(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    src_a = source / "VisDrone2019-DET-train" / "images" / "a.jpg"
    before = _sha(src_a)
    vd.convert_visdrone(source, out)  # links first: filling must not write through them into the source
    s = vd.convert_visdrone(source, out, fill_ignored=True)
    assert s["train"].filled == 1  # a.jpg has ignored regions, b.jpg has none and stays a link
    assert _sha(src_a) == before
    dst = out / "images" / "train" / "a.jpg"
    assert not dst.is_symlink() and (out / "images" / "train" / "b.jpg").is_symlink()
    original, filled = cv2.imread(str(src_a)).astype(int), cv2.imread(str(dst)).astype(int)
    mean = original.reshape(-1, 3).mean(0)
    for x1, y1, x2, y2 in [(0, 60, 30, 80), (60, 50, 70, 60)]:  # rows 3 and 10, clipped
        region = filled[y1:y2, x1:x2].reshape(-1, 3)
        assert np.abs(region.mean(0) - mean).max() < 3  # flat mean colour, up to JPEG re-encoding
        assert region.std(0).max() < 6
    assert np.abs(filled[0:40, 30:100] - original[0:40, 30:100]).mean() < 2  # the rest is the same image
    assert _labels(out, "train", "a") == A_LABELS


@pytest.mark.parametrize(
    "row, problem",
    [
        ("1,2,3", "expected 8 comma-separated fields, got 3"),
        ("1,2,3,4,1,x,0,0", "fields must be integers"),
        ("1,2,3,4,1,12,0,0", "category 12 is outside 0..11"),
        ("1,2,3,4,0.5,1,0,0", "fields must be integers"),
    ],
)
def test_malformed_line_stops_with_file_and_line(source: Path, tmp_path: Path, row: str, problem: str) -> None:
    ann = source / "VisDrone2019-DET-val" / "annotations" / "v.txt"
    ann.write_text("0,0,100,80,1,5,0,0\n\n" + row + "\n")  # blank line 2 still counts for the line number
    out = tmp_path / "out"
    with pytest.raises(vd.VisDroneFormatError, match=problem) as e:
        vd.convert_visdrone(source, out)
    assert str(e.value).startswith(f"{ann}:3: ")
    assert not out.exists()  # everything is parsed before anything is written


def test_cli(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ultralytics.utils import YAML

    out = tmp_path / "out"
    argv = [f"source={source}", f"out={out}", "splits=train,val", "link=false", "coco_json=false"]
    assert run_subcommand("visdrone", argv) == 0
    text = capsys.readouterr().out
    assert "images are copies" in text and "zero_size" in text and str(out.resolve() / vd.YAML_NAME) in text
    assert not (out / "annotations").exists() and not (out / "images" / "test").exists()
    assert "test" not in YAML.load(out / vd.YAML_NAME)

    (source / "VisDrone2019-DET-train" / "annotations" / "a.txt").write_text("1,2,3\n")
    assert run_subcommand("visdrone", [f"source={source}", f"out={tmp_path / 'o2'}"]) == 1
    assert f"{source}/VisDrone2019-DET-train/annotations/a.txt:1:" in capsys.readouterr().err
    broken = source / "VisDrone2019-DET-val" / "images" / "v.jpg"
    broken.write_bytes(b"not a jpeg")
    assert run_subcommand("visdrone", [f"source={source}", f"out={tmp_path / 'o3'}", "splits=val"]) == 1
    assert f"{broken}: cannot read the image" in capsys.readouterr().err
    _image(broken.with_suffix(".png"), 5)  # v.jpg and v.png would share labels/val/v.txt
    assert run_subcommand("visdrone", [f"source={source}", f"out={tmp_path / 'o3'}", "splits=val"]) == 1
    assert re.search(r"share a file stem.*'v.jpg', 'v.png'", capsys.readouterr().err)
    assert run_subcommand("visdrone", [f"source={source}"]) == 2
    assert "missing required argument(s): out=..." in capsys.readouterr().err
    assert run_subcommand("visdrone", [f"source={source}", f"out={out}", "splits=train,bogus"]) == 1
    assert "splits must be a comma-separated subset of train,val,test, got train,bogus" in capsys.readouterr().err


def test_missing_test_split_converts_the_others(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Most users download train and val only: those are converted, the absent split is named, and the data YAML
    lists what was converted; asking for the absent split explicitly is still an error."""
    from ultralytics.utils import YAML

    shutil.rmtree(source / "VisDrone2019-DET-test-dev")
    out = tmp_path / "out"
    assert run_subcommand("visdrone", [f"source={source}", f"out={out}", "coco_json=false"]) == 0
    text = capsys.readouterr().out
    assert "not converted: test (VisDrone2019-DET-test-dev)" in text
    data = YAML.load(out / vd.YAML_NAME)
    assert (data.get("train"), data.get("val"), "test" in data) == ("images/train", "images/val", False)
    assert run_subcommand("visdrone", [f"source={source}", f"out={tmp_path / 'o2'}", "splits=train,test"]) == 1
    assert "convert the others with splits=train" in capsys.readouterr().err


@pytest.mark.slow
def test_converted_set_trains_one_epoch(source: Path, tmp_path: Path) -> None:
    """The converted set loads and trains with unmodified ultralytics (subprocess, CPU, offline)."""
    out = tmp_path / "out"
    vd.convert_visdrone(source, out)
    env = {
        **os.environ,
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "False",
        "YOLO_CONFIG_DIR": str(tmp_path / "cfg"),
        "FINE_YOLO_HOOK": "0",
    }
    args = [
        "train",
        "model=yolov8n.yaml",
        f"data={out / vd.YAML_NAME}",
        "epochs=1",
        "imgsz=64",
        "batch=2",
        "workers=0",
        "device=cpu",
        "plots=False",
        "save_json=True",  # the final val writes predictions.json: checks coco-eval on real ultralytics output
        f"project={tmp_path / 'runs'}",
        "name=t",
        "exist_ok=True",
    ]
    entry = "import sys; from ultralytics.cfg import entrypoint; sys.argv = ['yolo', *sys.argv[1:]]; entrypoint()"
    r = subprocess.run([sys.executable, "-c", entry, *args], env=env, cwd=tmp_path, capture_output=True, text=True)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert (tmp_path / "runs" / "t" / "weights" / "last.pt").is_file(), log[-3000:]
    # ultralytics found both train images (b.jpg is a background image, not a corrupt one) and no corrupt label.
    assert "2 images, 1 backgrounds, 0 corrupt" in log, log[-3000:]

    # Its predictions.json (image_id = stem string, category_id = class + 1) evaluates against the converter's GT.
    from fine_yolo.eval.coco import AP_KEYS, evaluate

    pred, gt = tmp_path / "runs" / "t" / "predictions.json", out / "annotations" / "instances_val.json"
    assert pred.is_file(), log[-3000:]
    result = evaluate(pred, gt)
    assert (result["image_ids"], result["category_ids"], result["gt_images_with_detections"]) == ("file_name", "ids", 1)
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        return  # the agreement itself is tested in test_coco_eval.py, which says why it skips
    # The file's stem ids are not GT ids: faster-coco-eval (like bare pycocotools) rejects it as it is, so it gets
    # the detections re-keyed by file name, which is what coco-eval does internally.
    anno = COCO(str(gt))
    ids = {im["file_name"]: im["id"] for im in anno.dataset["images"]}
    rekeyed = [{**d, "image_id": ids[d["file_name"]]} for d in json.loads(pred.read_text())]
    val = COCOeval_faster(anno, anno.loadRes(rekeyed), iouType="bbox", print_function=lambda *a: None)
    val.evaluate()
    val.accumulate()
    val.summarize()
    theirs = dict(zip(AP_KEYS, val.stats[:6]))
    for k in AP_KEYS:
        assert (result["metrics"][k] if result["metrics"][k] is not None else -1) == pytest.approx(theirs[k], abs=1e-3)
