"""``fine-synth``: the embedded procedural dataset on which FINE's claim can be checked in minutes on a CPU.

FINE refines low-level (high-resolution) features with high-level context before fusion, so that *small objects whose
class is decided by their surroundings* are classified correctly and *clutter that looks like an object* is not
detected. This dataset is made of exactly that situation and nothing else:

* **Large context regions.** Each image is split into 2-4 irregular regions (a Voronoi partition with noisy borders),
  each filled with one of four procedural textures: ``water`` (blue, diagonal waves), ``road`` (grainy grey asphalt
  with white lane dashes), ``apron`` (light concrete with a grid of joints) and ``forest`` (blotchy dark green).
* **Small objects that all look the same.** Every object is a bright blob (ellipse, rectangle or rounded rectangle,
  6-16 px a side, random tint and grain) on a dark "shadow" pad, drawn from one distribution whatever its class.
  Within ``CONTEXT_RADIUS`` px of its centre there is only one region, and its class is that region's:
  ``boat`` on water, ``car`` on road, ``plane`` on apron. The pad makes the object's immediate neighbourhood identical
  across classes, so the class is only readable from context further out than the object itself.
* **Clutter.** *Decoys* — the very same blob-on-pad — lie in forest, where no class exists, and are not labelled.
  *Fragments* — a pad with a thin 2 px bar, a partial object — lie in any region and are not labelled either. Road
  dashes and apron joints are further small bright/dark structures. A detector that ignores context therefore either
  confuses the classes or fires on decoys: the false positives FINE is meant to suppress.

Some images have no object at all (only forest, or no object drawn). Everything is written in YOLO format:
``images/{train,val}/*.png`` and ``labels/{train,val}/*.txt`` (``cls cx cy w h``, normalised, 6 decimals, boxes tight
around the blob, not its pad), plus ``MANIFEST.json`` written last.

Determinism: image ``i`` of a split depends only on ``(seed, split, i, imgsz)`` (its own ``numpy.random.Generator``
seeded from those integers), not on how many images are requested. Only PCG64 uniform draws and IEEE-exact arithmetic
(``+ - * /``, ``sqrt``, ``floor``) are used — no ``sin``/``exp``, no Gaussian draws, no OpenCV resampling — so the
pixels are the same on every platform; PNG keeps them lossless.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fine_yolo.args import Command, Option
from fine_yolo.data.synthetic_labels import FLIP_IDX, KPT_SHAPE, obb_line, pose_line, segment_line, semantic_mask
from fine_yolo.errors import FineYoloError

GENERATOR = "fine-synth"
GENERATOR_VERSION = 1  # bump whenever a change alters any pixel or label; manifests of older versions then mismatch

# The class list, in YOLO id order. cfg/datasets/fine-synth.yaml must list the same names (a test checks).
CLASS_NAMES: tuple[str, ...] = ("boat", "car", "plane")

# Context textures, and which class an object takes in each (None: no class lives there, objects are decoys).
CONTEXTS: tuple[str, ...] = ("water", "road", "apron", "forest")
CONTEXT_CLASS: dict[str, int | None] = {"water": 0, "road": 1, "apron": 2, "forest": None}

DEFAULT_N_TRAIN = 160
DEFAULT_N_VAL = 40
DEFAULT_IMGSZ = 256
MIN_IMGSZ = 128  # objects keep their pixel size; below this the regions get too small to hold them

OBJ_MIN, OBJ_MAX = 6, 16  # blob side in px (both sides), whatever imgsz: the objects stay *small*
MAX_ASPECT = 1.6  # blobs are blob-like; fragments (2 px bars) are clearly not
PAD = 3  # px of dark shadow pad around every blob: same local surroundings for every class
CONTEXT_RADIUS = 20  # the (2R+1)^2 window around each item's centre lies in one region only
MIN_SEPARATION = 32  # Chebyshev distance between item centres: no pad reaches into another item's context window

MANIFEST = "MANIFEST.json"
STAGING = ".fine-synth-staging"  # generation happens here and is moved into place at the end
SPLITS: tuple[str, ...] = ("train", "val")
# What generate() can label: boxes (the dataset itself), and from the same images and objects, polygons, oriented
# boxes, keypoints and per-pixel context classes (fine_yolo.data.synthetic_labels). Only "detect" is fine-synth.yaml.
TASKS: tuple[str, ...] = ("detect", "segment", "obb", "pose", "semantic")


# ---------------------------------------------------------------------------------------------------------------------
# Rendering (numpy arithmetic and integer morphology only: the same pixels on every platform)

F32 = np.float32  # pixel arithmetic in float32: half the memory traffic of float64, still IEEE-exact per operation


def _lowfreq(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a (cells+1)^2 uniform grid, bilinearly upsampled (separably, plain arithmetic)."""
    grid = rng.random((cells + 1, cells + 1), dtype=F32)
    gy, gx = np.arange(h, dtype=F32) * F32(cells / h), np.arange(w, dtype=F32) * F32(cells / w)
    iy, ix = gy.astype(np.int64), gx.astype(np.int64)  # gy, gx >= 0: truncation is floor
    fy, fx = (gy - iy.astype(F32))[:, None], gx - ix.astype(F32)
    rows = grid[:, ix] * (1 - fx) + grid[:, ix + 1] * fx  # (cells+1, w): interpolate along x on the coarse rows
    return rows[iy] * (1 - fy) + rows[iy + 1] * fy  # then along y at full resolution


