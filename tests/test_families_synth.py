"""fine-synth's task labels (polygons, oriented boxes, keypoints, semantic masks) against the pixels they describe, and
the detection output unchanged by them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from matplotlib.path import Path as MplPath

from fine_yolo.cli import run_subcommand
from fine_yolo.data import synthetic
from fine_yolo.data.synthetic import DatasetMismatchError, generate, render, task_label, write_data_yaml
from fine_yolo.data.synthetic_labels import FLIP_IDX, IGNORE, KPT_SHAPE, polygon

N_SAMPLE = 30
BRIGHT = 130  # blobs are >= ~194 in every channel, their shadow pad <= ~70: the midpoint separates them
# sha256 over (relative path, decoded pixels or bytes) of generate(seed=0, n_train=6, n_val=2, imgsz=128), recorded
# with the generator as it was before task labels existed: detection output must never change.
DETECT_GOLDEN = "19bfef86804c473578756c6070f191dc57b23fda81fd88aa2c7159c35776a1d3"


@pytest.fixture(scope="module")
def sample() -> list[tuple[np.ndarray, np.ndarray, dict]]:
    return [render(0, "train", i, 128) for i in range(N_SAMPLE)]


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).tobytes() if p.suffix == ".png" else p.read_bytes())
    return h.hexdigest()


def test_detection_output_is_unchanged(tmp_path):
    generate(tmp_path, seed=0, n_train=6, n_val=2, imgsz=128, verbose=False)
    assert _tree_hash(tmp_path) == DETECT_GOLDEN
    assert "task" not in json.loads((tmp_path / "MANIFEST.json").read_text())


def _blob(img: np.ndarray, box) -> np.ndarray:
    """The blob's own pixels inside its box, read from the image (bright on the dark pad)."""
    x0, y0, x1, y1 = box
    return img[y0 : y1 + 1, x0 : x1 + 1].min(axis=2) > BRIGHT


def _rows(text: str) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in text.splitlines()]


def test_objects_match_the_detection_rows(sample):
    for _, labels, meta in sample:
        assert len(meta["objects"]) == len(labels)
        for (cls, shape, (x0, y0, x1, y1)), row in zip(meta["objects"], labels):
            assert cls == row[0] and shape in (0, 1, 2)
            np.testing.assert_allclose(row[1:], [(x0 + x1 + 1) / 256, (y0 + y1 + 1) / 256, (x1 - x0 + 1) / 128,
                                                 (y1 - y0 + 1) / 128])


def test_polygons_outline_the_blob_and_span_its_box(sample):
    ious, n = [], {4: 0, 8: 0, 16: 0}
    for img, labels, meta in sample:
        rows = _rows(task_label("segment", labels, meta, 128))
        assert len(rows) == len(labels)
        for row, (cls, _, box), det in zip(rows, meta["objects"], labels):
            assert row[0] == cls
            pts = np.array(row[1:]).reshape(-1, 2) * 128
            n[len(pts)] += 1
            # the box ultralytics derives from a polygon (min/max) is the detection box, to label precision
            (xa, ya), (xb, yb) = pts.min(0), pts.max(0)
            np.testing.assert_allclose([(xa + xb) / 256, (ya + yb) / 256, (xb - xa) / 128, (yb - ya) / 128],
                                       det[1:], atol=2e-6)
            x0, y0, x1, y1 = box
            centres = np.stack(np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5), -1)
            inside = MplPath(pts).contains_points(centres.reshape(-1, 2)).reshape(centres.shape[:2])
            blob = _blob(img, box)
            ious.append((inside & blob).sum() / (inside | blob).sum())
    assert min(n.values()) > 0  # all three shapes occur (rectangle 4, rounded 8, ellipse 16 points)
    assert min(ious) > 0.8 and np.mean(ious) > 0.9, (min(ious), np.mean(ious))


def test_rectangle_polygon_is_exact_and_ellipse_points_lie_on_the_ellipse():
    assert polygon(1, (10, 20, 15, 27)).tolist() == [[10, 20], [16, 20], [16, 28], [10, 28]]
    pts = polygon(0, (10, 20, 15, 27))  # centre (13, 24), semi-axes 3, 4
    np.testing.assert_allclose(((pts[:, 0] - 13) / 3) ** 2 + ((pts[:, 1] - 24) / 4) ** 2, 1.0, atol=1e-12)
    assert len(pts) == 16
    rounded = polygon(2, (10, 20, 15, 27))
    assert rounded.tolist()[:3] == [[12, 20], [14, 20], [16, 22]]  # corners cut 2 px along each side


def test_oriented_boxes_are_the_box_corners(sample):
    for _, labels, meta in sample:
        rows = _rows(task_label("obb", labels, meta, 128))
        for row, det in zip(rows, labels):
            _, cx, cy, w, h = det
            assert row[0] == det[0] and len(row) == 9
            corners = np.array(row[1:]).reshape(4, 2)
            expected = [[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2], [cx + w / 2, cy + h / 2],
                        [cx - w / 2, cy + h / 2]]
            np.testing.assert_allclose(corners, expected, atol=2e-6)


