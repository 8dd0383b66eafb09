"""Label formats of fine-synth beyond boxes: segmentation polygons, oriented boxes, keypoints, semantic masks.

Every fine-synth object is a blob of known shape and extent, so each task's label is computed from the shape, not
estimated from pixels. Coordinates are continuous pixel coordinates: pixel (row i, column j) covers
``[j, j+1) x [i, i+1)``, so a blob whose inclusive pixel box is ``(x0, y0, x1, y1)`` spans ``[x0, x1+1] x [y0, y1+1]``
— the extent the detection label already uses (``w = x1 - x0 + 1``).

* **Polygons** (``segment``): a rectangle is its 4 corners (exact); an ellipse (semi-axes half the sides, as drawn) is
  16 points on it, at about 22.5° steps from the rational parametrisation ``((1-t²)/(1+t²), 2t/(1+t²))`` (plain
  arithmetic and one ``sqrt``: the same numbers on every platform, like the pixels); a rounded rectangle, whose mask
  cuts 3 pixels off each corner as a staircase, is the octagon whose diagonals cut 2 px along each side (through the
  staircase's outer steps). Every polygon includes the points of the blob's extent on each side, so the box ultralytics
  derives from a polygon (its min/max) is exactly the detection box.
* **Oriented boxes** (``obb``): the 4 corners of the box. Blobs are axis-aligned, so their minimum-area rectangle is
  the box itself (angle 0): the labels are exact, though they never exercise a rotation.
* **Keypoints** (``pose``): 5 per object — centre, then the midpoints of the left, right, top and bottom sides of the
  box, each on the blob's outline for all three shapes; all visible (v = 2). Mirroring left-right swaps points 1 and
  2: :data:`FLIP_IDX`.
* **Semantic masks** (``semantic``): each pixel is the index of its context region in :data:`CONTEXTS` order; every
  drawn item (object, decoy or fragment) with its shadow pad is :data:`IGNORE` (255, ultralytics' ignore label),
  because those pixels belong to no context.
"""

from __future__ import annotations

import numpy as np

ELLIPSE, RECTANGLE, ROUNDED = 0, 1, 2  # the blob shapes, as fine_yolo.data.synthetic draws them
KPT_SHAPE = (5, 3)  # 5 keypoints, (x, y, visible)
KEYPOINTS = ("centre", "left", "right", "top", "bottom")
FLIP_IDX = (0, 2, 1, 3, 4)
IGNORE = 255
CUT = 2.0  # px cut along each side at the corners of a rounded rectangle's polygon

# First quadrant of the unit circle, 0° to 90° in ~22.5° steps: t = tan(θ/2) in {0, 1/5, √2-1, 2/3, 1}.
_T = np.array([0.0, 0.2, np.sqrt(2.0) - 1.0, 2.0 / 3.0, 1.0])
_QUADRANT = np.stack([(1 - _T**2) / (1 + _T**2), 2 * _T / (1 + _T**2)], axis=1)  # (5, 2), exactly on the circle
# The full circle: the quadrant rotated by 0°, 90°, 180°, 270°, each without its last point (the next quadrant
# starts there): 16 points, including the 4 extreme points (1, 0), (0, 1), (-1, 0), (0, -1).
_Q = _QUADRANT[:-1]
_CIRCLE = np.concatenate([_Q, np.stack([-_Q[:, 1], _Q[:, 0]], 1), -_Q, np.stack([_Q[:, 1], -_Q[:, 0]], 1)])


def polygon(shape: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """The (n, 2) outline (x, y) in pixel coordinates of a blob of ``shape`` with inclusive pixel box ``box``."""
    x0, y0, x1, y1 = box
    xa, ya, xb, yb = float(x0), float(y0), float(x1 + 1), float(y1 + 1)
    if shape == RECTANGLE:
        return np.array([[xa, ya], [xb, ya], [xb, yb], [xa, yb]])
    if shape == ELLIPSE:
        centre = np.array([(xa + xb) / 2, (ya + yb) / 2])
        return centre + _CIRCLE * np.array([(xb - xa) / 2, (yb - ya) / 2])
    if shape == ROUNDED:
        c = CUT
        return np.array([[xa + c, ya], [xb - c, ya], [xb, ya + c], [xb, yb - c],
                         [xb - c, yb], [xa + c, yb], [xa, yb - c], [xa, ya + c]])
    raise ValueError(f"unknown blob shape {shape!r}")


def _xy(points: np.ndarray, size: int) -> str:
    return " ".join(f"{v:.6f}" for v in (points / size).ravel())


def segment_line(cls: int, shape: int, box: tuple[int, int, int, int], size: int) -> str:
    """``cls x1 y1 x2 y2 ...`` (normalised polygon), one YOLO segmentation label line."""
    return f"{cls} {_xy(polygon(shape, box), size)}\n"


def obb_corners(box: tuple[int, int, int, int]) -> np.ndarray:
    """The (4, 2) corners of an axis-aligned blob's minimum-area rectangle (clockwise on screen, from top-left)."""
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1 + 1, y0], [x1 + 1, y1 + 1], [x0, y1 + 1]], dtype=np.float64)


def obb_line(cls: int, box: tuple[int, int, int, int], size: int) -> str:
    """``cls x1 y1 x2 y2 x3 y3 x4 y4`` (normalised), one YOLO OBB label line."""
    return f"{cls} {_xy(obb_corners(box), size)}\n"


def keypoints(box: tuple[int, int, int, int]) -> np.ndarray:
    """The (5, 2) keypoints of :data:`KEYPOINTS` for a blob with inclusive pixel box ``box``."""
    x0, y0, x1, y1 = box
    xa, ya, xb, yb = float(x0), float(y0), float(x1 + 1), float(y1 + 1)
    cx, cy = (xa + xb) / 2, (ya + yb) / 2
    return np.array([[cx, cy], [xa, cy], [xb, cy], [cx, ya], [cx, yb]])


def pose_line(cls: int, box: tuple[int, int, int, int], size: int) -> str:
    """``cls cx cy w h x1 y1 v1 ... x5 y5 v5`` (normalised, v = 2), one YOLO pose label line."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0 + 1, y1 - y0 + 1
    head = f"{cls} {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}"
    kpts = " ".join(f"{x / size:.6f} {y / size:.6f} 2" for x, y in keypoints(box))
    return f"{head} {kpts}\n"


def semantic_mask(regions: np.ndarray, region_class: list[int], items: list[tuple[int, int, int, int]],
                  pad: int) -> np.ndarray:
    """(H, W) uint8 class map: ``region_class[regions]``, with each item's box grown by ``pad`` set to IGNORE."""
    mask = np.asarray(region_class, dtype=np.uint8)[regions]
    h, w = mask.shape
    for x0, y0, x1, y1 in items:
        mask[max(y0 - pad, 0) : min(y1 + 1 + pad, h), max(x0 - pad, 0) : min(x1 + 1 + pad, w)] = IGNORE
    return mask