def _triangle(t: np.ndarray) -> np.ndarray:
    """Triangle wave with period 1 in [0, 1] (a sine stand-in that is exact on every platform)."""
    return np.abs(2 * (t - np.floor(t)) - 1)


# Each texture is base colour + a scalar relief field times a tint (BGR): cheap, and enough for four distinct looks.
_BASE = {"water": (150, 100, 40), "road": (80, 80, 84), "apron": (170, 172, 168), "forest": (45, 100, 55)}
_TINT = {"water": (1.0, 0.8, 0.5), "road": (1.0, 1.0, 1.0), "apron": (1.0, 1.0, 1.0), "forest": (0.6, 1.0, 0.6)}


def _relief(kind: str, rng: np.random.Generator, grain: np.ndarray) -> np.ndarray:
    """The (h, w) float32 relief of one context texture over the whole frame (masked to its region later).

    ``grain`` is (h, w) uniform noise in [-0.5, 0.5), shared by all textures of an image (they never overlap).
    """
    h, w = grain.shape
    if kind == "water":  # diagonal waves (a triangle wave), slow swell, fine ripple
        period, slope, phase = F32(rng.uniform(9, 14)), F32(rng.uniform(-0.5, 0.5)), F32(rng.random())
        y, x = np.arange(h, dtype=F32)[:, None], np.arange(w, dtype=F32)[None, :]
        rel = (_triangle((y + slope * x) / period + phase) - 0.5) * 26 + (_lowfreq(rng, h, w, 4) - 0.5) * 30
        rel += grain * 10
    elif kind == "road":  # grainy asphalt with white lane dashes: thin (2 px), bright like an object, never blob-like
        rel = (_lowfreq(rng, h, w, 4) - 0.5) * 14 + grain * 26
        spacing, offset, dash = int(rng.integers(36, 49)), int(rng.integers(0, 36)), int(rng.integers(8, 13))
        yi, xi = np.arange(h)[:, None], np.arange(w)[None, :]
        across, along = (yi, xi) if rng.random() < 0.5 else (xi, yi)
        dashes = (((across + offset) % spacing) < 2) & (((along + offset) % (2 * dash)) < dash)
        rel[dashes] = 132 + grain[dashes] * 12
    elif kind == "apron":  # light concrete, faint stains, a square grid of 1 px dark expansion joints
        rel = -_lowfreq(rng, h, w, 6) * 24 + grain * 12
        pitch, oy, ox = int(rng.integers(24, 33)), int(rng.integers(0, 32)), int(rng.integers(0, 32))
        rel[(np.arange(h) + oy) % pitch == 0] -= 45
        rel[:, (np.arange(w) + ox) % pitch == 0] -= 45
    elif kind == "forest":  # blotchy canopy at two scales plus strong grain: busy, object-like speckle
        rel = (_lowfreq(rng, h, w, 16) - 0.5) * 50 + (_lowfreq(rng, h, w, 6) - 0.5) * 24 + grain * 24
    else:  # pragma: no cover - CONTEXTS is closed
        raise ValueError(kind)
    return rel


