"""``fine-yolo erf`` (paper Fig. 6, App. F eq. 11-13) on cases with a known answer: stacks of average pools whose ERF
is analytic, Gaussian maps of known sigma, then the command end to end on a tiny FINE model."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import offline_env

from fine_yolo.analysis.erf import (
    anchor_index,
    anchor_token,
    erf_study,
    fit_gaussian,
    input_gradient,
    moments,
    parse_anchor,
)
from fine_yolo.errors import UsageError

FINE_YOLO = str(Path(sys.executable).parent / "fine-yolo")


def _erf(net, size: int, pool: int, anchor: tuple[float, float], channels: int = 1) -> tuple[np.ndarray, tuple]:
    x = torch.rand(1, channels, size, size, dtype=torch.float64, requires_grad=True)
    token, idx, _ = anchor_token(net(x), pool, anchor)
    return input_gradient(token, x, retain_graph=False)[0].numpy(), idx


@pytest.mark.parametrize("n", [1, 3])
def test_stacked_2x2_pools_give_a_uniform_box(n):
    """n 2x2/stride-2 average pools: a token sees exactly a 2^n x 2^n box of the input, each pixel with 4^-n."""
    def net(x):
        for _ in range(n):
            x = F.avg_pool2d(x, 2)
        return x

    side = 2**n
    g, (iy, ix) = _erf(net, 64, 1, (0.5, 0.3))
    rows, cols = 64 // side, 64 // side
    assert (iy, ix) == (math.floor(0.3 * rows), math.floor(0.5 * cols))
    box = np.zeros((64, 64))
    box[iy * side : (iy + 1) * side, ix * side : (ix + 1) * side] = 4.0**-n
    assert np.allclose(g, box, rtol=0, atol=1e-15)
    # moments of a uniform L-box: variance (L^2 - 1) / 12 per axis, centre in the box's middle
    m = moments(g)
    assert m.sigma == pytest.approx(math.sqrt((side**2 - 1) / 12), rel=1e-12)
    assert (m.mu_y, m.mu_x) == pytest.approx((iy * side + (side - 1) / 2, ix * side + (side - 1) / 2))


def test_token_pooling_widens_the_box():
    """AvgPool(F, p) on top of 2 stacked 2x2 pools: the token's box is 4p wide, each pixel 1 / (4p)^2."""
    def net(x):
        return F.avg_pool2d(F.avg_pool2d(x, 2), 2)

    # 3 colour channels, pooled separately: the token sums them, each channel's gradient is 1/64, |.| is averaged
    g, (iy, ix) = _erf(net, 64, 2, (0.1, 0.1), channels=3)
    assert (iy, ix) == (0, 0)  # 0.1 of an 8x8 token grid (64 / 4 / 2)
    box = np.zeros((64, 64))
    box[:8, :8] = 1 / 64
    assert np.allclose(g, box, atol=1e-15)


def _box3_stack(n: int):
    def net(x):
        for _ in range(n):
            x = F.avg_pool2d(x, 3, stride=1)
        return x
    return net


def test_stacked_3x3_pools_are_a_convolution_of_boxes():
    """n 3x3 stride-1 pools: the ERF is the n-fold convolution of a 3-box (per axis), variance 2n/3 per axis."""
    n, size = 6, 41
    g, (iy, ix) = _erf(_box3_stack(n), size, 1, (0.5, 0.5))
    k1 = np.array([1.0])
    for _ in range(n):
        k1 = np.convolve(k1, np.ones(3) / 3)  # reference written here: 1-D kernel of the stack
    ref = np.zeros((size, size))
    ref[iy : iy + 2 * n + 1, ix : ix + 2 * n + 1] = np.outer(k1, k1)  # output (i, j) sees input i..i+2n
    assert np.allclose(g, ref, atol=1e-15)
    assert moments(g).sigma == pytest.approx(math.sqrt(2 * n / 3), rel=1e-12)
    # the least-squares Gaussian (eq. 12) of a 6-fold box convolution is already close to it (CLT)
    assert fit_gaussian(g).sigma == pytest.approx(math.sqrt(2 * n / 3), rel=0.05)


def test_token_pool_adds_its_box_variance():
    """A 2x2 token pool on top adds a 2-box's variance 1/4 per axis: sigma^2 = 2n/3 + 1/4."""
    n = 4
    g, _ = _erf(_box3_stack(n), 40, 2, (0.5, 0.5))
    assert moments(g).sigma ** 2 == pytest.approx(2 * n / 3 + 0.25, rel=1e-12)


