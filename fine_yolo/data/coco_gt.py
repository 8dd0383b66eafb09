"""COCO ground truth of a YOLO-format split, with the image ids ``yolo val save_json=True`` writes for it.

``coco_gt(data, split)`` reads the data YAML through ultralytics (``check_det_dataset``: the same path resolution,
and the same local ``download:`` step, as ``yolo val``), lists the split's images with ultralytics' own
``BaseDataset.get_img_files`` and reads each image's label file (ultralytics' ``img2label_paths``). Output:

* ``images``: ``id`` = ``int(stem)`` when the file stem is numeric, else the stem (``DetectionValidator.pred_to_json``'s
  rule, so predictions match by id as well as by ``file_name``); ``file_name`` = the image's file name; ``width``,
  ``height`` from the header, EXIF orientation applied (ultralytics' ``exif_size``). Images without a label file
  are background images (counted in ``info``).
* ``categories``: ``id`` = class index + 1 (``DetectionValidator.class_map`` for a dataset it does not recognise as
  COCO; COCO's 80->91 ids when the split path ends in ``val2017.txt``/``test-dev2017.txt``, as ultralytics decides),
  ``name`` from the YAML.
* ``annotations``: one box per label row, ``bbox`` = [x, y, w, h] in pixels from the normalised ``cls xc yc w h``
  (a polygon row ``cls x1 y1 x2 y2 ...`` becomes its bounding box, as ``segments2boxes`` does), ``area`` = w*h,
  ``iscrowd`` = 0. Exact duplicate rows are removed as ultralytics removes them (counted in ``info``).
* ``info``: what was converted, from where, and those counts (pycocotools 2.0.9-2.0.10 need an ``info`` field).

ultralytics drops an image whose label file it cannot read, with a warning; here such a row is an error naming
``file:line``: a malformed row (field count, a non-number, a class that is not an integer in 0..nc-1, a coordinate
outside [-0.01, 1.01] (ultralytics' 1% tolerance), a negative size, box and polygon rows mixed), an unreadable
image, and two images of the split sharing an image id. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fine_yolo.errors import FineYoloError

GENERATOR = "fine_yolo.data.coco_gt"


class CocoGtError(FineYoloError, ValueError):
    """A split that cannot be converted; the message names the data YAML, file or ``file:line``."""


def _dataset(data: str | Path, split: str) -> dict:
    from ultralytics.data.utils import check_det_dataset

    try:
        info = check_det_dataset(str(data))
    except Exception as e:  # FileNotFoundError, SyntaxError, TypeError... ultralytics' own message
        raise CocoGtError(f"data {data}: {str(e).strip().splitlines()[0]}") from None
    if not info.get(split):
        splits = [k for k in ("train", "val", "test") if info.get(k)]
        raise CocoGtError(f"data {data}: no '{split}' split (it has {', '.join(splits)})")
    return info


def split_images(data: str | Path, split: str = "val") -> list[Path]:
    """The split's image files, listed exactly as ultralytics lists them for ``yolo val``."""
    return _image_files(_dataset(data, split), data, split)


def _image_files(info: dict, data: str | Path, split: str) -> list[Path]:
    from ultralytics.data.base import BaseDataset

    try:  # get_img_files reads only .prefix and .fraction of the dataset object
        files = BaseDataset.get_img_files(SimpleNamespace(prefix="", fraction=1.0), info[split])
    except FileNotFoundError as e:
        cause = e.__cause__ or e
        raise CocoGtError(f"data {data}: split '{split}': {str(cause).strip().splitlines()[0]}") from None
    return [Path(f) for f in files]


def image_id(path: Path) -> int | str:
    """The id ``yolo val save_json=True`` writes for an image: ``int(stem)`` if the stem is numeric, else the stem."""
    return int(path.stem) if path.stem.isnumeric() else path.stem


def _is_coco(info: dict, split: str) -> bool:
    """``DetectionValidator.init_metrics``' test for COCO (then it writes COCO's 91-id category ids)."""
    val = info.get(split, "")
    ends = (f"{os.sep}val2017.txt", f"{os.sep}test-dev2017.txt")
    return isinstance(val, str) and "coco" in val and val.endswith(ends)


def category_ids(info: dict, split: str) -> list[int]:
    """Category id of class index i, as ``DetectionValidator.init_metrics`` chooses it."""
    from ultralytics.data.converter import coco80_to_coco91_class

    return coco80_to_coco91_class() if _is_coco(info, split) else list(range(1, len(info["names"]) + 1))


