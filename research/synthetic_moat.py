"""``fine-synth-moat``: a mechanism test for FINE — fine-synth with the deciding context pushed away from the object.

In ``fine-synth`` the class of a blob is readable just outside its 3 px pad: the 41 x 41 window around it is one
context region. Measured on a trained yolov8n (``research/fine_synth_why.py rf``), the backbone's stride-8 feature at
an object's cell already puts 21% of its input-gradient mass in that ring (11-20 px from the centre) and the neck's
P3 output 21%, so the baseline does not need cross-level attention to see the cue, and fine-synth cannot show what
FINE's mechanism adds.

This variant is the same images (same seed, same objects, decoys, fragments, labels; :func:`fine_yolo.data.synthetic
.render`) with one change: around every item (object, decoy and fragment alike, so a moat is no cue to objecthood)
everything within Chebyshev distance ``radius`` of its centre, except the items' own blobs and pads, is repainted with
one neutral "gravel" texture that no context uses. The nearest class-deciding pixels are then at least ``radius`` px
(default 20 = ``CONTEXT_RADIUS``) from the object's centre: beyond where the baseline's P3 features mostly look, and
within reach of P4/P5 context, which FINE's attention brings to P3. It is a test of the mechanism, not a benchmark:
what it shows is whether FINE uses far context better than the baseline's top-down path when that is all there is.

Deterministic like fine-synth: image ``i`` depends only on ``(seed, split, i, imgsz, radius)``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fine_yolo.args import Command, Option
from fine_yolo.data.synthetic import CLASS_NAMES, PAD, SPLITS, format_labels, render
from fine_yolo.errors import FineYoloError

VARIANT = "fine-synth-moat"
VARIANT_VERSION = 1
DEFAULT_RADIUS = 20
MANIFEST = "MANIFEST.json"
_GRAVEL_BGR = (104.0, 112.0, 118.0)


class MoatSettingsError(FineYoloError, ValueError):
    """Settings that cannot make the variant (a radius smaller than an item's pad, too few images)."""

    exit_code = 2


def _item_boxes(meta: dict) -> list[tuple[int, int, int, int]]:
    """Inclusive pixel boxes (x0, y0, x1, y1) of every drawn item: objects, decoys, fragments."""
    return [box for _, _, box in meta["objects"]] + list(meta["decoys"]) + list(meta["fragments"])


def add_moats(image: np.ndarray, meta: dict, radius: int, rng: np.random.Generator) -> np.ndarray:
    """Repaint the ``radius`` window around each item with gravel, keeping every item's blob and pad (a copy)."""
    h, w = image.shape[:2]
    moat = np.zeros((h, w), dtype=bool)
    keep = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in _item_boxes(meta):
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        moat[max(cy - radius, 0) : cy + radius + 1, max(cx - radius, 0) : cx + radius + 1] = True
        keep[max(y0 - PAD, 0) : y1 + PAD + 1, max(x0 - PAD, 0) : x1 + PAD + 1] = True
    paint = moat & ~keep
    grain = rng.random((h, w), dtype=np.float32) - np.float32(0.5)
    gravel = np.stack([np.full((h, w), c, np.float32) + grain * 28 for c in _GRAVEL_BGR], axis=-1)
    out = image.copy()
    out[paint] = np.clip(np.floor(gravel[paint] + 0.5), 0, 255).astype(np.uint8)
    return out


def render_moat(seed: int, split: str, index: int, imgsz: int, radius: int = DEFAULT_RADIUS):
    """``(image, labels, meta)`` of fine-synth image ``index`` with moats (labels and meta are fine-synth's)."""
    image, labels, meta = render(seed, split, index, imgsz)
    rng = np.random.default_rng([int(seed), SPLITS.index(split), int(index), int(imgsz), int(radius), 7919])
    return add_moats(image, meta, radius, rng), labels, meta


def _params(seed: int, n_train: int, n_val: int, imgsz: int, radius: int) -> dict[str, Any]:
    return {"generator": VARIANT, "version": VARIANT_VERSION, "seed": seed, "n_train": n_train, "n_val": n_val,
            "imgsz": imgsz, "radius": radius, "names": list(CLASS_NAMES)}


def generate_moat(root: str | Path, seed: int = 0, n_train: int = 160, n_val: int = 40, imgsz: int = 256,
                  radius: int = DEFAULT_RADIUS) -> Path:
    """Write the variant under ``root`` (images/, labels/, ``fine-synth-moat.yaml``); return the data YAML.

    A ``root`` already holding the same variant (its manifest) is reused as it is; anything else there is replaced.
    """
    import cv2

    if radius <= PAD + 8:
        raise MoatSettingsError(f"radius={radius} must exceed an item's half size plus pad ({PAD + 8} px)")
    if n_train < 1 or n_val < 1:
        raise MoatSettingsError(f"n_train={n_train} and n_val={n_val} must both be at least 1")
    root = Path(root).resolve()
    params = _params(seed, n_train, n_val, imgsz, radius)
    data_yaml = root / f"{VARIANT}.yaml"
    try:
        if json.loads((root / MANIFEST).read_text()) == params and data_yaml.is_file():
            return data_yaml
    except (OSError, ValueError):
        pass
    for sub in ("images", "labels"):
        shutil.rmtree(root / sub, ignore_errors=True)
    with tqdm(total=n_train + n_val, desc=VARIANT, unit="img") as bar:
        for split, n in (("train", n_train), ("val", n_val)):
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image, labels, _ = render_moat(seed, split, i, imgsz, radius)
                name = f"{split}_{i:05d}"
                if not cv2.imwrite(str(root / "images" / split / f"{name}.png"), image):
                    raise OSError(f"could not write {root / 'images' / split / f'{name}.png'}")
                (root / "labels" / split / f"{name}.txt").write_text(format_labels(labels), encoding="ascii")
                bar.update(1)
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASS_NAMES))
    data_yaml.write_text(f"# {VARIANT}: mechanism test, see research/synthetic_moat.py\npath: {root}\n"
                         f"train: images/train\nval: images/val\nnames:\n{names}")
    tmp = root / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(params, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)  # written last: a half-written variant is never reused
    return data_yaml


def _run(args: dict[str, Any], extra: dict[str, Any]) -> int:
    path = generate_moat(args["out"], args["seed"], args["n_train"], args["n_val"], args["imgsz"], args["radius"])
    print(f"{VARIANT}: {args['n_train']} train + {args['n_val']} val images, moat radius {args['radius']} px -> {path}")
    return 0


COMMAND = Command(
    options={
        "out": Option("datasets/fine-synth-moat", "output directory"),
        "seed": Option(0, "fine-synth seed (the same images as fine-synth with this seed, plus moats)"),
        "n_train": Option(160, "training images"),
        "n_val": Option(40, "validation images"),
        "imgsz": Option(256, "image side in px"),
        "radius": Option(DEFAULT_RADIUS, "moat half-width in px: no context pixel nearer than this to an item"),
    },
    run=_run,
    example="python research/synthetic_moat.py out=datasets/fine-synth-moat radius=20",
    description=__doc__.split("\n\n")[1],
)


if __name__ == "__main__":
    import sys

    sys.exit(COMMAND.main(sys.argv[1:], "python research/synthetic_moat.py"))
