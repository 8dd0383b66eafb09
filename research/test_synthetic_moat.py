"""fine-synth-moat (the mechanism-test variant): the same labels as fine-synth, every pixel within the radius of an
item is gravel or an item's own blob/pad, pixels elsewhere untouched, deterministic, written once."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_moat import MoatSettingsError, _item_boxes, generate_moat, render_moat

from fine_yolo.data.synthetic import PAD, render


@pytest.mark.parametrize("index", [0, 1, 5])
def test_moats_replace_the_context_near_every_item_and_nothing_else(index):
    radius = 20
    plain, labels, meta = render(0, "train", index, 256)
    moat, moat_labels, _ = render_moat(0, "train", index, 256, radius)
    assert np.array_equal(labels, moat_labels)
    keep = np.zeros(plain.shape[:2], bool)
    near = np.zeros(plain.shape[:2], bool)
    boxes = _item_boxes(meta)
    assert boxes, "the image should hold items"
    for x0, y0, x1, y1 in boxes:
        keep[max(y0 - PAD, 0) : y1 + PAD + 1, max(x0 - PAD, 0) : x1 + PAD + 1] = True
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        near[max(cy - radius, 0) : cy + radius + 1, max(cx - radius, 0) : cx + radius + 1] = True
    changed = np.any(plain != moat, axis=-1)
    assert np.array_equal(moat[keep], plain[keep])  # blobs and pads untouched
    assert not changed[~near].any()  # nothing beyond the moats changed
    painted = near & ~keep
    # gravel is grey-brown noise around BGR (104, 112, 118) +- 14: no context texture looks like that everywhere
    assert np.abs(moat[painted].astype(int) - [104, 112, 118]).max() <= 15


def test_deterministic_and_written_once(tmp_path):
    a, _, _ = render_moat(3, "val", 2, 256)
    b, _, _ = render_moat(3, "val", 2, 256)
    assert np.array_equal(a, b)
    yaml_path = generate_moat(tmp_path / "m", seed=0, n_train=2, n_val=1, imgsz=128)
    assert sorted(p.name for p in (tmp_path / "m" / "images" / "train").iterdir()) == ["train_00000.png",
                                                                                      "train_00001.png"]
    stamp = (tmp_path / "m" / "images" / "val" / "val_00000.png").stat().st_mtime_ns
    assert generate_moat(tmp_path / "m", seed=0, n_train=2, n_val=1, imgsz=128) == yaml_path
    assert (tmp_path / "m" / "images" / "val" / "val_00000.png").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert "train: images/train" in yaml_path.read_text()


def test_a_radius_inside_the_pad_is_refused(tmp_path):
    with pytest.raises(MoatSettingsError, match="radius=8"):
        generate_moat(tmp_path, radius=8)
