"""The "why" measurements of docs/fine_synth_study.md (issue 9 §4), on trained checkpoints of fine-synth runs.

    python research/fine_synth_why.py rf model=BASE.pt [layers=4,15] [images=20] [root=DATASET_DIR]
    python research/fine_synth_why.py activity model=FINE.pt [images=40] [root=DATASET_DIR]
    python research/fine_synth_why.py movement model=FINE.pt seed=S [pretrained=BASE.pt]

``rf`` — where a P3 feature looks. For up to 3 labelled objects per val image, the gradient of the L2 norm of the
feature vector at the object's cell (layer ``l``'s output) with respect to the input image, |.| summed over RGB, is
split by Chebyshev distance d from the cell centre: d <= 11 px (the largest blob, 16 px, plus its 3 px pad: the
object itself), 11 < d <= 20 (the rest of the CONTEXT_RADIUS window, where the class is decided), 20 < d <= 40 and
d > 40. Also the radii holding 50% and 90% of the mass and the extent where the gradient is non-zero (theoretical
receptive field, clipped by the image). Layer 4 is yolov8n's backbone P3, layer 15 the neck's P3 output (Detect's
stride-8 input).

``activity`` — what each FINE block does on the val images: mean |M^| (the token-grid modulation, M = M^ upsampled),
mean |W_O attn| (M^ without b_O), the spatial standard deviation of M^ over tokens (per channel, averaged: the part
that differs between places, i.e. context), ||F_aligned - F_low|| / ||F_low||, the attention's entropy divided by
log N (1 = uniform) and its largest weight times N (1 = uniform), and b_O / W_O / W_Q / W_KV norms.

``movement`` — ||W - W_init|| / ||W_init|| for every FINE tensor, with W_init rebuilt exactly as ultralytics' trainer
built it (same seed, same ``pretrained=``), and the median over the baseline's conv weights for scale.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fine_yolo.args import Command, Option


def _val_images(n: int, root: str = "") -> list[tuple[Path, np.ndarray]]:
    """The first ``n`` val images with their labels: of the dataset at ``root``, or of the embedded fine-synth."""
    from fine_yolo.data.synthetic import default_root, generate

    if root:
        root = Path(root)
    else:
        root = default_root()
        generate(root)  # no-op when the embedded dataset is already there
    out = []
    for p in sorted((root / "images" / "val").glob("*.png"))[:n]:
        text = (root / "labels" / "val" / f"{p.stem}.txt").read_text()
        rows = np.array([[float(v) for v in line.split()] for line in text.splitlines() if line.strip()])
        out.append((p, rows.reshape(-1, 5)))
    return out


def _tensor(path: Path):
    import cv2
    import torch

    im = cv2.imread(str(path))[:, :, ::-1].copy()  # BGR -> RGB, as ultralytics feeds the model
    return torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255


def receptive_field(model: str, layers: list[int], images: int, root: str = "") -> None:
    """Print the gradient-mass split of P3 features at object centres (see the module docstring)."""
    from ultralytics import YOLO

    net = YOLO(model).model.float().eval()
    mods = dict(net.model.named_children())
    acc: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {layer: [] for layer in layers}
    for path, rows in _val_images(images, root):
        x0 = _tensor(path)
        size = x0.shape[-1]
        yy, xx = np.mgrid[0:size, 0:size] + 0.5
        for row in rows[:3]:
            cx, cy = row[1] * size, row[2] * size
            for layer in layers:
                out: dict = {}
                hook = mods[str(layer)].register_forward_hook(lambda m, i, o, out=out: out.__setitem__("y", o))
                x = x0.clone().requires_grad_(True)
                net(x)
                hook.remove()
                y = out["y"]
                stride = size // y.shape[-1]
                i, j = int(cy // stride), int(cx // stride)
                y[0, :, i, j].norm().backward()
                g = x.grad[0].abs().sum(0).numpy()
                d = np.maximum(abs(yy - (i + 0.5) * stride), abs(xx - (j + 0.5) * stride))
                acc[layer].append((g, d))
    for layer in layers:
        shares, r50, r90, extent = [], [], [], []
        for g, d in acc[layer]:
            m = g.sum()
            shares.append([g[d <= 11].sum() / m, g[(d > 11) & (d <= 20)].sum() / m,
                           g[(d > 20) & (d <= 40)].sum() / m, g[d > 40].sum() / m])
            order = np.argsort(d.ravel())
            cum = np.cumsum(g.ravel()[order]) / m
            r50.append(d.ravel()[order][np.searchsorted(cum, 0.5)])
            r90.append(d.ravel()[order][np.searchsorted(cum, 0.9)])
            extent.append(d[g > g.max() * 1e-6].max())
        s = np.mean(shares, axis=0)
        print(f"layer {layer}: {len(shares)} objects; gradient mass d<=11 {s[0]:.3f}, 11<d<=20 {s[1]:.3f}, "
              f"20<d<=40 {s[2]:.3f}, d>40 {s[3]:.3f}; median r50 {np.median(r50):.1f} px, r90 {np.median(r90):.1f} px, "
              f"non-zero extent {np.median(extent):.0f} px")


def activity(model: str, images: int, root: str = "") -> None:
    """Print, per FINE block, how large and how place-dependent its modulation is (see the module docstring)."""
    import torch
    import torch.nn.functional as F
    from ultralytics import YOLO

    from fine_yolo.nn.fine import FINE

    net = YOLO(model).model.float().eval()
    blocks = {n: m for n, m in net.model.named_children() if isinstance(m, FINE)}
    if not blocks:
        raise SystemExit(f"{model}: no FINE block")
    stats: dict[str, dict[str, list[float]]] = {n: {} for n in blocks}

    def add(name: str, key: str, value: float) -> None:
        stats[name].setdefault(key, []).append(value)

    def observe(name: str, m: FINE, low, high) -> None:
        gain = m._gain(low, high)
        mh = gain - 1
        add(name, "mean|M|", mh.abs().mean().item())
        add(name, "mean|W_O attn|", (mh - m.out.bias[None, :, None, None]).abs().mean().item())
        add(name, "token std of M", mh.flatten(2).std(-1).mean().item())
        xl = m.pool_low(low).flatten(2).transpose(1, 2)
        xh = m.pool_high(high).flatten(2).transpose(1, 2)
        if isinstance(m.proj_high, torch.nn.Conv2d):
            xh = F.linear(xh, m.proj_high.weight.flatten(1), m.proj_high.bias)
        q = F.linear(xl, m.q.weight.flatten(1), m.q.bias).view(1, -1, m.heads, m.head_dim).transpose(1, 2)
        k = F.linear(xh, m.kv.weight.flatten(1), m.kv.bias).view(1, -1, 2, m.heads, m.head_dim)[:, :, 0]
        a = torch.softmax(q @ k.permute(0, 2, 3, 1) / m.head_dim**0.5, -1)
        n = a.shape[-1]
        add(name, "attn entropy / log N", ((-(a * a.clamp_min(1e-12).log()).sum(-1)) / np.log(n)).mean().item())
        add(name, "max weight x N", (a.max(-1).values * n).mean().item())

    def hook(name: str):
        def fn(m, inputs, output):
            low, high = inputs[0] if len(inputs) == 1 else inputs
            observe(name, m, low, high)
            add(name, "||F_aligned - F_low|| / ||F_low||", ((output - low).norm() / low.norm()).item())

        return fn

    for name, m in blocks.items():
        m.register_forward_hook(hook(name))
    with torch.no_grad():
        for path, _ in _val_images(images, root):
            net(_tensor(path))
    for name, m in blocks.items():
        b = m.out.bias.detach()
        parts = [f"{k} {np.mean(v):.4f}" for k, v in stats[name].items()]
        parts += [f"b_O in [{b.min():+.4f}, {b.max():+.4f}]", f"||W_O|| {m.out.weight.norm():.3f}",
                  f"||W_Q|| {m.q.weight.norm():.3f}", f"||W_KV|| {m.kv.weight.norm():.3f}"]
        print(f"{name} (c_low={m.c_low}): " + ", ".join(parts))


def movement(model: str, seed: int, pretrained: str) -> None:
    """Print how far each FINE tensor moved from the initialisation ultralytics' trainer gave it."""
    import tempfile

    from ultralytics import YOLO

    class _Stop(Exception):
        pass

    captured = {}

    def grab(trainer):
        captured.update({k: v.detach().clone().float() for k, v in trainer.model.state_dict().items()})
        raise _Stop

    trained_model = YOLO(model)
    yaml_file = trained_model.model.yaml.get("yaml_file", "yolov8n-fine.yaml")
    builder = YOLO(yaml_file)
    builder.add_callback("on_pretrain_routine_end", grab)
    extra = {"pretrained": pretrained} if pretrained else {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            builder.train(data="fine-synth.yaml", epochs=1, imgsz=256, batch=16, workers=0, device="cpu",
                          plots=False, seed=seed, deterministic=True, project=tmp, name="init", verbose=False, **extra)
        except _Stop:
            pass
    trained = {k: v.float() for k, v in trained_model.model.state_dict().items()}
    for k in sorted(k for k in captured if ".fine" in k):
        a, b = captured[k], trained[k]
        rel = f"{((b - a).norm() / a.norm()).item():.4f}" if a.norm() > 0 else "- (starts at 0)"
        print(f"{k:30s} ||init|| {a.norm():8.4f}  ||trained|| {b.norm():8.4f}  ||moved|| {(b - a).norm():8.4f}  "
              f"relative {rel}")
    base = [((trained[k] - v).norm() / v.norm()).item() for k, v in captured.items()
            if ".fine" not in k and k.endswith("conv.weight") and v.norm() > 0]
    print(f"baseline conv weights: median relative movement {np.median(base):.4f}")


COMMAND = Command(
    options={
        "model": Option("", "checkpoint to analyse", required=True),
        "layers": Option("4,15", "rf: layer indices whose outputs are probed"),
        "images": Option(20, "val images used"),
        "root": Option("", "dataset folder whose val images are used (default: the embedded fine-synth)"),
        "seed": Option(0, "movement: the run's seed"),
        "pretrained": Option("", "movement: the run's pretrained= checkpoint"),
    },
    run=lambda a, e: 0,
    example="python research/fine_synth_why.py rf model=runs/fine_demo/base/weights/best.pt",
    description=__doc__.split("\n\n")[0],
)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("rf", "activity", "movement") or COMMAND.wants_help(argv):
        print(__doc__ + "\n" + COMMAND.usage("python research/fine_synth_why.py rf|activity|movement"))
        return 0 if argv and COMMAND.wants_help(argv) else 2
    args, _ = COMMAND.parse(argv[1:])
    if argv[0] == "rf":
        receptive_field(args["model"], [int(v) for v in str(args["layers"]).split(",")], args["images"], args["root"])
    elif argv[0] == "activity":
        activity(args["model"], args["images"], args["root"])
    else:
        movement(args["model"], args["seed"], args["pretrained"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
