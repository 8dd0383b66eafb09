"""Paper Fig. 8 for any FINE model: the four maps of every FINE block, overlaid on the input image.

For each image and each FINE block (rows), four columns as in the paper's figure:

* **F_high** after eq. 10: the block's ``proj_high`` (1x1 projection to the low map's channels) applied to its high
  input, at the high map's own resolution (stride ``r`` times coarser than F_low);
* **F_low**: the block's low input;
* **M**, the modulation map of eq. 8: the block's ``gain_tap`` sees ``1 + M^`` on the token grid
  (B, C, H // rk, W // rk); M is that minus 1, upsampled nearest by ``rk = r * k`` (blocky by construction);
* **F_low_aligned**, eq. 9: the block's output ``F_low * M + F_low``;

plus, with ``baseline=``, the baseline model's output at the same layer (the layer FINE refines: a FINE YAML keeps the
baseline's layer indices, so baseline layer ``low`` is the map that feeds the same Concat without FINE).

Every map is reduced over channels to one value per pixel (``reduce=mean``: mean |x| over channels, the paper does not
say which; ``reduce=l2``: the L2 norm over channels) and min-max normalised *per map* (each panel's own range; the
range is printed in its title), then drawn with a colour map over the letterboxed input (ultralytics' ``LetterBox``,
what ``yolo predict`` feeds the model). A constant map (M of an untrained block is exactly 0) is drawn as zero and
its title says so instead of dividing by a zero range. All maps are captured with hooks on the real model
(:mod:`fine_yolo.analysis.block_maps`), not recomputed.

``cam=True`` adds a detector-level class activation map per image: EigenCAM (Muhammad & Yeasin 2020, the first
principal component of the activations, no gradients and no class target) from the maintained ``grad-cam`` package
(``pytorch_grad_cam``), computed on the inputs of the detection head for the FINE model and the baseline.

CLI: ``fine-yolo heatmaps model=best.pt source=images/ [baseline=base.pt] [imgsz=640] [out=DIR] [reduce=mean|l2]``.
Writes ``DIR/<image>.png`` (and ``DIR/<image>_cam.png``) and ``DIR/heatmaps.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from fine_yolo.analysis.block_maps import (
    SYNTH_SOURCE,
    AnalysisInputError,
    BlockMaps,
    LoadedModel,
    batches,
    capture,
    layer,
    layer_outputs,
    load_images,
    load_model,
    to_tensor,
)
from fine_yolo.args import Command, Option
from fine_yolo.devices import set_torch_threads
from fine_yolo.tables import markdown_table

REDUCTIONS = ("mean", "l2")
COLUMNS = ("F_high", "F_low", "M", "F_low_aligned")
TITLES = {"F_high": "F_high (eq. 10)", "F_low": "F_low", "M": "M (eq. 8)", "F_low_aligned": "F_low_aligned (eq. 9)"}


def reduce_channels(t: torch.Tensor, how: str = "mean") -> np.ndarray:
    """(B, C, H, W) -> (B, H, W) float64: mean |x| over channels (``mean``) or the L2 norm over channels (``l2``)."""
    if how == "mean":
        r = t.abs().mean(1)
    elif how == "l2":
        r = t.norm(dim=1)
    else:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {how!r}")
    return r.detach().double().cpu().numpy()


def normalise(m: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Min-max normalise a 2-D map to [0, 1]; return it with the map's (min, max). A constant map becomes zeros."""
    lo, hi = float(m.min()), float(m.max())
    if hi <= lo:  # constant (e.g. M = 0 at init): nothing to scale, no division by a zero range
        return np.zeros_like(m), lo, hi
    return (m - lo) / (hi - lo), lo, hi


def block_columns(maps: BlockMaps, how: str) -> dict[str, np.ndarray]:
    """The reduced maps of one block, (B, h, w) each, keyed by :data:`COLUMNS`."""
    return {"F_high": reduce_channels(maps.f_high, how), "F_low": reduce_channels(maps.low, how),
            "M": reduce_channels(maps.m, how), "F_low_aligned": reduce_channels(maps.aligned, how)}


def _title(col: str, m: np.ndarray, lo: float, hi: float, how: str, exact: dict[str, bool]) -> str:
    name = TITLES.get(col, col)
    size = f"{m.shape[0]}x{m.shape[1]}"
    if col == "M" and exact["m_zero"]:
        return f"{name}\nM = 0 everywhere (identity)"
    if col == "F_low_aligned" and exact["aligned_is_low"]:
        return f"{name}\n= F_low exactly, {size}"
    if hi <= lo:
        return f"{name}\nconstant {lo:.3g}, {size}"
    stat = "mean|x|" if how == "mean" else "L2"
    return f"{name}\n{size}, {stat} {_span(lo, hi)}"