def _regions(rng: np.random.Generator, h: int, w: int, k: int) -> np.ndarray:
    """An (h, w) uint8 map of k irregular regions: Voronoi cells of random seeds, borders warped by smooth noise.

    Computed on a half-resolution grid and repeated 2x2 (4x cheaper; 2 px steps vanish in the warped borders).
    """
    hh, hw = (h + 1) // 2, (w + 1) // 2
    y = np.arange(hh, dtype=F32)[:, None]
    x = np.arange(hw, dtype=F32)[None, :]
    seeds = rng.random((k, 2), dtype=F32) * np.array([hh, hw], dtype=F32)
    warp = F32(0.25 * (hh + hw) / 2)  # border wiggle amplitude, a quarter of the image side
    best = np.full((hh, hw), np.inf, dtype=F32)
    labels = np.zeros((hh, hw), dtype=np.uint8)
    for r, (sy, sx) in enumerate(seeds):
        d = np.sqrt((y - sy) ** 2 + (x - sx) ** 2) + (_lowfreq(rng, hh, hw, 3) - 0.5) * warp
        closer = d < best
        best[closer], labels[closer] = d[closer], r
    return labels.repeat(2, axis=0).repeat(2, axis=1)[:h, :w]


def _pure_centres(regions: np.ndarray, radius: int) -> np.ndarray:
    """Flat indices of the pixels whose (2r+1)^2 window lies inside the image and in one region only."""
    import cv2  # scoped: ultralytics' dependency, not needed to import this module

    h, w = regions.shape
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), dtype=np.uint8)
    # Window max == window min <=> one region (exact integer morphology; identical on every platform).
    hi = cv2.dilate(regions, kernel, borderType=cv2.BORDER_REPLICATE)
    lo = cv2.erode(regions, kernel, borderType=cv2.BORDER_REPLICATE)
    pure = hi == lo
    inside = np.zeros_like(pure)
    inside[radius : h - radius, radius : w - radius] = True
    return np.flatnonzero((pure & inside).ravel())


