"""Convert an already-downloaded VisDrone2019-DET tree to the YOLO layout, offline.

``fine-yolo visdrone source=DIR out=DIR`` reads ``DIR/VisDrone2019-DET-{train,val,test-dev}/{images,annotations}``
and writes::

    out/images/{train,val,test}/*.jpg      symlinks into the source tree (link=true, default) or copies (link=false)
    out/labels/{train,val,test}/*.txt      one ``cls xc yc w h`` row per box, normalised
    out/annotations/instances_{split}.json COCO ground truth of the same boxes, for ``fine-yolo coco-eval``
    out/VisDrone-fine.yaml                 data YAML with an absolute ``path:``

VisDrone annotation rows are ``x,y,w,h,score,category,truncation,occlusion`` (pixels, top-left corner). What
happens to each row, and why:

* score 0 or category 0 ("ignored regions"): not a label. With ``fill_ignored=true`` the region is painted with the
  image's mean colour (the image is then written as a new JPEG), so the detector is neither trained nor scored on
  the unlabelled objects inside it. Off by default: a filled val set is not the benchmark the paper reports.
* category 11 ("others"): not one of the 10 classes. The box is dropped and the image kept. ultralytics' own
  converter (``VisDrone.yaml``) writes it as class 10, which fails the dataset check and silently loses the image.
* truncated / occluded boxes are ordinary labels.
* width or height <= 0: dropped ("zero_size"). Boxes reaching outside the image are clipped to it (counted as
  "clipped"); a box with nothing left inside is dropped ("outside_image"). Exact duplicates are dropped
  ("duplicate"), as ultralytics' label check would do with only a warning.
* a malformed row (field count, non-integer, category outside 0..11, score not 0/1) stops the conversion before
  anything is written, with an error naming file and line.

Every row ends up either as a box or under a drop reason, and the summary prints both per split; images without an
annotation file and annotation files without an image are counted too. The conversion is idempotent: links and
copies that are already right are left alone, labels and JSON are rewritten with the same content, files that a
previous run left in ``images/{split}`` / ``labels/{split}`` but that this run did not produce are removed (and
counted), and ultralytics' ``labels/{split}.cache`` is deleted so it rescans.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from fine_yolo.args import Command, Option
from fine_yolo.errors import FineYoloError
from fine_yolo.tables import markdown_table

# Split name in the YOLO layout -> folder name of the official VisDrone2019-DET archives.
SPLIT_DIRS = {"train": "VisDrone2019-DET-train", "val": "VisDrone2019-DET-val", "test": "VisDrone2019-DET-test-dev"}

# Official category ids of the VisDrone toolkit (README of VisDrone2019-DET). Used only to *verify* the class order
# read from ultralytics' VisDrone.yaml, which stays the single source of the names written to the data YAML.
VISDRONE_CATEGORIES = (
    "ignored regions",
    "pedestrian",
    "people",
    "bicycle",
    "car",
    "van",
    "truck",
    "tricycle",
    "awning-tricycle",
    "bus",
    "motor",
    "others",
)
IGNORED_CATEGORY, OTHERS_CATEGORY = 0, 11
DROP_REASONS = ("ignored_region", "others", "zero_size", "outside_image", "duplicate")
YAML_NAME = "VisDrone-fine.yaml"
FILL_JPEG_QUALITY = 95  # filled images are re-encoded; q95 with 4:4:4 colour keeps the rest close to the original


class VisDroneInputError(FineYoloError, ValueError):
    """The source tree or the arguments cannot be converted; the message names the directory or argument."""


class VisDroneFormatError(FineYoloError, ValueError):
    """A VisDrone annotation row cannot be read; the message starts with ``file:line``."""

    def __init__(self, path: Path, lineno: int, problem: str, line: str) -> None:
        super().__init__(f"{path}:{lineno}: {problem}: {line!r}")
        self.path, self.lineno = path, lineno


@dataclass(frozen=True)
class Annotation:
    """One row of a VisDrone annotation file."""

    x: int
    y: int
    w: int
    h: int
    score: int
    category: int
    truncation: int
    occlusion: int
    lineno: int


@dataclass
class ImageRecord:
    """One image to write: its source, size and the boxes that survived (class index, clipped pixel xyxy)."""

    src: Path
    width: int
    height: int
    boxes: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    ignored: list[tuple[int, int, int, int]] = field(default_factory=list)  # clipped xyxy of ignored regions


@dataclass
class SplitSummary:
    """Counts for one split; ``lines == sum(boxes.values()) + sum(dropped.values())`` always holds."""

    split: str
    source: Path
    images: int = 0
    empty_images: int = 0  # kept with an empty label file (background image)
    images_with_others: int = 0  # kept; ultralytics' own converter would lose them
    images_without_annotations: list[str] = field(default_factory=list)  # skipped, not converted
    annotations_without_image: list[str] = field(default_factory=list)  # skipped
    lines: int = 0
    boxes: Counter = field(default_factory=Counter)  # class index -> kept boxes
    dropped: Counter = field(default_factory=Counter)  # reason -> rows
    clipped: int = 0  # kept boxes that were clipped to the image
    linked: int = 0
    copied: int = 0
    filled: int = 0
    unchanged: int = 0
    stale_removed: int = 0


@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """Return the 10 VisDrone class names in class-index order, read from ultralytics' own ``VisDrone.yaml``.

    The order is checked against the official category ids 1..10 (class index = category id - 1); if the bundled
    file is missing or disagrees, the official names are used and a warning says so.
    """
    official = VISDRONE_CATEGORIES[1:11]
    try:
        from ultralytics.utils import ROOT, YAML

        names = YAML.load(ROOT / "cfg" / "datasets" / "VisDrone.yaml")["names"]
        names = tuple(names[i] for i in range(len(names))) if isinstance(names, dict) else tuple(names)
    except Exception as e:  # missing file or key in some future ultralytics: the official list is still right
        print(f"WARNING: could not read ultralytics' VisDrone.yaml ({e}); using the official VisDrone names")
        return official
    if names != official:
        print(
            f"WARNING: ultralytics' VisDrone.yaml names {list(names)} differ from VisDrone category ids 1..10 "
            f"{list(official)}; "
            "using the official order so that class = category - 1 stays true"
        )
        return official
    return names


def parse_annotation_file(path: Path) -> list[Annotation]:
    """Read one VisDrone annotation file; raise :class:`VisDroneFormatError` on the first malformed row.

    Blank lines are skipped (they carry no annotation). A trailing comma after the 8th field is accepted because
    some VisDrone releases end every row with one.
    """
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            fields = [s.strip() for s in line.split(",")]
            if len(fields) == 9 and fields[-1] == "":
                fields.pop()
            if len(fields) != 8:
                raise VisDroneFormatError(path, lineno, f"expected 8 comma-separated fields, got {len(fields)}", line)
            try:
                values = [int(v) for v in fields]
            except ValueError:
                raise VisDroneFormatError(path, lineno, "fields must be integers", line) from None
            ann = Annotation(*values, lineno=lineno)
            if not IGNORED_CATEGORY <= ann.category <= OTHERS_CATEGORY:
                raise VisDroneFormatError(path, lineno, f"category {ann.category} is outside 0..11", line)
            if ann.score not in (0, 1):
                raise VisDroneFormatError(path, lineno, f"ground-truth score must be 0 or 1, got {ann.score}", line)
            rows.append(ann)
    return rows


def classify(ann: Annotation, width: int, height: int) -> tuple[str, tuple[int, int, int, int] | None]:
    """Decide what one row becomes: ``("box"|"clipped", xyxy)`` or ``(drop reason, xyxy-or-None)``.

    For ignored regions the clipped xyxy is returned too (for ``fill_ignored``); ``None`` when nothing is inside.
    """
    x1, y1 = max(ann.x, 0), max(ann.y, 0)
    x2, y2 = min(ann.x + ann.w, width), min(ann.y + ann.h, height)
    inside = (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None
    if ann.score == 0 or ann.category == IGNORED_CATEGORY:
        return "ignored_region", inside
    if ann.category == OTHERS_CATEGORY:
        return "others", None
    if ann.w <= 0 or ann.h <= 0:
        return "zero_size", None
    if inside is None:
        return "outside_image", None
    return ("box" if inside == (ann.x, ann.y, ann.x + ann.w, ann.y + ann.h) else "clipped"), inside


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) as ultralytics sees it: PIL header size with EXIF rotation applied, like its label check."""
    from PIL import Image
    from ultralytics.data.utils import exif_size

    try:
        with Image.open(path) as im:
            return exif_size(im)
    except Exception as e:  # PIL raises several types; the conversion must stop naming the image
        raise OSError(f"{path}: cannot read the image ({e})") from e