def read_labels(label_file: Path, nc: int) -> list[tuple[int, float, float, float, float]]:
    """Rows ``(cls, xc, yc, w, h)`` (normalised) of one YOLO label file; a bad row raises naming ``file:line``."""
    rows: list[tuple[int, float, float, float, float]] = []
    kinds: set[str] = set()
    try:
        text = label_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise CocoGtError(f"{label_file}: cannot read label file ({e})") from None
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label_file}:{n}: {line.strip()!r}"
        if len(fields) == 5:
            kind = "box"
        elif len(fields) > 6 and len(fields) % 2 == 1:
            kind = "polygon"
        else:
            raise CocoGtError(
                f"{where}: expected 'class xc yc w h' (5 fields) or a polygon 'class x1 y1 x2 y2 x3 y3 ...', "
                f"got {len(fields)} fields"
            )
        kinds.add(kind)
        if len(kinds) > 1:
            raise CocoGtError(f"{where}: box and polygon rows mixed in one file (ultralytics rejects the image)")
        try:
            cls_f, *values = (float(v) for v in fields)
        except ValueError:
            raise CocoGtError(f"{where}: not a number") from None
        if not all(math.isfinite(v) for v in (cls_f, *values)):
            raise CocoGtError(f"{where}: not a finite number")
        if cls_f % 1 or not 0 <= cls_f < nc:
            raise CocoGtError(f"{where}: class {fields[0]} is not an integer in 0..{nc - 1}")
        if min(values) < -0.01 or max(values) > 1.01:
            raise CocoGtError(f"{where}: coordinates must be normalised to [0, 1] (1% tolerance)")
        if kind == "polygon":
            xs, ys = values[0::2], values[1::2]
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
            values = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
        elif values[2] < 0 or values[3] < 0:
            raise CocoGtError(f"{where}: negative width or height")
        rows.append((int(cls_f), *values))
    return rows


def coco_gt(data: str | Path, split: str = "val") -> dict:
    """COCO ground-truth dict of ``split`` of the YOLO dataset ``data`` (rules in the module docstring)."""
    from PIL import Image
    from tqdm import tqdm
    from ultralytics.data.utils import exif_size, img2label_paths

    info = _dataset(data, split)
    names = info["names"]
    nc = len(names)
    cat_ids = category_ids(info, split)
    files = _image_files(info, data, split)
    labels = [Path(p) for p in img2label_paths([str(f) for f in files])]
    images, annotations, seen = [], [], {}
    no_label = duplicates = 0
    for im_file, label_file in tqdm(list(zip(files, labels)), desc=f"COCO ground truth ({split})", leave=False):
        iid = image_id(im_file)
        if iid in seen:
            raise CocoGtError(
                f"data {data}: images {seen[iid]} and {im_file} of split '{split}' share image id {iid!r} "
                "(yolo val save_json=True writes the file stem as the id, so their predictions cannot be told apart)"
            )
        seen[iid] = im_file
        try:
            with Image.open(im_file) as im:
                width, height = exif_size(im)
        except OSError as e:
            raise CocoGtError(f"{im_file}: cannot read image ({e})") from None
        images.append({"id": iid, "file_name": im_file.name, "width": width, "height": height})
        if not label_file.is_file():
            no_label += 1
            continue
        rows = read_labels(label_file, nc)
        unique = list(dict.fromkeys(rows))
        duplicates += len(rows) - len(unique)
        for c, xc, yc, w, h in unique:
            box = [(xc - w / 2) * width, (yc - h / 2) * height, w * width, h * height]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": iid,
                    "category_id": cat_ids[c],
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    return {
        "info": {
            "description": f"COCO ground truth of split '{split}' of {data}, converted from its YOLO labels",
            "generator": GENERATOR,
            "data": str(data),
            "split": split,
            "images_without_label_file": no_label,
            "duplicate_rows_removed": duplicates,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cat_ids[i], "name": str(names[i])} for i in range(nc)],
    }


def dataset_gt(data: str | Path, split: str = "val") -> Path | None:
    """The dataset's own COCO ground truth for ``split``, if it ships one not written by this module.

    Looked up where ultralytics and ``fine-yolo visdrone`` put it: ``<path>/annotations/instances_{split}.json``, and
    ``instances_val2017.json`` for COCO's val2017 split.
    """
    info = _dataset(data, split)
    root = Path(info["path"]) / "annotations"
    candidates = [root / f"instances_{split}.json"]
    if _is_coco(info, split):
        candidates.append(root / "instances_val2017.json")
    for path in candidates:
        if path.is_file() and not _written_here(path):
            return path
    return None


def _written_here(path: Path) -> bool:
    """True when ``path`` is a ground truth this module wrote (its ``info.generator``)."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)  # our files start with info; a large foreign file is not parsed whole
    except OSError:
        return False
    return f'"generator": "{GENERATOR}"' in head


def yolo_split_to_coco(data: str | Path, split: str = "val", out: Path | None = None) -> Path:
    """Write :func:`coco_gt` as JSON and return its path.

    ``out`` defaults to ``<dataset path>/annotations/instances_{split}.json`` (where ultralytics and
    ``fine-yolo visdrone`` keep COCO ground truth); a file there that this module did not write (the dataset's own)
    is never overwritten: pass ``out=`` instead.
    """
    gt = coco_gt(data, split)
    if out is None:
        out = Path(_dataset(data, split)["path"]) / "annotations" / f"instances_{split}.json"
        if out.exists() and not _written_here(out):
            raise CocoGtError(f"{out} exists and was not written by {GENERATOR}; pass out= to write elsewhere")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(gt, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out)  # never a half-written ground truth
    return out


def describe(gt: dict) -> str:
    """One line: what :func:`coco_gt` produced."""
    i: dict[str, Any] = gt["info"]
    return (
        f"{len(gt['images'])} images, {len(gt['annotations'])} boxes, {len(gt['categories'])} classes "
        f"({i['images_without_label_file']} images without a label file, {i['duplicate_rows_removed']} duplicate "
        "rows removed)"
    )