def _blob_mask(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A bool (h, w) mask exactly h x w in extent, and its shape (``synthetic_labels.ELLIPSE``, ``RECTANGLE`` or
    ``ROUNDED``, in that order of the draw): ellipse, rectangle or rounded rectangle, 6-16 px a side."""
    while True:
        bw, bh = (int(v) for v in rng.integers(OBJ_MIN, OBJ_MAX + 1, size=2))
        if max(bw, bh) <= MAX_ASPECT * min(bw, bh):
            break
    yy = np.arange(bh, dtype=np.float64)[:, None] - (bh - 1) / 2
    xx = np.arange(bw, dtype=np.float64)[None, :] - (bw - 1) / 2
    shape = int(rng.integers(3))
    if shape == 0:  # ellipse; semi-axes of half the side keep the extreme rows/columns inside (sides >= 6)
        mask = (xx / (bw / 2)) ** 2 + (yy / (bh / 2)) ** 2 <= 1.0
    elif shape == 1:  # rectangle
        mask = np.ones((bh, bw), dtype=bool)
    else:  # rounded rectangle: corners cut by 2 px diagonals
        cut = (np.abs(xx) - (bw - 1) / 2 + np.abs(yy) - (bh - 1) / 2) >= -1.0
        mask = ~cut
    return mask, shape


def _bar_mask(rng: np.random.Generator) -> np.ndarray:
    """A fragment: a 2 px wide bar 6-14 px long, horizontal or vertical (a partial, non-object shape)."""
    length = int(rng.integers(6, 15))
    return np.ones((2, length), dtype=bool) if rng.random() < 0.5 else np.ones((length, 2), dtype=bool)


def _stamp(img: np.ndarray, rng: np.random.Generator, cy: int, cx: int, mask: np.ndarray) -> tuple[int, int, int, int]:
    """Draw a dark pad and a bright shape centred at (cy, cx); return the shape's box (x0, y0, x1, y1), inclusive."""
    mh, mw = mask.shape
    y0, x0 = cy - mh // 2, cx - mw // 2
    # Pad: a neutral dark "shadow", the same distribution in every context.
    shade = 60.0 + (rng.random() - 0.5) * 12
    py0, px0, py1, px1 = y0 - PAD, x0 - PAD, y0 + mh + PAD, x0 + mw + PAD
    img[py0:py1, px0:px1] = shade + (rng.random((py1 - py0, px1 - px0, 1)) - 0.5) * 8
    # Shape: bright, slightly tinted, with grain; colour independent of the class.
    colour = 200.0 + rng.random(3) * 45
    patch = colour + (rng.random((mh, mw, 1)) - 0.5) * 12
    region = img[y0 : y0 + mh, x0 : x0 + mw]
    region[mask] = patch[mask]
    ys, xs = np.nonzero(mask)
    return x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()), y0 + int(ys.max())