def read_split(split: str, split_dir: Path) -> tuple[dict[str, ImageRecord], SplitSummary]:
    """Parse every annotation of one split (no writing); return ``{image name: record}`` and its counts."""
    from tqdm import tqdm
    from ultralytics.data.utils import IMG_FORMATS

    summary = SplitSummary(split=split, source=split_dir)
    images_dir, ann_dir = split_dir / "images", split_dir / "annotations"
    for d in (images_dir, ann_dir):
        if not d.is_dir():
            raise VisDroneInputError(
                f"{d} is not a directory (expected VisDrone2019-DET layout: <split>/images, annotations)"
            )
    image_files = [p for p in sorted(images_dir.iterdir()) if p.suffix[1:].lower() in IMG_FORMATS]
    images = {p.stem: p for p in image_files}
    if len(images) != len(image_files):  # a.jpg and a.png would share one label file: refuse rather than pick one
        clash = sorted(p.name for p in image_files if sum(q.stem == p.stem for q in image_files) > 1)
        raise VisDroneInputError(
            f"{images_dir}: images share a file stem, so they would share a label file: {clash[:6]}"
        )
    anns = {p.stem: p for p in sorted(ann_dir.glob("*.txt"))}
    summary.images_without_annotations = sorted(images[s].name for s in images.keys() - anns.keys())
    summary.annotations_without_image = sorted(anns[s].name for s in anns.keys() - images.keys())

    records: dict[str, ImageRecord] = {}
    for stem in tqdm(sorted(images.keys() & anns.keys()), desc=f"Reading {split}", unit="img"):
        src = images[stem]
        width, height = _image_size(src)
        record = ImageRecord(src=src, width=width, height=height)
        seen: set[tuple[int, int, int, int, int]] = set()
        has_others = False
        for ann in parse_annotation_file(anns[stem]):
            summary.lines += 1
            what, xyxy = classify(ann, width, height)
            if what == "ignored_region":
                summary.dropped[what] += 1
                if xyxy is not None:
                    record.ignored.append(xyxy)
                continue
            if xyxy is None:  # others, zero_size, outside_image
                summary.dropped[what] += 1
                has_others |= what == "others"
                continue
            box = (ann.category - 1, *xyxy)
            if box in seen:
                summary.dropped["duplicate"] += 1
                continue
            seen.add(box)
            record.boxes.append(box)
            summary.boxes[box[0]] += 1
            summary.clipped += what == "clipped"
        summary.images += 1
        summary.empty_images += not record.boxes
        summary.images_with_others += has_others
        records[src.name] = record
    # Nothing vanishes: every non-blank row is a kept box or a counted drop.
    assert summary.lines == sum(summary.boxes.values()) + sum(summary.dropped.values()), "row accounting broken"
    return records, summary


