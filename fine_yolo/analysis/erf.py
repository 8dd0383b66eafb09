"""Paper Fig. 6 and Appendix F for any FINE model: effective receptive fields (ERFs) of the tokens AATS pairs.

For each FINE block (a top-down fusion stage, its AATS kernel ``k``) and each sampling ratio ``r`` (default 1, 2, 4):

* the **low-level token**: ``AvgPool(F_low, r*k)`` (eq. 4) at a normalised anchor of the image (default (0.1, 0.1), the
  paper's Fig. 6; ``anchor=center`` for Appendix F's centre);
* the **high-level token**: ``AvgPool(F_high, k)`` at the same anchor, F_high after eq. 10 (the block's own
  ``proj_high`` applied to its high input), i.e. the keys/values the low token attends to. It does not depend on r.

Eq. 11: the ERF of a token ``y`` is ``g_{u,v} = |dy/dx_{u,v}|`` over the input image. The token is a C-vector; as in
Luo et al. (2016, the paper's [39]) the gradient of the *sum* of its channels is back-propagated (one backward pass
per token), and ``|.|`` is averaged over the three colour channels. Maps of several images are averaged for the
picture. Eq. 12: ``sigma`` is the standard deviation of an isotropic 2-D Gaussian fitted to each image's map
(:func:`fit_gaussian`: least squares, started from the map's moments), in input pixels, averaged over the images.
Eq. 13: ``E[sigma_high] / E[sigma_low]`` per stage and r. The paper's 2.29 (``fine_yolo.paper.ERF_RATIO_RESNET50``) is
that ratio for *unpooled* adjacent ResNet-50 stages at the centre; here r=1 at a k=1 stage is the unpooled
measurement (with ``anchor=center``), and r=2 is the ratio AATS works at.

The model runs in eval mode (BatchNorm running statistics, so images are independent) with parameters frozen; the
forward pass stops after the last FINE block's inputs exist. Works on a trained checkpoint and on a freshly built YAML;
the output says which (at init, W_O = 0 blocks every gradient through FINE's attention, so the ERFs are those of the
convolutional backbone and neck alone).

CLI: ``fine-yolo erf model=best.pt [source=DIR|fine-synth] [anchor=0.1,0.1|center] [r=1,2,4] [images=8] [imgsz=640]
[json=erf.json] [out=runs/erf]``; one PNG per stage (rows low/high, columns r, the anchor marked with a cyan X).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fine_yolo.analysis.block_maps import (
    SYNTH_SOURCE,
    AnalysisInputError,
    batches,
    block_inputs,
    load_images,
    load_model,
    to_tensor,
)
from fine_yolo.args import Command, Option, split_list
from fine_yolo.devices import set_torch_threads
from fine_yolo.errors import UsageError
from fine_yolo.paper import ERF_RATIO_RESNET50
from fine_yolo.tables import markdown_table


@dataclass
class GaussianFit:
    """Eq. 12: ``g ~ amplitude * exp(-|(u, v) - mu|^2 / (2 sigma^2))``; ``mu`` as (row, column) in pixels."""

    mu_y: float
    mu_x: float
    sigma: float
    amplitude: float
    method: str  # "lsq" or "moments" (when least squares failed or was not asked for)


def moments(g: np.ndarray) -> GaussianFit:
    """Isotropic Gaussian from the map's weighted moments: mu = E[p], sigma^2 = (Var_y + Var_x) / 2 under g / sum(g).

    Exact for any map whose per-axis variances are equal (a box: (L^2 - 1) / 12; n 3x3 box filters: 2n / 3).
    """
    g = np.asarray(g, dtype=np.float64)
    total = g.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("the ERF map is zero everywhere: no input pixel influences the token")
    ys, xs = np.indices(g.shape, dtype=np.float64)
    w = g / total
    my, mx = float((w * ys).sum()), float((w * xs).sum())
    var = float((w * ((ys - my) ** 2 + (xs - mx) ** 2)).sum()) / 2.0
    return GaussianFit(my, mx, math.sqrt(var), float(g.max()), "moments")


FIT_SIDE = 128  # least squares runs on at most FIT_SIDE x FIT_SIDE points (a crop, then bin means)


def fit_gaussian(g: np.ndarray, method: str = "lsq", max_side: int = FIT_SIDE) -> GaussianFit:
    """Eq. 12 fitted to a 2-D ERF map ``g`` (H, W): least squares (``lsq``, started from :func:`moments`) or moments.

    Least squares follows the map's core; moments weigh every pixel by its value, so a long faint tail (a trained
    network's ERF) inflates them. Falls back to moments when the fit does not converge. To keep a 640 x 640 map cheap
    the fit sees the crop where ``g`` exceeds 1e-3 of its peak (plus a margin) and, when that is still larger than
    ``max_side``, its b x b bin means; a bin mean is ``g`` convolved with a b-box, which adds ``(b^2 - 1) / 12`` to
    the variance per axis, subtracted again from the fitted sigma^2.
    """
    m = moments(g)
    if method == "moments":
        return m
    if method != "lsq":
        raise ValueError(f"method must be 'lsq' or 'moments', got {method!r}")
    from scipy.optimize import curve_fit

    g = np.asarray(g, dtype=np.float64)
    rows, cols = np.nonzero(g > 1e-3 * g.max())
    margin = int(math.ceil(2 * max(m.sigma, 1.0)))
    y0, x0 = max(rows.min() - margin, 0), max(cols.min() - margin, 0)
    crop = g[y0 : rows.max() + margin + 1, x0 : cols.max() + margin + 1]
    b = max(1, int(math.ceil(max(crop.shape) / max_side)))
    hb, wb = crop.shape[0] // b, crop.shape[1] // b
    if b > 1 and hb and wb:
        crop = crop[: hb * b, : wb * b].reshape(hb, b, wb, b).mean(axis=(1, 3))
    else:
        b = 1
    ys, xs = np.indices(crop.shape, dtype=np.float64)
    ys, xs = (ys * b + (b - 1) / 2 + y0).ravel(), (xs * b + (b - 1) / 2 + x0).ravel()  # bin centres in pixels
    scale = crop.max()
    target = crop.ravel() / scale

    def model(_, a, my, mx, s):
        return a * np.exp(-((ys - my) ** 2 + (xs - mx) ** 2) / (2.0 * s * s))

    def jac(_, a, my, mx, s):
        dy, dx = ys - my, xs - mx
        e = np.exp(-(dy * dy + dx * dx) / (2.0 * s * s))
        return np.stack([e, a * e * dy / s**2, a * e * dx / s**2, a * e * (dy * dy + dx * dx) / s**3], axis=1)

    try:
        (a, my, mx, s), _ = curve_fit(
            model, None, target, p0=(1.0, m.mu_y, m.mu_x, max(m.sigma, 0.5)), jac=jac,
            bounds=([0.0, -np.inf, -np.inf, 1e-3], [np.inf, np.inf, np.inf, np.inf]), maxfev=2000,
        )
    except (RuntimeError, ValueError):
        return m
    var = s * s - (b * b - 1) / 12.0
    return GaussianFit(float(my), float(mx), float(math.sqrt(max(var, 1e-6))), float(a * scale), "lsq")


def anchor_index(n: int, a: float) -> int:
    """Index of the token, among ``n`` along an axis, whose cell holds normalised coordinate ``a`` in [0, 1]."""
    return min(int(math.floor(a * n)), n - 1)


def anchor_token(feature: torch.Tensor, pool: int, anchor: tuple[float, float]
                 ) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """``AvgPool(feature, pool)`` (eq. 4, floor mode) at the normalised ``anchor`` (x, y).

    Returns the token (B, C), its (row, column) on the token grid and the grid's (rows, columns).
    """
    tokens = F.avg_pool2d(feature, pool) if pool > 1 else feature
    h, w = tokens.shape[-2:]
    if h == 0 or w == 0:
        raise AnalysisInputError(f"a {tuple(feature.shape[-2:])} map pooled by {pool} has no token: raise imgsz")
    iy, ix = anchor_index(h, anchor[1]), anchor_index(w, anchor[0])
    return tokens[:, :, iy, ix], (iy, ix), (h, w)


def input_gradient(token: torch.Tensor, x: torch.Tensor, retain_graph: bool = True) -> torch.Tensor:
    """Eq. 11: ``|d sum_c(token_c) / dx|`` averaged over the input's channels: (B, H, W) for ``x`` (B, 3, H, W).

    Images are independent (eval mode), so one backward pass of the batch sum gives every image's own gradient.
    """
    (grad,) = torch.autograd.grad(token.sum(), x, retain_graph=retain_graph)
    return grad.abs().mean(1)


@dataclass
class TokenERF:
    """The ERF of one token over a set of images: the mean map (H, W), per-image fits, the token's footprint.

    ``offsets`` tell whether eq. 12 describes the map: a fitted centre far from the token (a trained network whose
    high-level token responds to objects anywhere in the image) means one Gaussian does not, and sigma is the size
    of whatever blob the fit locked onto.
    """

    level: str  # "low" or "high"
    r: int | None  # None for the high token (it does not depend on r)
    pool: int  # the AvgPool kernel on its feature map
    token: tuple[int, int]
    grid: tuple[int, int]
    cell: tuple[float, float, float, float]  # the pooling window in input pixels: x0, y0, x1, y1
    mean_map: np.ndarray
    sigmas: list[float]
    offsets: list[float]  # per image: distance (px) of the fitted centre mu from the centre of the token's cell

    @property
    def sigma(self) -> float:
        return float(np.mean(self.sigmas))

    @property
    def offset(self) -> float:
        return float(np.mean(self.offsets))


def _cell(feature_hw: tuple[int, int], imgsz: tuple[int, int], pool: int, token: tuple[int, int]) -> tuple:
    sy, sx = imgsz[0] / feature_hw[0], imgsz[1] / feature_hw[1]  # the feature map's stride in pixels
    return (token[1] * pool * sx, token[0] * pool * sy, (token[1] + 1) * pool * sx, (token[0] + 1) * pool * sy)


def erf_study(model: str, source: str = SYNTH_SOURCE, anchor: tuple[float, float] = (0.1, 0.1),
              rs: tuple[int, ...] = (1, 2, 4), images: int = 8, imgsz: int = 640, batch: int = 4,
              method: str = "lsq", progress: bool = True) -> dict[str, Any]:
    """ERFs of the low/high tokens of every FINE block of ``model`` for every r; a JSON-ready record (maps apart).

    Returns ``{"model", "state", "trained", "imgsz", "anchor", "images", "records": [...], "stages": [...]}``;
    ``stages[i]["erfs"]`` holds the :class:`TokenERF` objects (not JSON) for the pictures.
    """
    imgs = load_images(source, imgsz, images)
    loaded = load_model(model)
    net = loaded.net
    frozen = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)  # only d/dx is wanted
    # per (block, level, r): the sum of the maps (for the mean picture) and each image's sigma, fitted at once, so
    # memory does not grow with the number of images
    sums: dict[tuple[int, str, int | None], np.ndarray] = {}
    fits: dict[tuple[int, str, int | None], list[GaussianFit]] = {}
    meta: dict[tuple[int, str, int | None], tuple] = {}
    try:
        bar = tqdm(total=len(imgs), desc="erf", unit="img", disable=not progress)
        for chunk in batches(imgs, max(1, batch)):
            x = to_tensor([im for _, im in chunk]).requires_grad_(True)
            inputs = block_inputs(net, x, loaded.blocks)
            for i, (b, (low, high)) in enumerate(zip(loaded.blocks, inputs)):
                k = b.module.k
                wanted = [("low", r, low, r * k) for r in rs] + [("high", None, b.module.proj_high(high), k)]
                for level, r, feature, pool in wanted:
                    token, idx, grid = anchor_token(feature, pool, anchor)
                    g = input_gradient(token, x).double().cpu().numpy()
                    key = (i, level, r)
                    sums[key] = sums[key] + g.sum(0) if key in sums else g.sum(0)
                    fits.setdefault(key, []).extend(fit_gaussian(one, method) for one in g)
                    meta[key] = (pool, idx, grid, _cell(feature.shape[-2:], x.shape[-2:], pool, idx))
            del inputs
            bar.update(len(chunk))
        bar.close()
    finally:
        for p, flag in zip(net.parameters(), frozen):
            p.requires_grad_(flag)

    stages, records = [], []
    for i, b in enumerate(loaded.blocks):
        erfs: dict[tuple[str, int | None], TokenERF] = {}
        for level, r in [("low", r) for r in rs] + [("high", None)]:
            key = (i, level, r)
            pool, idx, grid, cell = meta[key]
            fs = fits[key]
            cy, cx = (cell[1] + cell[3]) / 2 - 0.5, (cell[0] + cell[2]) / 2 - 0.5  # pixel centres are integers
            erfs[(level, r)] = TokenERF(level, r, pool, idx, grid, cell, sums[key] / len(fs), [f.sigma for f in fs],
                                        [math.hypot(f.mu_y - cy, f.mu_x - cx) for f in fs])
        high = erfs[("high", None)]
        for r in rs:
            low = erfs[("low", r)]
            records.append({
                "stage": b.name, "low": b.low, "high": b.high, "k": b.module.k, "r": r,
                "sigma_low": low.sigma, "sigma_high": high.sigma, "ratio": high.sigma / low.sigma,
                "sigma_low_per_image": low.sigmas, "sigma_high_per_image": high.sigmas,
                "offset_low": low.offset, "offset_high": high.offset,
                "low_pool": low.pool, "high_pool": high.pool, "low_token": list(low.token),
                "high_token": list(high.token), "low_grid": list(low.grid), "high_grid": list(high.grid),
            })
        stages.append({"stage": b.name, "label": b.label, "k": b.module.k, "erfs": erfs})
    return {"model": model, "state": loaded.state, "trained": loaded.trained, "imgsz": imgsz,
            "anchor": list(anchor), "method": method, "images": [n for n, _ in imgs], "source": source,
            "paper_ratio_resnet50": ERF_RATIO_RESNET50, "records": records, "stages": stages}


def view_window(stage: dict[str, Any], anchor: tuple[float, float], imgsz: int, zoom: bool) -> tuple[int, ...]:
    """Pixel window (x0, y0, x1, y1) every panel of a stage shows: the whole input, or (``zoom``) the square of
    half-side 3 x the stage's largest sigma (at least 2 token cells) around the anchor, clipped to the image."""
    if not zoom:
        return 0, 0, imgsz, imgsz
    erfs = stage["erfs"].values()
    half = max(3 * max(e.sigma for e in erfs), 2 * max(e.cell[2] - e.cell[0] for e in erfs))
    cx, cy = anchor[0] * imgsz, anchor[1] * imgsz
    x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
    x1, y1 = min(imgsz, int(math.ceil(cx + half))), min(imgsz, int(math.ceil(cy + half)))
    return x0, y0, x1, y1