def render(seed: int, split: str, index: int, imgsz: int = DEFAULT_IMGSZ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render one image of the dataset.

    Returns ``(image, labels, meta)``: a uint8 BGR ``(imgsz, imgsz, 3)`` array, a float ``(n, 5)`` array of YOLO rows
    ``cls cx cy w h`` (normalised) and ``meta`` with the region map (``regions``: (H, W) uint8), the context name of
    each region (``contexts``), the unlabelled clutter (``decoys`` and ``fragments``: lists of inclusive pixel boxes
    ``(x0, y0, x1, y1)``), which the tests use to check the dataset's claims, and ``objects``: ``(class, shape, box)``
    for each label row, from which the other tasks' labels are computed (:mod:`fine_yolo.data.synthetic_labels`).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    # One generator per image, from (seed, split, index, imgsz) only: image i does not depend on the split sizes.
    rng = np.random.default_rng([int(seed), SPLITS.index(split), int(index), int(imgsz)])
    h = w = int(imgsz)

    k = int(rng.choice([2, 3, 4], p=[0.35, 0.4, 0.25]))
    kinds = [CONTEXTS[int(i)] for i in rng.permutation(len(CONTEXTS))[:k]]  # distinct contexts per image
    regions = _regions(rng, h, w, k)
    grain = rng.random((h, w), dtype=F32) - F32(0.5)
    relief = np.empty((h, w), dtype=F32)
    for r, kind in enumerate(kinds):
        np.copyto(relief, _relief(kind, rng, grain), where=regions == r)
    # Per channel: base + relief * tint, both looked up by region (np.take on a small table is fast).
    img = np.empty((h, w, 3), dtype=F32)
    for ch in range(3):
        base = np.array([_BASE[c][ch] for c in kinds], dtype=F32)
        tint = np.array([_TINT[c][ch] for c in kinds], dtype=F32)
        img[..., ch] = np.take(base, regions) + relief * np.take(tint, regions)

    # How many of each item this image should get; some images get no object on purpose (pure background).
    n_obj = 0 if rng.random() < 0.1 else int(rng.integers(1, 9))
    n_decoy = int(rng.integers(0, 4))
    n_frag = int(rng.integers(0, 4))

    cand = _pure_centres(regions, CONTEXT_RADIUS)
    placed: list[tuple[int, int]] = []
    rows: list[tuple[int, float, float, float, float]] = []
    decoys: list[tuple[int, int, int, int]] = []
    fragments: list[tuple[int, int, int, int]] = []
    objects: list[tuple[int, int, tuple[int, int, int, int]]] = []  # (class, shape, box) per label row, same order
    for _ in range(300 if len(cand) else 0):  # rejection sampling; a crowded image simply gets fewer items
        if len(rows) >= n_obj and len(decoys) >= n_decoy and len(fragments) >= n_frag:
            break
        j = int(rng.integers(len(cand)))
        cy, cx = divmod(int(cand[j]), w)
        if any(max(abs(cy - py), abs(cx - px)) < MIN_SEPARATION for py, px in placed):
            continue
        cls = CONTEXT_CLASS[kinds[int(regions[cy, cx])]]
        if len(fragments) < n_frag and rng.random() < 0.3:  # fragments in any context; objects/decoys by context
            fragments.append(_stamp(img, rng, cy, cx, _bar_mask(rng)))
        elif cls is None and len(decoys) < n_decoy:
            decoys.append(_stamp(img, rng, cy, cx, _blob_mask(rng)[0]))
        elif cls is not None and len(rows) < n_obj:
            mask, shape = _blob_mask(rng)
            x0, y0, x1, y1 = _stamp(img, rng, cy, cx, mask)
            objects.append((cls, shape, (x0, y0, x1, y1)))
            rows.append((cls, (x0 + x1 + 1) / 2 / w, (y0 + y1 + 1) / 2 / h, (x1 - x0 + 1) / w, (y1 - y0 + 1) / h))
        else:
            continue
        placed.append((cy, cx))

    image = np.clip(np.floor(img + 0.5), 0, 255).astype(np.uint8)
    labels = np.array(rows, dtype=np.float64).reshape(-1, 5)
    meta = {"regions": regions, "contexts": kinds, "decoys": decoys, "fragments": fragments, "objects": objects}
    return image, labels, meta


def format_labels(labels: np.ndarray) -> str:
    """YOLO label file text: one ``cls cx cy w h`` line per box, 6 decimals."""
    return "".join(f"{int(c)} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}\n" for c, x, y, bw, bh in labels)


# ---------------------------------------------------------------------------------------------------------------------
# Writing a dataset directory


class SynthSettingsError(FineYoloError, ValueError):
    """Generator settings that cannot make a dataset (negative seed, too few images, too small images)."""

    exit_code = 2


class DatasetMismatchError(FineYoloError, FileExistsError):
    """The target directory already holds a dataset made with other parameters (or not by fine-synth)."""


def _params(seed: int, n_train: int, n_val: int, imgsz: int, task: str = "detect") -> dict:
    params = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n_train": n_train,
        "n_val": n_val,
        "imgsz": imgsz,
        "names": list(task_names(task)),
    }
    if task != "detect":  # a detection manifest stays byte-identical to the one written before tasks existed
        params["task"] = task
    return params


def task_names(task: str) -> tuple[str, ...]:
    """Class names of a task's labels: the object classes, or for ``semantic`` the four contexts."""
    return CONTEXTS if task == "semantic" else CLASS_NAMES


def _label_kind(task: str) -> tuple[str, str]:
    """(directory, file suffix) of a task's labels: ``labels``/``.txt``, or ``masks``/``.png`` for semantic."""
    return ("masks", ".png") if task == "semantic" else ("labels", ".txt")


def task_label(task: str, labels: np.ndarray, meta: dict, imgsz: int) -> str | np.ndarray:
    """One image's label for ``task``: the label file's text, or for ``semantic`` the (H, W) uint8 class mask."""
    if task == "detect":
        return format_labels(labels)
    if task == "semantic":
        items = [box for _, _, box in meta["objects"]] + meta["decoys"] + meta["fragments"]
        region_class = [CONTEXTS.index(c) for c in meta["contexts"]]
        return semantic_mask(meta["regions"], region_class, items, PAD)
    line = {"segment": lambda c, shape, box: segment_line(c, shape, box, imgsz),
            "obb": lambda c, shape, box: obb_line(c, box, imgsz),
            "pose": lambda c, shape, box: pose_line(c, box, imgsz)}[task]
    return "".join(line(c, shape, box) for c, shape, box in meta["objects"])