def yolo_label_text(record: ImageRecord) -> str:
    """The YOLO label file content of one image: ``cls xc yc w h`` normalised, 6 decimals like ultralytics."""
    if not record.boxes:
        return ""
    import numpy as np
    from ultralytics.utils.ops import xyxy2xywhn

    xyxy = np.array([b[1:] for b in record.boxes], dtype=np.float64)
    xywhn = xyxy2xywhn(xyxy, w=record.width, h=record.height)
    return "".join(f"{b[0]} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for b, (x, y, w, h) in zip(record.boxes, xywhn))


def _place_image(src: Path, dst: Path, link: bool) -> str:
    """Make ``dst`` a symlink to / copy of ``src``; return "linked", "copied" or "unchanged"."""
    if dst.is_symlink():
        if link and os.readlink(dst) == str(src):
            return "unchanged"
    elif dst.exists() and not link:
        s, d = src.stat(), dst.stat()
        if (s.st_size, s.st_mtime_ns) == (d.st_size, d.st_mtime_ns):  # copy2 preserves the mtime
            return "unchanged"
    # Unlink first: writing through an existing symlink would overwrite the source image.
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if link:
        try:
            dst.symlink_to(src)
        except OSError as e:
            raise OSError(f"cannot create symlink {dst} -> {src} ({e}); rerun with link=false to copy") from e
        return "linked"
    shutil.copy2(src, dst)
    return "copied"


def _write_filled(record: ImageRecord, dst: Path) -> None:
    """Write the image with its ignored regions painted in the image's mean colour (a new JPEG, never a link)."""
    import cv2

    im = cv2.imread(str(record.src))
    if im is None:
        raise OSError(f"cannot read image {record.src}")
    mean = im.reshape(-1, im.shape[2]).mean(0).round().astype(im.dtype)
    for x1, y1, x2, y2 in record.ignored:
        im[y1:y2, x1:x2] = mean
    if dst.is_symlink() or dst.exists():
        dst.unlink()  # never write through a symlink into the source tree
    params = [cv2.IMWRITE_JPEG_QUALITY, FILL_JPEG_QUALITY]
    if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):  # full-resolution colour: 4:2:0 smears the fill edges
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    if not cv2.imwrite(str(dst), im, params):
        raise OSError(f"cannot write image {dst}")