def test_keypoints_sit_on_the_blob_outline(sample):
    """Centre, then left/right/top/bottom: each side point has a blob pixel inside it and pad outside it."""
    checked = 0
    for img, labels, meta in sample:
        rows = _rows(task_label("pose", labels, meta, 128))
        for row, det in zip(rows, labels):
            np.testing.assert_allclose(row[:5], det, atol=1e-6)  # cls cx cy w h: the detection row
            kp = np.array(row[5:]).reshape(KPT_SHAPE)
            assert (kp[:, 2] == 2).all()
            (cx, cy), left, right, top, bottom = kp[:, :2] * 128
            gray = img.min(axis=2)
            r, c = int(cy + 1e-3), int(cx + 1e-3)  # the pixel row/column through the centre (labels: 6 decimals)
            xl, xr, yt, yb = (round(v) for v in (left[0], right[0], top[1], bottom[1]))  # pixel edges
            assert gray[r, xl] > BRIGHT > gray[r, xl - 1]
            assert gray[r, xr - 1] > BRIGHT > gray[r, xr]
            assert gray[yt, c] > BRIGHT > gray[yt - 1, c]
            assert gray[yb - 1, c] > BRIGHT > gray[yb, c]
            checked += 1
    assert checked > 50
    assert [FLIP_IDX[i] for i in FLIP_IDX] == list(range(5)) and FLIP_IDX[1:3] == (2, 1)  # left <-> right


def test_semantic_masks_are_the_context_regions_with_items_ignored(sample):
    for _, labels, meta in sample:
        mask = task_label("semantic", labels, meta, 128)
        assert mask.dtype == np.uint8 and mask.shape == (128, 128)
        expected = np.array([synthetic.CONTEXTS.index(c) for c in meta["contexts"]])[meta["regions"]]
        items = [b for _, _, b in meta["objects"]] + meta["decoys"] + meta["fragments"]
        ignored = np.zeros_like(mask, dtype=bool)
        for x0, y0, x1, y1 in items:  # each item and its shadow pad belong to no context
            p = synthetic.PAD
            ignored[y0 - p : y1 + 1 + p, x0 - p : x1 + 1 + p] = True
        assert (mask[ignored] == IGNORE).all()
        assert np.array_equal(mask[~ignored], expected[~ignored])


@pytest.mark.parametrize("task", ["segment", "obb", "pose", "semantic"])
def test_generate_writes_each_task_and_its_yaml(tmp_path, task):
    root = generate(tmp_path / task, seed=0, n_train=3, n_val=2, imgsz=128, task=task, verbose=False)
    manifest = json.loads((root / "MANIFEST.json").read_text())
    assert manifest["task"] == task
    sub, ext = ("masks", ".png") if task == "semantic" else ("labels", ".txt")
    assert sorted(p.name for p in (root / sub / "val").iterdir()) == [f"val_0000{i}{ext}" for i in range(2)]
    # the same images as the detection dataset: only the labels differ
    for i in range(3):
        img = cv2.imread(str(root / "images" / "train" / f"train_{i:05d}.png"))
        assert np.array_equal(img, render(0, "train", i, 128)[0])
    data = yaml.safe_load(write_data_yaml(root, task).read_text())
    assert Path(data["path"]) == root.resolve() and data["train"] == "images/train"
    if task == "semantic":
        assert data["names"] == {0: "water", 1: "road", 2: "apron", 3: "forest"} and data["masks_dir"] == "masks"
        assert sum(manifest["counts"]["train"]["per_class"].values()) + manifest["counts"]["train"][
            "ignored_pixels"] == 3 * 128 * 128
    else:
        assert data["names"] == {0: "boat", 1: "car", 2: "plane"}
    if task == "pose":
        assert data["kpt_shape"] == [5, 3] and data["flip_idx"] == [0, 2, 1, 3, 4]
    with pytest.raises(DatasetMismatchError, match="task=" + task):  # another task in the same folder is refused
        generate(root, seed=0, n_train=3, n_val=2, imgsz=128, verbose=False)


def test_cli_task_option(tmp_path, capsys):
    assert run_subcommand("synth", [f"out={tmp_path}", "n_train=2", "n_val=1", "imgsz=128", "task=pose"]) == 0
    out = capsys.readouterr().out
    assert "pose labels" in out and f"dataset YAML: {tmp_path.resolve() / 'fine-synth-pose.yaml'}" in out
    assert run_subcommand("synth", [f"out={tmp_path / 'x'}", "task=depth"]) == 2
    assert "task=depth' must be one of detect, segment, obb, pose, semantic" in capsys.readouterr().err
