"""``fine-yolo heatmaps`` (paper Fig. 8): the maps captured with hooks are the block's own tensors, M is exactly 0 and
F_low_aligned is F_low at init, the baseline column reads the layer FINE refines, and the command writes one grid per
image with the shape its JSON claims."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import offline_env
from helpers import placement_ks

from fine_yolo.analysis import heatmaps as hm
from fine_yolo.analysis.block_maps import capture, fine_blocks, layer_outputs, load_images, load_model, modulation
from fine_yolo.data.synthetic import render
from fine_yolo.models import catalogue

FINE_YOLO = str(Path(sys.executable).parent / "fine-yolo")
IMGSZ = 64


@pytest.fixture(scope="module")
def fresh():
    return load_model("yolov8n-fine.yaml")


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory) -> Path:
    """Two fine-synth images (128 px) and one non-square crop, so letterboxing has padding to add."""
    d = tmp_path_factory.mktemp("imgs")
    for i in range(2):
        cv2.imwrite(str(d / f"img{i}.png"), render(0, "val", i, 128)[0])
    cv2.imwrite(str(d / "wide.png"), render(0, "val", 2, 128)[0][:64])
    return d


def _x(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(seed))


def test_blocks_map_back_to_the_placement_table(fresh):
    stages = catalogue()["yolov8-fine.yaml"].stages
    ks = placement_ks(len(stages))  # 1, 2
    assert [(b.low, b.high, b.module.k) for b in fresh.blocks] == [(s.low, s.high, k) for s, k in zip(stages, ks)]
    assert [b.name for b in fresh.blocks] == ["fine11", "fine14"]  # fine<fusion row>
    assert not fresh.trained and "freshly initialised" in fresh.state


def test_at_init_m_is_exactly_zero_and_aligned_is_f_low(fresh):
    maps = capture(fresh.net, _x(), fresh.blocks)
    for b, m in zip(fresh.blocks, maps):
        rk = b.module.r * b.module.k
        h, w = m.low.shape[-2:]
        assert m.f_high.shape == (2, b.module.c_low, h // b.module.r, w // b.module.r)  # eq. 10 at the high map's size
        assert m.gain.shape == (2, b.module.c_low, h // rk, w // rk)
        assert torch.equal(m.gain, torch.ones_like(m.gain))  # W_O = 0: gain 1 + M^ is exactly 1
        assert m.m.shape == m.low.shape and not m.m.any()
        assert torch.equal(m.aligned, m.low)
    # the hooks on the block and on its gain tap are gone again
    for b in fresh.blocks:
        assert not b.module._forward_hooks and not b.module.gain_tap._forward_hooks


def test_captured_maps_are_the_blocks_own_tensors():
    loaded = load_model("yolov8n-fine.yaml")
    torch.manual_seed(0)
    for b in loaded.blocks:  # a trained-like block: M non-zero
        torch.nn.init.normal_(b.module.out.weight, std=0.5)
        torch.nn.init.normal_(b.module.out.bias, std=0.5)
    maps = capture(loaded.net, _x(), loaded.blocks)
    for b, m in zip(loaded.blocks, maps):
        rk = b.module.r * b.module.k
        with torch.no_grad():
            assert torch.allclose(b.module(m.low, m.high), m.aligned)
            assert torch.equal(m.f_high, b.module.proj_high(m.high))
        assert m.m.abs().max() > 0
        # eq. 8: M is gain - 1, constant on each rk x rk cell; eq. 9: aligned = low * M + low
        assert torch.equal(m.m[..., :rk, :rk], (m.gain[..., :1, :1] - 1).expand(-1, -1, rk, rk))
        assert torch.allclose(m.aligned, m.low * m.m + m.low, atol=1e-6)


def test_modulation_pads_trailing_pixels_with_zero():
    gain = torch.full((1, 2, 2, 3), 1.5)
    m = modulation(gain, rk=2, size=(5, 7))  # one row and one column outside every token
    assert m.shape == (1, 2, 5, 7)
    assert torch.all(m[..., :4, :6] == 0.5) and not m[..., 4, :].any() and not m[..., :, 6].any()


def test_reduce_and_normalise_by_hand():
    t = torch.tensor([[[[3.0, 0.0]], [[-4.0, 1.0]]]])  # (1, 2, 1, 2): channels (3, -4) and (0, 1)
    assert np.allclose(hm.reduce_channels(t, "mean"), [[[3.5, 0.5]]])
    assert np.allclose(hm.reduce_channels(t, "l2"), [[[5.0, 1.0]]])
    norm, lo, hi = hm.normalise(np.array([[2.0, 4.0], [3.0, 2.0]]))
    assert (lo, hi) == (2.0, 4.0) and np.allclose(norm, [[0, 1], [0.5, 0]])
    zero, lo, hi = hm.normalise(np.zeros((3, 3)))  # M = 0: no division by a zero range
    assert lo == hi == 0.0 and np.all(zero == 0) and np.isfinite(zero).all()


def test_baseline_layer_is_the_map_fine_refines(fresh):
    """At init FINE is the identity, so a baseline with the FINE model's weights gives the same map at layer low."""
    base = load_model("yolov8n.yaml", need_fine=False)
    base.net.load_state_dict({k: v for k, v in fresh.net.state_dict().items() if ".fine" not in k})
    x = _x()
    maps = capture(fresh.net, x, fresh.blocks)
    outs = layer_outputs(base.net, x, [b.low for b in fresh.blocks])
    for b, m in zip(fresh.blocks, maps):
        assert torch.allclose(outs[b.low], m.low, atol=1e-5)