def render_stage(stage: dict[str, Any], rs: tuple[int, ...], anchor: tuple[float, float], imgsz: int, path: Path,
                 suptitle: str, zoom: bool = True) -> None:
    """The paper's Fig. 6 for one stage: rows low/high token, columns r; cyan X at the anchor, dashed cyan square the
    token's pooling window, white circle the fitted sigma around the fitted centre. Linear colour scale, the peak of
    each panel's mean map = 1; every panel of the stage shows the same window (:func:`view_window`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    erfs = stage["erfs"]
    wx0, wy0, wx1, wy1 = view_window(stage, anchor, imgsz, zoom)
    fig, axes = plt.subplots(2, len(rs), figsize=(3.0 * len(rs), 6.6), squeeze=False, layout="constrained")
    for j, r in enumerate(rs):
        for i, (level, key) in enumerate((("low", ("low", r)), ("high", ("high", None)))):
            e: TokenERF = erfs[key]
            ax = axes[i, j]
            m = e.mean_map
            ax.imshow(m / m.max() if m.max() > 0 else m, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
            fit = fit_gaussian(m)
            x0, y0, x1, y1 = e.cell
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="cyan", ls="--", lw=1))
            ax.add_patch(Circle((fit.mu_x, fit.mu_y), e.sigma, fill=False, ec="white", lw=0.8))
            ax.plot([anchor[0] * imgsz - 0.5], [anchor[1] * imgsz - 0.5], marker="x", color="cyan", ms=9, mew=2)
            ax.set_xlim(wx0 - 0.5, wx1 - 0.5)
            ax.set_ylim(wy1 - 0.5, wy0 - 0.5)
            what = f"AvgPool(F_low, {e.pool})" if level == "low" else f"AvgPool(F_high, {e.pool})"
            ax.set_title(f"{level}, r={r}: {what}\nsigma = {e.sigma:.1f} px", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        ratio = erfs[("high", None)].sigma / erfs[("low", r)].sigma
        axes[1, j].set_xlabel(f"sigma_high / sigma_low = {ratio:.2f}", fontsize=8)
    where = "whole input" if (wx0, wy0, wx1, wy1) == (0, 0, imgsz, imgsz) else \
        f"input pixels x {wx0}..{wx1}, y {wy0}..{wy1} of {imgsz}x{imgsz}"
    fig.suptitle(f"{suptitle}\nshown: {where}; linear scale, peak = 1", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(record: dict[str, Any]) -> str:
    """Markdown: sigma_low, sigma_high and their ratio (eq. 13) per stage and r, the paper's ratio below."""
    cells = [[f"{r['stage']} (layer {r['low']} <- {r['high']})", r["k"], r["r"],
              f"AvgPool({r['low_pool']}) @ {tuple(r['low_token'])} of {r['low_grid'][0]}x{r['low_grid'][1]}",
              f"{r['sigma_low']:.1f}", f"{r['sigma_high']:.1f}", f"{r['ratio']:.2f}",
              f"{r['offset_low']:.0f} / {r['offset_high']:.0f}"] for r in record["records"]]
    cells.append(["paper, App. F (ResNet-50, COCO, unpooled adjacent stages, centre)", "-", "-", "-", "-", "-",
                  f"{record['paper_ratio_resnet50']:.2f}", "-"])
    return markdown_table(["stage", "k", "r", "low token", "sigma_low (px)", "sigma_high (px)",
                           "sigma_high / sigma_low", "fit centre off the token, low / high (px)"], cells)