def coco_ground_truth(records: dict[str, ImageRecord], names: tuple[str, ...]) -> dict:
    """COCO-format GT of exactly the boxes in the YOLO labels (image ids 1..N in file-name order)."""
    images, annotations = [], []
    for image_id, (name, r) in enumerate(sorted(records.items()), 1):
        images.append({"id": image_id, "file_name": name, "width": r.width, "height": r.height})
        for cls, x1, y1, x2, y2 in r.boxes:
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,  # = VisDrone category id = what `yolo val save_json=True` writes
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n, "supercategory": "none"} for i, n in enumerate(names)]
    return {
        "info": {"description": "VisDrone2019-DET converted by fine-yolo visdrone"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def write_split(records: dict[str, ImageRecord], summary: SplitSummary, out: Path, link: bool, fill: bool) -> None:
    """Write images (link/copy/filled), labels, and remove what an earlier run left behind for this split."""
    from tqdm import tqdm
    from ultralytics.data.utils import IMG_FORMATS

    split = summary.split
    images_dir, labels_dir = out / "images" / split, out / "labels" / split
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    for name, record in tqdm(sorted(records.items()), desc=f"Writing {split}", unit="img"):
        dst = images_dir / name
        if fill and record.ignored:
            _write_filled(record, dst)
            summary.filled += 1
        else:
            outcome = _place_image(record.src.resolve(), dst, link)
            setattr(summary, outcome, getattr(summary, outcome) + 1)
        (labels_dir / f"{Path(name).stem}.txt").write_text(yolo_label_text(record), encoding="utf-8")

    # Files of an earlier run over a different source would otherwise be trained on: remove and count them.
    keep_labels = {f"{Path(n).stem}.txt" for n in records}
    for p in images_dir.iterdir():
        if p.name not in records and p.suffix[1:].lower() in IMG_FORMATS:
            p.unlink()
            summary.stale_removed += 1
    for p in labels_dir.glob("*.txt"):
        if p.name not in keep_labels:
            p.unlink()
            summary.stale_removed += 1
    # ultralytics keys its label cache on file sizes; a changed class id keeps the size, so drop the cache.
    (out / "labels" / f"{split}.cache").unlink(missing_ok=True)


def write_data_yaml(out: Path, names: tuple[str, ...], link: bool, fill: bool, source: Path) -> Path:
    """Write ``out/VisDrone-fine.yaml`` with an absolute ``path:`` and one key per split present under ``images/``."""
    from ultralytics.utils import YAML

    out = out.resolve()
    data: dict = {"path": str(out)}
    for split in SPLIT_DIRS:
        if (out / "images" / split).is_dir():
            data[split] = f"images/{split}"
    data["names"] = dict(enumerate(names))
    file = out / YAML_NAME
    header = (
        f"# VisDrone2019-DET in YOLO layout, written by `fine-yolo visdrone` from {source.resolve()}\n"
        f"# images: {'symlinks into the source tree' if link else 'copies'}"
        f"{'; ignored regions filled with the mean colour' if fill else ''}\n"
        "# Class index = VisDrone category id - 1 (ignored regions and 'others' are not classes).\n"
        "# Paper setting (FINE, arXiv 2606.14005, Table 8): imgsz=800, AP50 on val.\n"
        f"#   yolo train model=yolov8s-fine.yaml data={file} imgsz=800\n"
        f"#   yolo val model=<run>/weights/best.pt data={file} imgsz=800 save_json=True\n"
        f"#   fine-yolo coco-eval pred=<val dir>/predictions.json gt={out / 'annotations' / 'instances_val.json'}\n"
    )
    YAML.save(file, data, header=header)
    return file


def found_splits(source: str | Path) -> tuple[str, ...]:
    """The splits whose VisDrone2019-DET directory exists under ``source``, in train/val/test order."""
    return tuple(s for s, d in SPLIT_DIRS.items() if (Path(source) / d).is_dir())


def convert_visdrone(
    source: str | Path,
    out: str | Path,
    splits: tuple[str, ...] | None = None,
    link: bool = True,
    fill_ignored: bool = False,
    coco_json: bool = True,
) -> dict[str, SplitSummary]:
    """Convert the VisDrone2019-DET tree under ``source`` into the YOLO layout under ``out``.

    ``splits=None`` converts every split found under ``source`` (:func:`found_splits`); a split asked for explicitly
    but missing is an error.

    All annotation files are parsed before anything is written, so a malformed row (raised as
    :class:`VisDroneFormatError`) leaves ``out`` untouched. Returns the per-split counts.
    """
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise VisDroneInputError(f"source={source} is not a directory")
    if splits is None:  # every split the tree has; most users download train and val only
        splits = found_splits(source)
        if not splits:
            raise VisDroneInputError(f"source={source} holds none of {', '.join(SPLIT_DIRS.values())}")
    unknown = [s for s in splits if s not in SPLIT_DIRS]
    if unknown or not splits:
        raise VisDroneInputError(
            f"splits must be a comma-separated subset of {','.join(SPLIT_DIRS)}, got {','.join(splits)}"
        )
    missing = [str(source / SPLIT_DIRS[s]) for s in splits if not (source / SPLIT_DIRS[s]).is_dir()]
    if missing:
        present = [s for s in splits if (source / SPLIT_DIRS[s]).is_dir()]
        raise VisDroneInputError(
            f"missing {', '.join(missing)}; convert the others with splits={','.join(present) or '...'}"
        )
    names = class_names()

    parsed = {s: read_split(s, source / SPLIT_DIRS[s]) for s in splits}  # raises before any write
    for split, (records, summary) in parsed.items():
        write_split(records, summary, out, link, fill_ignored)
        if coco_json:
            (out / "annotations").mkdir(parents=True, exist_ok=True)
            gt = coco_ground_truth(records, names)
            (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(gt), encoding="utf-8")
    write_data_yaml(out, names, link, fill_ignored, source)
    return {s: summary for s, (_, summary) in parsed.items()}


def format_summary(summaries: dict[str, SplitSummary], names: tuple[str, ...]) -> str:
    """Markdown summary: images per split, boxes per class, rows dropped by reason, file operations; then the
    skipped files by name."""
    s = list(summaries.values())

    def row(label: str, values: list) -> list:
        return [label, *values]

    rows = [
        row("images converted", [x.images for x in s]),
        row("  with no boxes (background)", [x.empty_images for x in s]),
        row("  with 'others' (kept)", [x.images_with_others for x in s]),
        row("  ignored regions filled", [x.filled for x in s]),
        row("images w/o annotation (skip)", [len(x.images_without_annotations) for x in s]),
        row("annotations w/o image (skip)", [len(x.annotations_without_image) for x in s]),
        row("files linked", [x.linked for x in s]),
        row("files copied", [x.copied for x in s]),
        row("files unchanged", [x.unchanged for x in s]),
        row("stale files removed", [x.stale_removed for x in s]),
        row("annotation rows", [x.lines for x in s]),
        row("boxes kept", [sum(x.boxes.values()) for x in s]),
        *(row(f"  {i} {n}", [x.boxes[i] for x in s]) for i, n in enumerate(names)),
        row("  of which clipped to image", [x.clipped for x in s]),
        row("rows dropped", [sum(x.dropped.values()) for x in s]),
        *(row(f"  {reason}", [x.dropped[reason] for x in s]) for reason in DROP_REASONS),
    ]
    lines = [markdown_table(["", *summaries], rows)]
    for x in s:  # name the skipped files: a count alone does not say where to look
        for what, files in (
            ("images without annotation", x.images_without_annotations),
            ("annotations without image", x.annotations_without_image),
        ):
            if files:
                more = f" (+{len(files) - 5} more)" if len(files) > 5 else ""
                lines.append(f"WARNING {x.split}: {len(files)} {what}: {', '.join(files[:5])}{more}")
    return "\n".join(lines)


def _run(args: dict, extra: dict) -> int:
    asked = tuple(x.strip() for x in str(args["splits"]).split(",") if x.strip()) or None
    try:
        summaries = convert_visdrone(
            args["source"], args["out"], asked, args["link"], args["fill_ignored"], args["coco_json"]
        )
    except VisDroneFormatError as e:
        raise VisDroneInputError(f"malformed annotation, nothing written: {e}") from None
    except OSError as e:  # unreadable image, failed symlink or copy: already names the file
        raise VisDroneInputError(str(e)) from None
    out = Path(args["out"]).resolve()
    mode = "symlinks into the source tree" if args["link"] else "copies"
    print(f"\nVisDrone -> YOLO in {out} (images are {mode})")
    not_found = [f"{x} ({SPLIT_DIRS[x]})" for x in SPLIT_DIRS if x not in summaries]
    if not_found:
        print(f"not found in {args['source']}, not converted: {', '.join(not_found)}")
    print(format_summary(summaries, class_names()))
    print(f"\ndata YAML: {out / YAML_NAME}")
    if args["coco_json"]:
        print(f"COCO GT:   {', '.join(str(out / 'annotations' / f'instances_{s}.json') for s in summaries)}")
    print(f"train (paper Table 8 setting): yolo train model=yolov8s-fine.yaml data={out / YAML_NAME} imgsz=800")
    return 0


COMMAND = Command(
    options={
        "source": Option("", "directory holding VisDrone2019-DET-{train,val,test-dev}", required=True),
        "out": Option("", "output directory (YOLO layout, data YAML, COCO GT)", required=True),
        "link": Option(True, "symlink images into the source tree (false: copy)"),
        "fill_ignored": Option(False, "blank ignored regions with the mean colour"),
        "coco_json": Option(True, "also write COCO ground truth annotations/instances_<split>.json"),
        "splits": Option("", "comma-separated subset of train,val,test (default: every split found)"),
    },
    run=_run,
    example="fine-yolo visdrone source=~/VisDrone out=datasets/VisDrone",
)