def test_letterbox_keeps_aspect_and_pads(images_dir):
    imgs = dict(load_images(str(images_dir), IMGSZ))
    assert sorted(imgs) == ["img0", "img1", "wide"]
    wide = imgs["wide"]
    assert wide.shape == (IMGSZ, IMGSZ, 3)
    assert np.all(wide[:8] == 114) and np.all(wide[-8:] == 114)  # 128x64 -> 64x32 centred: 16 grey rows each side


def test_checkpoint_with_learned_m(tmp_path):
    from ultralytics import YOLO

    model = YOLO("yolov8n-fine.yaml")
    for m in model.model.modules():
        if type(m).__name__ == "FINE":
            torch.nn.init.normal_(m.out.bias, std=0.5)  # an untrained net's maps are ~1e-6: W_O alone moves M by less
    model.save(tmp_path / "ckpt.pt")
    loaded = load_model(str(tmp_path / "ckpt.pt"))
    assert loaded.trained and loaded.state.startswith("checkpoint")
    assert [b.low for b in loaded.blocks] == [6, 4] == [b.low for b in fine_blocks(loaded.net)]
    assert all(m.m.abs().max() > 0 for m in capture(loaded.net, _x(1), loaded.blocks))


def _png_size(path: Path) -> tuple[int, int]:
    img = cv2.imread(str(path))
    return img.shape[1], img.shape[0]


def test_heatmaps_command_end_to_end(images_dir, tmp_path):
    pytest.importorskip("pytorch_grad_cam", reason="cam=True needs grad-cam (in the dev extra)")
    out = tmp_path / "hm"
    proc = subprocess.run(
        [FINE_YOLO, "heatmaps", "model=yolov8n-fine.yaml", f"source={images_dir}", "baseline=yolov8n.yaml",
         f"imgsz={IMGSZ}", f"out={out}", "cam=True"],
        env=offline_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "freshly initialised" in proc.stdout
    rec = json.loads((out / "heatmaps.json").read_text())
    assert rec["columns"] == ["F_high", "F_low", "M", "F_low_aligned", "baseline"]
    assert [i["name"] for i in rec["images"]] == ["img0", "img1", "wide"]
    for item in rec["images"]:
        assert [b["block"] for b in item["blocks"]] == ["fine11", "fine14"]
        for b, stride in zip(item["blocks"], (16, 8)):
            assert b["m_zero"] and b["aligned_is_low"] and b["max_abs_m"] == 0.0
            assert b["max_abs_aligned_minus_low"] == 0.0
            maps = b["maps"]
            assert maps["F_low"]["shape"] == [IMGSZ // stride] * 2
            assert maps["F_high"]["shape"] == [IMGSZ // (2 * stride)] * 2
            assert maps["M"]["min"] == maps["M"]["max"] == 0.0
            assert f"baseline layer {b['low']}" in maps
        # the grid: 2 block rows x 5 map columns (figure size 2.9 in per column, 3.1 in per row + title, 110 dpi)
        assert _png_size(Path(item["png"])) == (round(2.9 * 5 * 110), round((3.1 * 2 + 0.6) * 110))
        assert _png_size(Path(item["cam_png"])) == (round(3.2 * 3 * 110), round(3.6 * 110))
    assert "| fine11 (layer 6 <- 9, k=1) | 3 | 0 | 0 | yes |" in proc.stdout


def test_heatmaps_command_names_bad_input(tmp_path, capsys):
    from fine_yolo.cli import run_subcommand

    missing = tmp_path / "nope"
    assert run_subcommand("heatmaps", ["model=yolov8n-fine.yaml", f"source={missing}"]) == 1
    assert f"fine-yolo heatmaps: source={missing}: no such file or directory" in capsys.readouterr().err
    assert run_subcommand("heatmaps", ["model=yolov8n-fine.yaml", "source=x", "reduce=max"]) == 2
    assert "reduce=max" in capsys.readouterr().err