def _describe(p: dict) -> str:
    keys = ("seed", "n_train", "n_val", "imgsz") + (("task",) if p.get("task") else ())
    return " ".join(f"{k}={p.get(k)}" for k in keys) + f" ({p.get('generator')} v{p.get('version')})"


def _complete(root: Path, params: dict) -> bool:
    """True if every image and label file the manifest promises is present (a cheap listing, no hashing)."""
    for split, n in (("train", params["n_train"]), ("val", params["n_val"])):
        for sub, ext in (("images", ".png"), _label_kind(params.get("task", "detect"))):
            d = root / sub / split
            if not d.is_dir() or sum(1 for f in d.iterdir() if f.suffix == ext) != n:
                return False
    return True


_OUTPUT_DIRS = ("images", "labels", "masks")


def _remove_outputs(root: Path) -> None:
    """Delete what a generation writes (and ultralytics' label caches), leaving anything else in root alone."""
    for sub in _OUTPUT_DIRS:
        for split in SPLITS:
            shutil.rmtree(root / sub / split, ignore_errors=True)
            if sub != "images":  # ultralytics caches a split as labels/<split>.cache (masks/<split>.cache)
                (root / sub / f"{split}.cache").unlink(missing_ok=True)
        if (root / sub).is_dir() and not any((root / sub).iterdir()):
            (root / sub).rmdir()
    shutil.rmtree(root / STAGING, ignore_errors=True)
    (root / MANIFEST).unlink(missing_ok=True)


