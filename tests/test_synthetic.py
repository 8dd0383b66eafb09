"""The embedded fine-synth dataset: deterministic, valid YOLO labels, and the context rule it claims really holds."""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from fine_yolo.cli import run_subcommand
from fine_yolo.data import synthetic
from fine_yolo.data.synthetic import CLASS_NAMES, DatasetMismatchError, generate, render

YAML_FILE = Path(__file__).resolve().parents[1] / "cfg" / "datasets" / "fine-synth.yaml"

# Independent of the generator's tables: the colour (BGR) a context region has on average, as the module docstring
# describes it -- blue water, grey road, light-grey apron, green forest. Each labelled box must sit in the context of
# its class, judged from pixels only.
PROTOTYPES = {"water": (150, 100, 40), "road": (80, 80, 84), "apron": (158, 160, 156), "forest": (45, 100, 55)}
CLASS_CONTEXT = {0: "water", 1: "road", 2: "apron"}  # boat, car, plane

N_SAMPLE = 60  # rendered in memory for the statistical tests (about a second)


@pytest.fixture(scope="module")
def sample() -> list[tuple[np.ndarray, np.ndarray, dict]]:
    return [render(0, "train", i) for i in range(N_SAMPLE)]


def _pixel_box(row: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """Inclusive pixel box (x0, y0, x1, y1) of a normalised YOLO row."""
    _, cx, cy, w, h = row
    x0, y0 = round((cx - w / 2) * size), round((cy - h / 2) * size)
    return x0, y0, x0 + round(w * size) - 1, y0 + round(h * size) - 1


def _context_ring(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Pixels (n, 3) of the context window around a box, minus the box and its shadow pad."""
    x0, y0, x1, y1 = box
    cy, cx = (y0 + y1 + 1) // 2, (x0 + x1 + 1) // 2
    r, p = synthetic.CONTEXT_RADIUS, synthetic.PAD + 1
    keep = np.ones((2 * r + 1, 2 * r + 1), dtype=bool)
    keep[y0 - p - (cy - r) : y1 + p + 1 - (cy - r), x0 - p - (cx - r) : x1 + p + 1 - (cx - r)] = False
    return img[cy - r : cy + r + 1, cx - r : cx + r + 1][keep]


def _nearest_context(pixels: np.ndarray) -> tuple[str, float, float]:
    """(nearest prototype to the median colour, its distance, the runner-up's distance)."""
    med = np.median(pixels.astype(np.float64), axis=0)
    d = sorted((float(np.linalg.norm(med - np.array(c))), name) for name, c in PROTOTYPES.items())
    return d[0][1], d[0][0], d[1][0]


def test_yaml_agrees_with_generator() -> None:
    data = yaml.safe_load(YAML_FILE.read_text())
    assert data["names"] == dict(enumerate(CLASS_NAMES)) == {0: "boat", 1: "car", 2: "plane"}
    assert data["path"] == "fine-synth"  # relative: resolved under ultralytics' datasets_dir
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    assert "from fine_yolo.data.synthetic import generate" in data["download"]
    assert not data["download"].lstrip().startswith(("http", "bash "))  # exec()'d as Python, no network


def test_render_is_deterministic_and_seeded() -> None:
    a_img, a_lab, _ = render(7, "train", 3)
    b_img, b_lab, _ = render(7, "train", 3)
    assert a_img.dtype == np.uint8 and a_img.shape == (256, 256, 3)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    c_img, _, _ = render(8, "train", 3)
    d_img, _, _ = render(7, "val", 3)  # the splits are different draws, never copies
    assert np.mean(a_img != c_img) > 0.5
    assert np.mean(a_img != d_img) > 0.5


def test_generate_is_byte_identical_per_seed(tmp_path: Path) -> None:
    kw = {"n_train": 5, "n_val": 3, "verbose": False}
    a, b = generate(tmp_path / "a", seed=1, **kw), generate(tmp_path / "b", seed=1, **kw)
    c = generate(tmp_path / "c", seed=2, **kw)
    for split, n in (("train", 5), ("val", 3)):
        names = sorted(p.name for p in (a / "labels" / split).iterdir())
        assert names == [f"{split}_{i:05d}.txt" for i in range(n)]
        for name in names:
            assert (a / "labels" / split / name).read_bytes() == (b / "labels" / split / name).read_bytes()
        for i in range(n):
            png = f"images/{split}/{split}_{i:05d}.png"
            img_a = cv2.imread(str(a / png))
            assert np.array_equal(img_a, cv2.imread(str(b / png)))
            assert np.array_equal(img_a, render(1, split, i)[0])  # PNG is lossless: exactly the rendered pixels
            assert not np.array_equal(img_a, cv2.imread(str(c / png)))
    ma, mb, mc = (json.loads((d / "MANIFEST.json").read_text()) for d in (a, b, c))
    assert ma["labels_sha256"] == mb["labels_sha256"] != mc["labels_sha256"]
    assert (a / "MANIFEST.json").read_bytes() == (b / "MANIFEST.json").read_bytes()  # no timestamps in it
    assert (ma["seed"], ma["n_train"], ma["n_val"], ma["imgsz"], ma["names"]) == (1, 5, 3, 256, list(CLASS_NAMES))
    boxes = sum(len((a / "labels/train" / f"train_{i:05d}.txt").read_text().splitlines()) for i in range(5))
    assert ma["counts"]["train"]["boxes"] == boxes == sum(ma["counts"]["train"]["per_class"].values())
    # Image i does not depend on the split sizes: a larger dataset starts with the same images.
    d = generate(tmp_path / "d", seed=1, n_train=7, n_val=1, verbose=False)
    assert (d / "labels/train/train_00004.txt").read_bytes() == (a / "labels/train/train_00004.txt").read_bytes()


def test_labels_are_valid_small_yolo_boxes(sample: list) -> None:
    line = re.compile(r"^[0-2] (0\.\d{6}|1\.000000) (0\.\d{6}|1\.000000) (0\.\d{6}) (0\.\d{6})$")
    per_class = np.zeros(len(CLASS_NAMES), dtype=int)
    empty = 0
    for img, lab, _ in sample:
        size = img.shape[0]
        text = synthetic.format_labels(lab)
        assert all(line.match(x) for x in text.splitlines()), text
        assert len(text.splitlines()) == len(lab)
        empty += len(lab) == 0
        for row in lab:
            cls, cx, cy, w, h = row
            assert float(cls).is_integer() and 0 <= cls < len(CLASS_NAMES)
            assert 0 <= cx - w / 2 and cx + w / 2 <= 1 and 0 <= cy - h / 2 and cy + h / 2 <= 1
            wp, hp = w * size, h * size
            assert wp == round(wp) and hp == round(hp)  # tight integer pixel boxes
            assert 6 <= wp <= 16 and 6 <= hp <= 16  # small objects, as designed
            assert max(wp, hp) <= 1.6 * min(wp, hp)
            per_class[int(cls)] += 1
    assert per_class.min() >= 30  # every class is well represented (about 4 boxes per image)
    assert 0 < empty < N_SAMPLE // 3  # some background-only images, not many


def test_class_is_decided_by_context_not_appearance(sample: list) -> None:
    margins = []
    blob_means = {c: [] for c in range(len(CLASS_NAMES))}
    pad_means = []
    for img, lab, _ in sample:
        for row in lab:
            box = _pixel_box(row, img.shape[0])
            name, d0, d1 = _nearest_context(_context_ring(img, box))
            assert name == CLASS_CONTEXT[int(row[0])], (row, name)
            margins.append(d1 - d0)
            x0, y0, x1, y1 = box
            blob_means[int(row[0])].append(img[y0 : y1 + 1, x0 : x1 + 1].reshape(-1, 3).mean(0))
            p = synthetic.PAD
            pad = img[y0 - p : y1 + p + 1, x0 - p : x1 + p + 1].astype(float)
            pad[p:-p, p:-p] = np.nan
            pad_means.append(np.nanmean(pad))
    assert min(margins) > 20  # unambiguous: the median ring colour is far closer to the right context
    # Locally the classes are indistinguishable: same blob colours, same dark pad around every object.
    means = np.array([np.mean(v, axis=0) for v in blob_means.values()])
    assert np.abs(means - means.mean(0)).max() < 8  # sampling noise ~4; a class-dependent colour would be ~20+
    assert 52 < min(pad_means) and max(pad_means) < 68


def test_clutter_is_unlabelled_and_looks_like_objects(sample: list) -> None:
    decoys = fragments = 0
    for img, lab, meta in sample:
        labelled = {_pixel_box(row, img.shape[0]) for row in lab}
        for box in meta["decoys"]:
            decoys += 1
            assert box not in labelled
            assert _nearest_context(_context_ring(img, box))[0] == "forest"  # where no class exists
            x0, y0, x1, y1 = box
            assert img[y0 : y1 + 1, x0 : x1 + 1].mean() > 150  # a bright blob, like an object
            assert 6 <= x1 - x0 + 1 <= 16 and 6 <= y1 - y0 + 1 <= 16
        for x0, y0, x1, y1 in meta["fragments"]:
            fragments += 1
            assert min(x1 - x0, y1 - y0) + 1 == 2  # a 2 px bar: a partial shape
    assert decoys >= 30 and fragments >= 30


def test_generate_is_idempotent_and_refuses_mismatch(tmp_path: Path) -> None:
    root = generate(tmp_path / "ds", seed=0, n_train=3, n_val=2, verbose=False)
    label = root / "labels/train/train_00000.txt"
    stamp = (label.stat().st_mtime_ns, (root / "MANIFEST.json").stat().st_mtime_ns)
    assert generate(root, seed=0, n_train=3, n_val=2) == root
    assert (label.stat().st_mtime_ns, (root / "MANIFEST.json").stat().st_mtime_ns) == stamp  # nothing rewritten
    with pytest.raises(DatasetMismatchError, match=r"seed=0 n_train=3.*requested seed=5.*overwrite=True"):
        generate(root, seed=5, n_train=3, n_val=2)
    assert json.loads((root / "MANIFEST.json").read_text())["seed"] == 0  # untouched by the refusal
    generate(root, seed=5, n_train=4, n_val=2, overwrite=True, verbose=False)
    manifest = json.loads((root / "MANIFEST.json").read_text())
    assert (manifest["seed"], manifest["n_train"]) == (5, 4)
    assert len(list((root / "images/train").glob("*.png"))) == 4
    # Folders fine-synth did not make are never touched without overwrite=True.
    foreign = tmp_path / "foreign"
    (foreign / "images/train").mkdir(parents=True)
    (foreign / "images/train/mine.jpg").write_bytes(b"x")
    with pytest.raises(DatasetMismatchError, match="not made by fine-synth"):
        generate(foreign, n_train=2, n_val=1)
    assert (foreign / "images/train/mine.jpg").exists()


def test_interrupted_generation_is_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_render, calls = synthetic.render, []

    def failing_render(*args: object, **kwargs: object) -> tuple:
        calls.append(args)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render", failing_render)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, n_train=3, n_val=2, verbose=False)
    # Nothing half-done is visible where ultralytics looks, so it calls generate() again.
    assert not (tmp_path / "MANIFEST.json").exists() and not (tmp_path / "images/val").exists()
    monkeypatch.setattr(synthetic, "render", real_render)
    generate(tmp_path, n_train=3, n_val=2, verbose=False)
    assert len(list((tmp_path / "images/val").glob("*.png"))) == 2
    assert not (tmp_path / synthetic.STAGING).exists()
    assert synthetic.read_manifest(tmp_path)["counts"]["val"]["images"] == 2


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_subcommand("synth", [f"out={tmp_path}", "seed=3", "n_train=3", "n_val=2"]) == 0
    out = capsys.readouterr().out
    m = synthetic.read_manifest(tmp_path)
    per = {n: m["counts"]["train"]["per_class"][n] + m["counts"]["val"]["per_class"][n] for n in CLASS_NAMES}
    assert "3 train + 2 val images (256x256, seed 3)" in out and f"boat={per['boat']}," in out
    # a dataset made with other settings: an error, no rewrite
    assert run_subcommand("synth", [f"out={tmp_path}", "seed=4", "n_train=3", "n_val=2"]) == 1
    assert "overwrite=true" in capsys.readouterr().err
    assert run_subcommand("synth", ["sed=3"]) == 2
    assert "unknown argument 'sed' (known: out, seed, n_train" in capsys.readouterr().err
    assert run_subcommand("synth", [f"out={tmp_path / 'x'}", "n_train=0"]) == 2
    assert "n_train and n_val must be >= 1" in capsys.readouterr().err


def test_ultralytics_check_det_dataset_generates_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ultralytics.data.utils as udu  # its check_font finds conftest's font: no download attempt

    from fine_yolo.glue import register

    register()
    # The shipped download snippet runs verbatim; only its generate() is made small to keep the test fast.
    monkeypatch.setattr(synthetic, "generate", functools.partial(synthetic.generate, n_train=6, n_val=3))
    data = yaml.safe_load(YAML_FILE.read_text())
    root = tmp_path / "fine-synth"
    data["path"] = str(root)  # absolute, instead of ultralytics' datasets_dir
    copy = tmp_path / "fine-synth.yaml"
    copy.write_text(yaml.safe_dump(data, sort_keys=False))

    assert not root.exists()
    info = udu.check_det_dataset(str(copy))
    assert Path(info["path"]) == root
    assert Path(info["train"]) == root / "images/train" and Path(info["val"]) == root / "images/val"
    assert len(list(Path(info["train"]).glob("*.png"))) == 6 and len(list(Path(info["val"]).glob("*.png"))) == 3
    assert info["nc"] == 3 and info["names"] == {0: "boat", 1: "car", 2: "plane"}
    assert synthetic.read_manifest(root)["n_train"] == 6
    # A second check finds the data and does not regenerate it.
    stamp = (root / "MANIFEST.json").stat().st_mtime_ns
    udu.check_det_dataset(str(copy))
    assert (root / "MANIFEST.json").stat().st_mtime_ns == stamp
    shutil.rmtree(root)


def test_unreadable_manifest_is_named_with_its_line(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    (root / "MANIFEST.json").write_text('{\n  "seed": 0,\n  oops\n}')
    with pytest.raises(synthetic.DatasetMismatchError, match=r"MANIFEST\.json:3:3: unreadable manifest"):
        synthetic.generate(root, n_train=2, n_val=1)
    (root / "MANIFEST.json").write_text("[1, 2]")
    with pytest.raises(synthetic.DatasetMismatchError, match="must be a JSON object, not list"):
        synthetic.read_manifest(root)
    assert synthetic.generate(root, n_train=2, n_val=1, overwrite=True) == root  # overwrite replaces it
    assert synthetic.read_manifest(root)["n_train"] == 2