def _json_record(record: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in record.items() if k != "stages"},
            "stages": [{"stage": s["stage"], "label": s["label"], "k": s["k"],
                        "tokens": [{**{k: v for k, v in asdict(e).items() if k != "mean_map"}, "sigma": e.sigma}
                                   for e in s["erfs"].values()]} for s in record["stages"]]}


def parse_anchor(value: str) -> tuple[float, float]:
    """``"0.1,0.1"`` -> (0.1, 0.1) as (x, y); ``"center"`` / ``"centre"`` -> (0.5, 0.5)."""
    if value in ("center", "centre"):
        return 0.5, 0.5
    a = split_list(value, "anchor", float)
    if len(a) != 2 or not all(0.0 <= v <= 1.0 for v in a):
        raise UsageError(f"argument 'anchor={value}' must be x,y in [0, 1] (e.g. 0.1,0.1) or center")
    return a[0], a[1]


def _run(args: dict, extra: dict) -> int:
    set_torch_threads(args["threads"])
    anchor = parse_anchor(str(args["anchor"]))
    rs = tuple(split_list(str(args["r"]), "r", int))
    if any(r < 1 for r in rs):
        raise UsageError(f"argument 'r={args['r']}' must be positive integers")
    record = erf_study(str(args["model"]), str(args["source"]), anchor, rs, int(args["images"]), int(args["imgsz"]),
                       int(args["batch"]), str(args["method"]))
    out = Path(str(args["out"]))
    how = f"{len(record['images'])} image(s) of {record['source']}, anchor {anchor}, imgsz {record['imgsz']}"
    for s in record["stages"]:
        render_stage(s, rs, anchor, int(args["imgsz"]), out / f"erf_{s['stage']}.png", zoom=bool(args["zoom"]),
                     suptitle=
                     f"{Path(str(args['model'])).name}: {record['state']}\n{s['label']}; {how}; "
                     f"|d token / d input| averaged over images")
    print(f"model: {record['state']}")
    print(f"ERF (eq. 11-13) over {how}; sigma by {record['method']} Gaussian fit, in input pixels")
    print(table(record))
    pictures = [str(out / f"erf_{s['stage']}.png") for s in record["stages"]]
    print(f"pictures: {', '.join(pictures)}")
    if args["json"]:
        Path(str(args["json"])).parent.mkdir(parents=True, exist_ok=True)
        Path(str(args["json"])).write_text(json.dumps(_json_record(record), indent=2))
    return 0