def _span(lo: float, hi: float) -> str:
    """``lo..hi`` with as few significant digits (2 to 6) as tell them apart: a narrow M reads 0.00917..0.00923."""
    for digits in range(2, 7):
        a, b = f"{lo:.{digits}g}", f"{hi:.{digits}g}"
        if a != b:
            return f"{a}..{b}"
    return f"{a}..{b}"


def render_grid(image_bgr: np.ndarray, rows: list[dict[str, Any]], path: Path, how: str, suptitle: str) -> None:
    """One PNG: a row per block, a column per map (dict key order), each map normalised and overlaid on the image.

    ``rows``: ``{"label": str, "maps": {column: (h, w) array}, "exact": {"m_zero": bool, "aligned_is_low": bool}}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = image_bgr[..., ::-1]
    h, w = rgb.shape[:2]
    ncols = max(len(r["maps"]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.9 * ncols, 3.1 * len(rows) + 0.6), squeeze=False,
                             layout="constrained")
    for i, row in enumerate(rows):
        for j, (col, m) in enumerate(row["maps"].items()):
            ax = axes[i, j]
            norm, lo, hi = normalise(m)
            ax.imshow(rgb)
            ax.imshow(norm, cmap="jet", vmin=0, vmax=1, alpha=0.5, extent=(0, w, h, 0), interpolation="nearest")
            ax.set_title(_title(col, m, lo, hi, how, row["exact"]), fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row["label"], fontsize=8)
        for j in range(len(row["maps"]), ncols):
            axes[i, j].axis("off")
    fig.suptitle(suptitle, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------------
# EigenCAM (grad-cam)


def _head_layers(net: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers whose outputs the detection head reads (Detect.f: positions in the model's Sequential)."""
    head = net.model[-1]
    f = [head.f] if isinstance(head.f, int) else list(head.f)
    return [net.model[j if j >= 0 else len(net.model) - 1 + j] for j in f]


def eigen_cam(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """EigenCAM (``pytorch_grad_cam.EigenCAM``) on the detection head's inputs: (B, H, W) in [0, 1].

    EigenCAM needs no gradient and no class target (``targets=[]`` skips grad-cam's classifier arg-max); grad-cam
    projects each layer on its first principal component, scales it to the input size and averages the layers.
    """
    try:
        from pytorch_grad_cam import EigenCAM
    except ImportError:
        raise AnalysisInputError(
            "cam=True needs the grad-cam package (pip install 'fine-yolo[cam]' or pip install grad-cam)"
        ) from None
    with EigenCAM(net, _head_layers(net)) as cam:
        return np.asarray(cam(x, targets=[]))


# ---------------------------------------------------------------------------------------------------------------------
# The command


def heatmaps(model: str, source: str, baseline: str = "", imgsz: int = 640, out: str | Path = "runs/heatmaps",
             how: str = "mean", batch: int = 8, images: int = 0, cam: bool = False, progress: bool = True
             ) -> dict[str, Any]:
    """Write one PNG per image (and ``heatmaps.json``) under ``out``; return the JSON record."""
    if how not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}")
    imgs = load_images(source, imgsz, images)  # first: a bad source is named before any model is built
    fine = load_model(model)
    base: LoadedModel | None = load_model(baseline, need_fine=False) if baseline else None
    if base is not None:
        for b in fine.blocks:
            layer(base.net, b.low)  # names the missing layer before any work
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"model": model, "state": fine.state, "baseline": baseline or None,
                              "baseline_state": base.state if base else None, "imgsz": imgsz, "reduce": how,
                              "columns": [*COLUMNS, *(["baseline"] if base else [])], "images": []}
    bar = tqdm(total=len(imgs), desc="heatmaps", unit="img", disable=not progress)
    for chunk in batches(imgs, max(1, batch)):
        x = to_tensor([im for _, im in chunk])
        maps = capture(fine.net, x, fine.blocks)
        base_maps = layer_outputs(base.net, x, [b.low for b in fine.blocks]) if base else {}
        cams = (eigen_cam(fine.net, x), eigen_cam(base.net, x) if base else None) if cam else None
        for n, (name, img) in enumerate(chunk):
            rows, entries = [], []
            for b, bm in zip(fine.blocks, maps):
                cols = {c: v[n] for c, v in block_columns(bm, how).items()}
                exact = {"m_zero": bool((bm.m[n] == 0).all()),
                         "aligned_is_low": bool(torch.equal(bm.aligned[n], bm.low[n]))}
                if base is not None:
                    fb = base_maps[b.low]
                    if tuple(fb.shape[1:]) != tuple(bm.low.shape[1:]):
                        raise AnalysisInputError(
                            f"baseline={baseline}: layer {b.low} is {tuple(fb.shape[1:])}, but {b.name} refines a "
                            f"{tuple(bm.low.shape[1:])} map there: not the baseline of {model}")
                    cols[f"baseline layer {b.low}"] = reduce_channels(fb[n : n + 1], how)[0]
                rows.append({"label": b.label, "maps": cols, "exact": exact})
                entries.append({
                    "block": b.name, "low": b.low, "high": b.high, "k": b.module.k, "r": b.module.r, **exact,
                    "max_abs_m": float(bm.m[n].abs().max()),
                    "max_abs_aligned_minus_low": float((bm.aligned[n] - bm.low[n]).abs().max()),
                    "maps": {c: {"shape": list(v.shape), "min": float(v.min()), "max": float(v.max())}
                             for c, v in cols.items()},
                })
            png = out / f"{name}.png"
            how_text = "mean |x| over channels" if how == "mean" else "L2 norm over channels"
            base_text = f"; baseline: {base.state}" if base else ""
            render_grid(img, rows, png, how,
                        f"{name}: {fine.state}{base_text}\n{how_text}, each map normalised to its own range")
            item: dict[str, Any] = {"name": name, "png": str(png), "blocks": entries}
            if cams is not None:
                cam_png = out / f"{name}_cam.png"
                _render_cam(img, cams[0][n], None if cams[1] is None else cams[1][n], cam_png, model, baseline)
                item["cam_png"] = str(cam_png)
            record["images"].append(item)
            bar.update(1)
    bar.close()
    (out / "heatmaps.json").write_text(json.dumps(record, indent=2))
    return record