@pytest.mark.parametrize(("side", "sigma", "centre"), [(64, 5.0, (20.0, 30.5)), (640, 40.0, (300.3, 200.7)),
                                                       (640, 2.5, (64.0, 600.0))])
def test_fit_recovers_a_gaussian(side, sigma, centre):
    """Eq. 12 on a synthetic Gaussian gradient map (the 640 px maps exercise the crop and the bin correction)."""
    ys, xs = np.indices((side, side))
    g = 3e-7 * np.exp(-((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2) / (2 * sigma**2))
    fit = fit_gaussian(g)
    assert fit.method == "lsq"
    assert fit.sigma == pytest.approx(sigma, rel=2e-3)
    assert (fit.mu_y, fit.mu_x) == pytest.approx(centre, abs=0.05)
    assert fit.amplitude == pytest.approx(3e-7, rel=1e-2)


def test_fit_follows_the_core_where_moments_follow_the_tail():
    """A Gaussian core on a faint flat floor: least squares keeps sigma, the moments are pulled far out."""
    ys, xs = np.indices((200, 200))
    g = np.exp(-((ys - 100) ** 2 + (xs - 100) ** 2) / (2 * 6.0**2)) + 0.002
    assert fit_gaussian(g).sigma == pytest.approx(6.0, rel=0.05)
    assert moments(g).sigma > 20


def test_zero_map_is_an_error():
    with pytest.raises(ValueError, match="zero everywhere"):
        fit_gaussian(np.zeros((8, 8)))


def test_anchor_parsing_and_index():
    assert parse_anchor("center") == (0.5, 0.5) and parse_anchor("0.2,0.7") == (0.2, 0.7)
    for bad in ("0.1", "1.5,0.1", "a,b"):
        with pytest.raises(UsageError, match="anchor"):
            parse_anchor(bad)
    assert [anchor_index(n, 0.1) for n in (4, 10, 16, 80)] == [0, 1, 1, 8]
    assert anchor_index(5, 1.0) == 4  # the last token holds the image's edge


def test_study_on_a_fresh_model():
    rec = erf_study("yolov8n-fine.yaml", "fine-synth", (0.1, 0.1), (1, 2, 4), images=2, imgsz=64, batch=2,
                    progress=False)
    assert not rec["trained"] and "freshly initialised" in rec["state"]
    assert [(r["stage"], r["k"], r["r"]) for r in rec["records"]] == [
        ("fine11", 1, 1), ("fine11", 1, 2), ("fine11", 1, 4), ("fine14", 2, 1), ("fine14", 2, 2), ("fine14", 2, 4)]
    for r in rec["records"]:
        assert r["low_pool"] == r["r"] * r["k"] and r["high_pool"] == r["k"]
        assert r["ratio"] == pytest.approx(r["sigma_high"] / r["sigma_low"])
        assert r["sigma_low"] == pytest.approx(np.mean(r["sigma_low_per_image"]))
        assert len(r["sigma_low_per_image"]) == 2
        # an untrained network's low-level ERF is local: its fitted centre lies within one token cell of the token
        assert r["offset_low"] < 64 / r["low_grid"][0]
    for stage in ("fine11", "fine14"):
        rs = [r for r in rec["records"] if r["stage"] == stage]
        assert len({r["sigma_high"] for r in rs}) == 1  # the high token does not depend on r
        assert rs[0]["sigma_low"] < rs[2]["sigma_low"]  # pooling 4x more of F_low widens its token's ERF


def test_erf_command_end_to_end(tmp_path):
    out, js = tmp_path / "erf", tmp_path / "erf.json"
    proc = subprocess.run(
        [FINE_YOLO, "erf", "model=yolov8n-fine.yaml", "imgsz=64", "images=2", "r=1,2", "anchor=center",
         f"json={js}", f"out={out}"],
        env=offline_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "freshly initialised" in proc.stdout and "2.29" in proc.stdout  # the paper's eq. 13 ratio beside ours
    rec = json.loads(js.read_text())
    assert rec["anchor"] == [0.5, 0.5] and rec["trained"] is False
    assert len(rec["records"]) == 4
    for r in rec["records"]:
        assert {"r", "sigma_low", "sigma_high", "stage", "k", "ratio"} <= set(r)
        assert r["sigma_low"] > 0 and r["sigma_high"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["erf_fine11.png", "erf_fine14.png"]


def test_erf_command_names_a_bad_anchor(capsys):
    from fine_yolo.cli import run_subcommand

    assert run_subcommand("erf", ["model=yolov8n-fine.yaml", "anchor=2,0"]) == 2
    assert "fine-yolo erf: argument 'anchor=2,0' must be x,y in [0, 1]" in capsys.readouterr().err
