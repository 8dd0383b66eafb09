"""Paper Fig. 9: the highest-confidence false positives one model makes and the other does not, as one PNG.

Rule. A false positive of model A (a detection with score >= conf that matched no ground truth, see
:mod:`fine_yolo.eval.matching`) is *not made by B* when B has no detection of the same class on the same image with
IoU >= iou against it at score >= conf (whatever B's detection is: TP or FP). Each row shows up to ``k`` of them in
descending score: row 1 those only A makes, row 2 those only B makes. Each crop is centred on the box with context
around it (3x the box's longer side, at least 64 px, clipped to the image), the box drawn, and "class score" and the
file name written above. The row label gives how many such false positives exist in total.

Images are found by the ground truth's ``file_name``: under ``images=DIR`` (searched recursively), or among the
split's images of ``data=`` (model form). A crop whose image cannot be found is an error naming it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fine_yolo.errors import FineYoloError
from fine_yolo.eval.matching import Detection

CONTEXT = 3.0  # crop side / longer box side
MIN_CROP = 64  # px


class GalleryError(FineYoloError, ValueError):
    """A gallery that cannot be drawn (images missing or ambiguous); the message names the file."""


class Report(Protocol):
    """What the gallery reads of a :class:`fine_yolo.eval.errors.ErrorReport`."""

    detections: list[Detection]
    image_files: dict[Any, str]
    category_names: dict[Any, str]
    conf: float
    iou: float


def only_in(a: list[Detection], b: list[Detection], iou: float) -> list[Detection]:
    """False positives of ``a`` that ``b`` does not make (rule in the module docstring), highest score first."""
    from pycocotools import mask as mask_utils

    by_key: dict[tuple, list[list[float]]] = defaultdict(list)
    for d in b:
        by_key[(d.image_id, d.category_id)].append(list(d.bbox))
    out = []
    for d in a:
        if d.status != "fp":
            continue
        others = by_key.get((d.image_id, d.category_id))
        if others and (mask_utils.iou([list(d.bbox)], others, [0] * len(others)) >= iou).any():
            continue
        out.append(d)
    return sorted(out, key=lambda d: -d.score)


@dataclass(frozen=True)
class Images:
    """GT image id -> image file, and where they were looked for (for messages)."""

    paths: dict[Any, Path]
    where: str = ""


def image_paths(
    image_files: dict[Any, str], images: str | Path = "", data: str | Path = "", split: str = "val"
) -> Images:
    """Find the GT's images by file name, in a folder (recursively) or in the split of a data YAML."""
    wanted = {Path(n).name for n in image_files.values() if n}
    found: dict[str, Path] = {}
    if images:
        root = Path(images)
        if not root.is_dir():
            raise GalleryError(f"images={images}: not a folder")
        candidates = [p for p in root.rglob("*") if p.name in wanted and p.is_file()]
        source = f"under {root}"
    elif data:
        from fine_yolo.data.coco_gt import split_images

        candidates = [p for p in split_images(data, split) if p.name in wanted]
        source = f"in split '{split}' of {data}"
    else:
        raise GalleryError("the gallery needs the images: pass images=DIR (or data= in the model form)")
    for p in candidates:
        if p.name in found and found[p.name] != p:
            raise GalleryError(f"two images named {p.name} {source}: {found[p.name]} and {p}")
        found[p.name] = p
    return Images({i: found[Path(n).name] for i, n in image_files.items() if n and Path(n).name in found}, source)


def _crop(path: Path, bbox: tuple[float, float, float, float]) -> tuple[Any, tuple[float, float]]:
    """RGB crop around ``bbox`` and the crop's top-left corner in image pixels."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        img = np.asarray(im.convert("RGB"))
    h, w = img.shape[:2]
    x, y, bw, bh = bbox
    side = max(CONTEXT * max(bw, bh), MIN_CROP)
    cx, cy = x + bw / 2, y + bh / 2
    x0, y0 = int(max(0, min(cx - side / 2, w - side))), int(max(0, min(cy - side / 2, h - side)))
    x1, y1 = int(min(w, x0 + side)), int(min(h, y0 + side))
    return img[y0:y1, x0:x1], (x0, y0)


def fp_gallery(
    a: Report,
    b: Report,
    images: Images,
    out: str | Path,
    labels: tuple[str, str] = ("model", "baseline"),
    k: int = 8,
) -> dict[str, Any]:
    """Draw the two rows (A-only, B-only false positives) into ``out`` (PNG); return what was drawn.

    ``a`` and ``b`` must be analyses of the same ground truth at the same conf and IoU. Returns
    ``{"path", "rows": [{"label", "shown", "total", "detections": [index...]}, ...]}``.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if (a.conf, a.iou) != (b.conf, b.iou) or a.image_files != b.image_files:
        raise GalleryError("the two analyses are not of the same ground truth and thresholds")
    if k < 1:
        raise GalleryError(f"k={k}: need at least one crop per row")
    rows = [
        (f"only {labels[0]}", only_in(a.detections, b.detections, a.iou), a),
        (f"only {labels[1]}", only_in(b.detections, a.detections, a.iou), b),
    ]
    for _, fps, report in rows:
        for d in fps[:k]:
            if d.image_id not in images.paths:
                raise GalleryError(f"image {report.image_files.get(d.image_id)!r} not found {images.where}".rstrip())
    fig = Figure(figsize=(2.0 * k, 5.2), dpi=110)
    axes = fig.subplots(2, k, squeeze=False)
    result_rows = []
    for r, (label, fps, report) in enumerate(rows):
        shown = fps[:k]
        for c in range(k):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(shown):
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c == 0:
                    ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes, color="0.4")
            else:
                d = shown[c]
                crop, (x0, y0) = _crop(images.paths[d.image_id], d.bbox)
                ax.imshow(crop)
                x, y, bw, bh = d.bbox
                ax.add_patch(Rectangle((x - x0, y - y0), bw, bh, fill=False, edgecolor="red", linewidth=1.6))
                name = report.category_names.get(d.category_id, str(d.category_id))
                ax.set_title(f"{name} {d.score:.2f}\n{Path(report.image_files[d.image_id]).name}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"FPs {label}\n{len(shown)} of {len(fps)}", fontsize=9)
        indices = [d.index for d in shown]
        result_rows.append({"label": label, "shown": len(shown), "total": len(fps), "detections": indices})
    fig.suptitle(
        f"Highest-confidence false positives made by one model and not the other (conf >= {a.conf:g}, IoU {a.iou:g})",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return {"path": out, "rows": result_rows}


def describe(result: dict[str, Any]) -> str:
    """One line per row: how many crops were drawn of how many."""
    parts = [f"{r['label']}: {r['shown']} of {r['total']}" for r in result["rows"]]
    return f"gallery written to {result['path']} (false positives {'; '.join(parts)})"