def _render_cam(image_bgr: np.ndarray, fine_cam: np.ndarray, base_cam: np.ndarray | None, path: Path,
                fine_name: str, base_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("input (letterboxed)", None), (f"FINE: {fine_name}", fine_cam)]
    if base_cam is not None:
        panels.append((f"baseline: {base_name}", base_cam))
    rgb = image_bgr[..., ::-1]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False, layout="constrained")
    for ax, (title, cam) in zip(axes[0], panels):
        ax.imshow(rgb)
        if cam is not None:
            ax.imshow(cam, cmap="jet", vmin=0, vmax=1, alpha=0.5)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("detection-head inputs, first principal component (grad-cam EigenCAM)", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(record: dict[str, Any]) -> str:
    """Markdown: per block, the largest |M| and |F_low_aligned - F_low| over the images."""
    by_block: dict[str, list[dict]] = {}
    for item in record["images"]:
        for e in item["blocks"]:
            by_block.setdefault(e["block"], []).append(e)
    cells = []
    for name, es in by_block.items():
        e0 = es[0]
        cells.append([f"{name} (layer {e0['low']} <- {e0['high']}, k={e0['k']})", len(es),
                      f"{max(e['max_abs_m'] for e in es):.4g}",
                      f"{max(e['max_abs_aligned_minus_low'] for e in es):.4g}",
                      "yes" if all(e["m_zero"] for e in es) else "no"])
    return markdown_table(["block", "images", "max |M|", "max |aligned - F_low|", "M = 0 (identity)"], cells)


def _run(args: dict, extra: dict) -> int:
    set_torch_threads(args["threads"])
    record = heatmaps(str(args["model"]), str(args["source"]), str(args["baseline"]), int(args["imgsz"]),
                      str(args["out"]), str(args["reduce"]), int(args["batch"]), int(args["images"]),
                      bool(args["cam"]))
    print(f"model: {record['state']}")
    if record["baseline"]:
        print(f"baseline: {record['baseline_state']}")
    print(summary(record))
    print(f"{len(record['images'])} image(s) -> {Path(str(args['out'])) / 'heatmaps.json'} and one PNG each")
    return 0


COMMAND = Command(
    options={
        "model": Option("", "FINE model: a checkpoint (best.pt) or a YAML (yolov8n-fine.yaml)", required=True),
        "source": Option("", f"an image, a directory of images, or '{SYNTH_SOURCE}' (embedded val images)",
                         required=True),
        "baseline": Option("", "baseline model: adds a column with its map at the layer FINE refines"),
        "imgsz": Option(640, "letterboxed input size (a multiple of 32)"),
        "out": Option("runs/heatmaps", "output directory (one PNG per image, heatmaps.json)"),
        "reduce": Option("mean", "channel reduction: mean |x| or the L2 norm", choices=REDUCTIONS),
        "batch": Option(8, "images per forward pass"),
        "images": Option(0, "use at most this many images (0: all)"),
        "cam": Option(False, "also EigenCAM of the detection head, FINE vs baseline (needs grad-cam)"),
        "threads": Option(0, "torch CPU threads (0: torch's default)"),
    },
    run=_run,
    example="fine-yolo heatmaps model=runs/detect/train/weights/best.pt source=images/ baseline=yolov8s.pt imgsz=640",
    description="Paper Fig. 8: F_high (eq. 10), F_low, M (eq. 8) and F_low_aligned (eq. 9) of every FINE block, "
                "captured with hooks on the real model, one PNG grid per image.",
)
