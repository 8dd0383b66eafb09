"""Where the errors go: the TIDE error types (Bolya et al., ECCV 2020), counted by hotcoco.

Every false positive gets exactly one type, tested in this order (IoU with any ground-truth box of the image, crowd
regions excluded; ``pos`` = the matching IoU, ``bg`` = 0.1 as in TIDE):

* ``loc``  — IoU in [bg, pos] with a box of its own class: would be a TP if localised better;
* ``cls``  — IoU >= pos with a box of another class: would be a TP with the right class;
* ``dupe`` — IoU >= pos with a box of its class that a higher-scoring detection already matched;
* ``bkg``  — IoU < bg with every box: fired on background;
* ``both`` — anything else (IoU in [bg, pos) with a box of another class): wrong class and badly localised.

``miss`` counts the false-negative boxes that no ``loc`` or ``cls`` error points at (TIDE's "missed GT"), so
``cls + loc + both + dupe + bkg = FP`` and ``miss <= FN``.

Library. hotcoco 1.3 (``COCOeval.tide_errors``, Rust, MIT) computes these offline on box-only ground truth; the
original ``tidecv`` crashes on such ground truth and downloads annotations. hotcoco is run with one IoU threshold
(``iou_thrs=[pos]``: otherwise it snaps ``pos`` to its 0.5:0.95 grid for matching) and no per-image detection cap.
How it was checked: on 200 random crowd-free fixtures at pos 0.3, 0.5 and 0.75 its counts equal tidecv-light 1.0.2's
(the reference TIDE code) exactly; its per-detection TP/FP equals pycocotools' matching (crowd and ``ignore`` flags
included), which ``tests/test_errors.py`` keeps checking; and :func:`fine_yolo.eval.errors.analyze` checks the two
identities above on every call.
"""

from __future__ import annotations

from fine_yolo.eval.matching import Indexed

TIDE_TYPES = ("cls", "loc", "both", "dupe", "bkg", "miss")
FP_TYPES = TIDE_TYPES[:5]
BG_IOU = 0.1  # TIDE's background threshold
_HOTCOCO_KEYS = {"cls": "Cls", "loc": "Loc", "both": "Both", "dupe": "Dupe", "bkg": "Bkg", "miss": "Miss"}


def tide_counts(indexed: Indexed, iou: float) -> dict[str, int]:
    """TIDE error counts of ``indexed.results`` (already filtered by score) at matching IoU ``iou``."""
    import hotcoco

    coco_gt = hotcoco.COCO(indexed.gt)
    ev = hotcoco.COCOeval(coco_gt, coco_gt.load_res(indexed.results), "bbox")
    params = ev.params  # reads return copies: assign whole values
    params.iou_thrs = [iou]
    params.max_dets = [len(indexed.results) + 1]
    params.area_rng, params.area_rng_lbl = [[0.0, 1e12]], ["all"]
    ev.params = params
    ev.evaluate()
    counts = ev.tide_errors(pos_thr=iou, bg_thr=BG_IOU)["counts"]
    return {k: int(counts[v]) for k, v in _HOTCOCO_KEYS.items()}


def hotcoco_version() -> str:
    from importlib.metadata import version

    return f"hotcoco {version('hotcoco')}"