def read_manifest(root: str | Path) -> dict | None:
    """The parsed ``MANIFEST.json`` of a generated dataset, or None if there is none.

    Raises:
        DatasetMismatchError: the manifest exists but is not a JSON object (named with the parser's line/column).
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetMismatchError(f"{path}:{e.lineno}:{e.colno}: unreadable manifest ({e.msg}); delete it or pass "
                                   "overwrite=True to regenerate the dataset") from None
    if not isinstance(manifest, dict):
        raise DatasetMismatchError(f"{path}: a manifest must be a JSON object, not {type(manifest).__name__}")
    return manifest



def generate(
    root: str | Path,
    seed: int = 0,
    n_train: int = DEFAULT_N_TRAIN,
    n_val: int = DEFAULT_N_VAL,
    imgsz: int = DEFAULT_IMGSZ,
    overwrite: bool = False,
    verbose: bool = True,
    task: str = "detect",
) -> Path:
    """Write the dataset under ``root`` (``images/``, ``labels/``, ``MANIFEST.json``) and return ``root`` as a Path.

    ``task`` picks the labels written for the same images (:data:`TASKS`): boxes (``detect``, the default: exactly
    the files written before tasks existed), polygons (``segment``), oriented boxes (``obb``), boxes with 5 keypoints
    (``pose``), or ``masks/`` PNGs of context classes (``semantic``); :func:`write_data_yaml` writes the dataset YAML
    ultralytics trains from.

    Idempotent: if ``root`` already holds a complete dataset with the same parameters, nothing is written. A dataset
    with other parameters, or ``images/{train,val}``/``labels/{train,val}`` folders that fine-synth did not make, raise
    :class:`DatasetMismatchError` unless ``overwrite=True``. Generation goes to a staging folder that is moved into
    place at the end (val images last, because ultralytics regenerates when they are missing) and the manifest is
    written after that, so an interrupted run is detected and redone on the next call.
    """
    root = Path(root)
    seed, n_train, n_val, imgsz = int(seed), int(n_train), int(n_val), int(imgsz)
    if seed < 0:
        raise SynthSettingsError(f"seed must be >= 0, not {seed}")
    if n_train < 1 or n_val < 1:
        raise SynthSettingsError(f"n_train and n_val must be >= 1, not {n_train} and {n_val}")
    if imgsz < MIN_IMGSZ:
        raise SynthSettingsError(f"imgsz must be >= {MIN_IMGSZ} (objects are {OBJ_MIN}-{OBJ_MAX} px), not {imgsz}")
    if task not in TASKS:
        raise SynthSettingsError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    params = _params(seed, n_train, n_val, imgsz, task)
    label_dir, label_ext = _label_kind(task)

    manifest = None if overwrite else read_manifest(root)
    if manifest is not None:
        # "task" is compared even when absent from params (detection): a segment set is not the detection set.
        found = {key: manifest.get(key) for key in (*params, "task")}
        if found != {"task": None, **params}:
            raise DatasetMismatchError(
                f"{root} already holds a dataset generated with {_describe(found)}; requested {_describe(params)}. "
                "Pass overwrite=True (CLI: overwrite=true) to replace it, or choose another directory."
            )
        if _complete(root, params):
            return root
    ours = manifest is not None or (root / STAGING).exists()  # a manifest or a staging folder: our own leftovers
    foreign = [root / sub / split for sub in _OUTPUT_DIRS for split in SPLITS if (root / sub / split).exists()]
    if foreign and not ours and not overwrite:
        raise DatasetMismatchError(
            f"{root} already has {', '.join(str(p.relative_to(root)) for p in foreign)} not made by {GENERATOR} "
            "(no manifest); refusing to touch them. Pass overwrite=True to replace them, or choose another directory."
        )
    _remove_outputs(root)

    stage = root / STAGING
    counts: dict[str, dict] = {}
    digest = hashlib.sha256()
    total = n_train + n_val
    import cv2  # scoped: ultralytics' dependency, not needed to import this module

    with tqdm(total=total, desc=f"{GENERATOR}: generating {total} images", disable=not verbose, leave=False) as bar:
        for split, n in (("train", n_train), ("val", n_val)):
            (stage / "images" / split).mkdir(parents=True, exist_ok=True)
            (stage / label_dir / split).mkdir(parents=True, exist_ok=True)
            per_class = [0] * len(task_names(task))
            empty = 0
            for i in range(n):
                image, labels, meta = render(seed, split, i, imgsz)
                name = f"{split}_{i:05d}"
                # PNG: lossless, so the decoded pixels are exactly the rendered ones; level 1 is fast and small enough.
                png = stage / "images" / split / f"{name}.png"
                if not cv2.imwrite(str(png), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                    raise OSError(f"could not write {png}")
                label = task_label(task, labels, meta, imgsz)
                if task == "semantic":  # per-pixel classes; counts are pixels
                    mask_png = stage / label_dir / split / f"{name}{label_ext}"
                    if not cv2.imwrite(str(mask_png), label, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                        raise OSError(f"could not write {mask_png}")
                    digest.update(f"{split}/{name}{label_ext}\n".encode("ascii") + label.tobytes())
                    per_class = [a + b for a, b in zip(per_class, np.bincount(label.ravel(), minlength=256)[:4])]
                    empty += int(np.count_nonzero(label == 255))
                else:
                    (stage / label_dir / split / f"{name}.txt").write_text(label, encoding="ascii", newline="\n")
                    digest.update(f"{split}/{name}.txt\n{label}".encode("ascii"))
                    for c in labels[:, 0].astype(int):
                        per_class[c] += 1
                    empty += len(labels) == 0
                bar.update(1)
            if task == "semantic":
                counts[split] = {"images": n, "ignored_pixels": empty,
                                 "per_class": dict(zip(task_names(task), (int(c) for c in per_class)))}
            else:
                counts[split] = {
                    "images": n,
                    "boxes": sum(per_class),
                    "empty_images": empty,
                    "per_class": dict(zip(CLASS_NAMES, per_class)),
                }

    # Move into place: labels first, val images last (their absence is ultralytics' cue to call us again).
    for sub, split in ((label_dir, "train"), (label_dir, "val"), ("images", "train"), ("images", "val")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        os.replace(stage / sub / split, root / sub / split)
    manifest = {
        **params,
        "counts": counts,
        "labels_sha256": digest.hexdigest(),
        "contexts": {c: (CLASS_NAMES[k] if k is not None else None) for c, k in CONTEXT_CLASS.items()},
    }  # no timestamps: the same parameters give a byte-identical manifest
    tmp = root / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)  # the manifest appears atomically, and only once everything else is in place
    shutil.rmtree(stage, ignore_errors=True)
    return root


def summary(root: str | Path) -> str:
    """One line describing a generated dataset: images, boxes per class, where."""
    m = read_manifest(root)
    if m is None:
        return f"{root}: no {GENERATOR} manifest"
    per = {name: sum(m["counts"][s]["per_class"][name] for s in SPLITS) for name in m["names"]}
    boxes = ", ".join(f"{name}={n}" for name, n in per.items())
    task = m.get("task", "detect")
    what = {"detect": "boxes", "semantic": "pixels"}.get(task, f"{task} labels")
    return (
        f"{GENERATOR}: {m['n_train']} train + {m['n_val']} val images ({m['imgsz']}x{m['imgsz']}, seed {m['seed']}), "
        f"{what} {boxes} -> {Path(root)}"
    )


def write_data_yaml(root: str | Path, task: str) -> Path:
    """Write ``root/fine-synth-<task>.yaml``, the dataset YAML ultralytics trains ``task`` from; return its path.

    ``path`` is ``root`` made absolute; pose adds ``kpt_shape``/``flip_idx``, semantic ``masks_dir``.
    """
    import yaml

    if task not in TASKS:
        raise SynthSettingsError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    root = Path(root).resolve()
    data: dict = {"path": str(root), "train": "images/train", "val": "images/val",
                  "names": dict(enumerate(task_names(task)))}
    if task == "pose":
        data.update(kpt_shape=list(KPT_SHAPE), flip_idx=list(FLIP_IDX))
    if task == "semantic":
        data["masks_dir"] = "masks"
    path = root / f"{GENERATOR}-{task}.yaml"
    header = f"# {GENERATOR} with {task} labels, written by fine_yolo.data.synthetic.write_data_yaml\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None), encoding="utf-8")
    return path


def default_root() -> Path:
    """Where ``data=fine-synth.yaml`` looks: ``fine-synth`` under ultralytics' DATASETS_DIR."""
    from ultralytics.utils import DATASETS_DIR  # scoped: importing ultralytics is slow

    return Path(DATASETS_DIR) / "fine-synth"