COMMAND = Command(
    options={
        "model": Option("", "FINE model: a checkpoint (best.pt) or a YAML (yolov8n-fine.yaml)", required=True),
        "source": Option(SYNTH_SOURCE, f"an image, a directory of images, or '{SYNTH_SOURCE}' (embedded val images)"),
        "anchor": Option("0.1,0.1", "token position x,y normalised to [0, 1] (paper Fig. 6), or center (App. F)"),
        "r": Option("1,2,4", "sampling ratios r (low token pooled by r*k)"),
        "images": Option(8, "images to average over (0: all of source)"),
        "imgsz": Option(640, "letterboxed input size (a multiple of 32)"),
        "batch": Option(4, "images per forward/backward pass"),
        "method": Option("lsq", "sigma of eq. 12: least-squares Gaussian fit or moments", choices=("lsq", "moments")),
        "json": Option("", "write one record per stage and r (r, sigma_low, sigma_high, ratio, ...) here"),
        "out": Option("runs/erf", "directory for the PNGs (one per stage)"),
        "zoom": Option(True, "show the window around the anchor (3 sigma) instead of the whole input"),
        "threads": Option(0, "torch CPU threads (0: torch's default)"),
    },
    run=_run,
    example="fine-yolo erf model=yolov8n-fine.yaml images=8 imgsz=640 json=erf.json",
    description="Paper Fig. 6 / App. F: ERF |d token / d input| of the AATS low token (AvgPool(F_low, r*k)) and high "
                "token (AvgPool(F_high, k)) at an anchor, for each r; sigma of eq. 12 and the eq. 13 ratio.",
)