def _run(args: dict, extra: dict) -> int:
    task = str(args["task"])
    default = default_root() if task == "detect" else default_root().with_name(f"{GENERATOR}-{task}")
    out = Path(str(args["out"])) if args["out"] else default
    t0 = time.perf_counter()
    generate(out, seed=args["seed"], n_train=args["n_train"], n_val=args["n_val"], imgsz=args["imgsz"],
             overwrite=args["overwrite"], task=task)
    print(f"{summary(out)} ({time.perf_counter() - t0:.1f}s)")
    if task != "detect":  # detection trains from the packaged fine-synth.yaml
        print(f"dataset YAML: {write_data_yaml(out, task)}")
    return 0


COMMAND = Command(
    options={
        "out": Option("", "output directory (default: fine-synth or fine-synth-<task> in ultralytics' datasets_dir)"),
        "seed": Option(0, "generator seed"),
        "n_train": Option(DEFAULT_N_TRAIN, "train images"),
        "n_val": Option(DEFAULT_N_VAL, "val images"),
        "imgsz": Option(DEFAULT_IMGSZ, "image side in pixels"),
        "overwrite": Option(False, "replace an existing dataset made with other settings"),
        "task": Option("detect", "labels to write (segment/obb/pose/semantic also write DIR/fine-synth-<task>.yaml)",
                       choices=TASKS),
    },
    run=_run,
    example="fine-yolo synth out=datasets/fine-synth-800 seed=1 n_train=800",
)
