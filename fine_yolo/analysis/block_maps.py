"""What the analysis commands (``fine-yolo heatmaps``, ``fine-yolo erf``) share: the model, its FINE blocks, the
letterboxed input images, and the block's maps captured with hooks on the real model.

Nothing here re-implements the block. :func:`capture` reads every FINE block through its documented taps
(:mod:`fine_yolo.analysis.taps`: its ``low`` and ``high`` inputs and its output, eq. 9, and the gain map ``1 + M^`` on
the token grid that its ``gain_tap`` sees) to get the modulation map; F_high after eq. 10 is the block's own
``proj_high`` applied to its ``high`` input.

Layer indices. A FINE model's layers are its upstream baseline's, index for index (:mod:`fine_yolo.glue.fine_rows`);
each FINE block sits inside its fusion row i (``model.<i>.fine``, :class:`fine_yolo.nn.fusion.FINEConcat`), is named
``fine<i>`` here, and reads the layers ``fine_from`` names, so a baseline model's layer ``low`` is the map FINE
refines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fine_yolo.analysis.taps import StopForward, record, removing
from fine_yolo.errors import FineYoloError, UsageError

SYNTH_SOURCE = "fine-synth"  # source= keyword: images of the embedded dataset, rendered in memory


class AnalysisInputError(FineYoloError):
    """A model or image source the analysis commands cannot use; the message names it."""


@dataclass
class Block:
    """One FINE block of a built model.

    ``position`` is its fusion row's index; ``low``/``high`` (= ``low_pos``/``high_pos``: indices and positions are
    one since nothing is renumbered) are the layers it reads (``FINEConcat.fine_from``).
    """

    name: str
    module: nn.Module
    position: int
    low_pos: int
    high_pos: int
    low: int
    high: int

    @property
    def label(self) -> str:
        m = self.module
        return f"{self.name} (layer {self.low} <- {self.high}, k={m.k}, r={m.r})"


@dataclass
class LoadedModel:
    """The ``nn.Module`` of a YAML or checkpoint and what it is (``trained`` is False for a YAML)."""

    name: str
    net: nn.Module
    trained: bool
    state: str  # one line for people: "freshly initialised from the YAML" / "checkpoint ..., epoch N"
    blocks: list[Block] = field(default_factory=list)


def load_model(model: str, need_fine: bool = True) -> LoadedModel:
    """Build ``model`` (a YAML ultralytics or this package knows, or a ``.pt`` checkpoint) in eval mode, float32.

    Raises:
        AnalysisInputError: the model cannot be built, or (``need_fine``) has no FINE block.
    """
    from fine_yolo.models import build

    try:
        wrapper = build(model)
    except FineYoloError:
        raise
    except Exception as e:  # ultralytics raises FileNotFoundError, AttributeError, ... for a bad name or file
        raise AnalysisInputError(f"model={model}: cannot build it ({type(e).__name__}: {e})") from None
    net = wrapper.model.float().eval()
    ckpt = getattr(wrapper, "ckpt", None) or {}
    trained = str(model).endswith(".pt")
    if trained:
        epoch, epochs = ckpt.get("epoch"), (ckpt.get("train_args") or {}).get("epochs")
        state = f"checkpoint {model}"
        if isinstance(epoch, int) and epoch >= 0:
            state += f", epoch {epoch + 1}"  # ultralytics counts epochs from 0 in checkpoints
        elif isinstance(epochs, int):  # a finished training's best.pt/last.pt (optimizer stripped, epoch -1)
            state += f", trained for {epochs} epochs"
    else:
        state = f"freshly initialised from {model} (untrained: FINE starts as the identity, M = 0)"
    loaded = LoadedModel(str(model), net, trained, state, fine_blocks(net))
    if need_fine and not loaded.blocks:
        raise AnalysisInputError(f"model={model} has no FINE block (a FINE model is e.g. yolov8n-fine.yaml)")
    return loaded


def _layers(net: nn.Module) -> nn.Sequential:
    layers = getattr(net, "model", None)
    if not isinstance(layers, nn.Sequential):
        raise AnalysisInputError(f"{type(net).__name__} is not an ultralytics model (no .model Sequential)")
    return layers


def fine_blocks(net: nn.Module) -> list[Block]:
    """Every FINE block of an ultralytics model, in execution order, with the layer indices of its inputs."""
    from fine_yolo.nn import FINEConcat

    return [Block(f"fine{m.i}", m.fine, m.i, *m.fine_from, *m.fine_from) for m in _layers(net)
            if isinstance(m, FINEConcat)]


def layer(net: nn.Module, index: int) -> nn.Module:
    """Baseline layer ``index`` of a model (its child named ``str(index)``)."""
    layers = _layers(net)
    if str(index) not in layers._modules:
        raise AnalysisInputError(f"the model has no layer {index} (it has 0..{len(layers) - 1})")
    return layers._modules[str(index)]


# ---------------------------------------------------------------------------------------------------------------------
# Images


def image_paths(source: str) -> list[Path]:
    """The image files of ``source``: one image file, or every image in a directory (sorted by name)."""
    from ultralytics.data.utils import IMG_FORMATS

    p = Path(source)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower().lstrip(".") in IMG_FORMATS)
        if not files:
            raise AnalysisInputError(f"source={source}: no image files in this directory")
        return files
    raise AnalysisInputError(f"source={source}: no such file or directory")


def load_images(source: str, imgsz: int, limit: int = 0) -> list[tuple[str, np.ndarray]]:
    """``(name, letterboxed BGR uint8 (imgsz, imgsz, 3))`` per image of ``source`` (at most ``limit``; 0: all).

    ``source=fine-synth`` renders val images of the embedded dataset (seed 0) at ``imgsz`` instead of reading files.
    Letterboxing is ultralytics' own ``LetterBox`` (aspect kept, grey 114 padding, centred), as ``yolo predict`` does.
    """
    import cv2
    from ultralytics.data.augment import LetterBox

    if imgsz % 32:
        raise UsageError(f"argument 'imgsz={imgsz}' must be a multiple of 32 (the model's largest stride)")
    box = LetterBox(new_shape=(imgsz, imgsz), auto=False)
    if source == SYNTH_SOURCE:
        from fine_yolo.data.synthetic import MIN_IMGSZ, render

        return [(f"fine-synth-val-{i}", box(image=render(0, "val", i, max(imgsz, MIN_IMGSZ))[0]))
                for i in range(limit or 8)]
    paths = image_paths(source)[: limit or None]
    out = []
    for p in paths:
        img = cv2.imread(str(p))
        if img is None:
            raise AnalysisInputError(f"source: cannot read image {p}")
        out.append((p.stem, box(image=img)))
    return out


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """Letterboxed BGR uint8 images -> (B, 3, H, W) float RGB in [0, 1], as ultralytics' predictor feeds the model."""
    x = np.stack([im[..., ::-1] for im in images]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)).float() / 255.0


def batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ---------------------------------------------------------------------------------------------------------------------
# Capture


@dataclass
class BlockMaps:
    """The tensors one FINE block saw and made in one forward pass (batch B).

    ``low``: F_low (B, C, H, W); ``high``: the block's high input (B, c_high, H/r, W/r); ``f_high``: eq. 10,
    ``proj_high(high)`` (B, C, H/r, W/r); ``gain``: ``1 + M^`` on the token grid (B, C, H // rk, W // rk);
    ``m``: M (eq. 8), ``gain - 1`` upsampled nearest by rk and zero on trailing rows/columns outside every token
    (B, C, H, W); ``aligned``: the block's output F_low_aligned (eq. 9), (B, C, H, W).
    """

    low: torch.Tensor
    high: torch.Tensor
    f_high: torch.Tensor
    gain: torch.Tensor
    m: torch.Tensor
    aligned: torch.Tensor


def modulation(gain: torch.Tensor, rk: int, size: tuple[int, int]) -> torch.Tensor:
    """M (eq. 8) from the token-grid gain ``1 + M^``: upsampled nearest by ``rk``, zero-padded to ``size``."""
    m = torch.nn.functional.interpolate(gain - 1.0, scale_factor=rk, mode="nearest")
    pad_h, pad_w = size[0] - m.shape[-2], size[1] - m.shape[-1]
    return torch.nn.functional.pad(m, (0, pad_w, 0, pad_h)) if pad_h or pad_w else m


def capture(net: nn.Module, x: torch.Tensor, blocks: list[Block] | None = None, stop: bool = True
            ) -> list[BlockMaps]:
    """Run ``net`` on ``x`` (B, 3, H, W) without grad and return every FINE block's :class:`BlockMaps`.

    With ``stop`` the forward pass ends after the last block (the layers after it are not needed for its maps).
    """
    blocks = fine_blocks(net) if blocks is None else blocks
    seen = record(net, x, [b.module for b in blocks], gain=True, stop=stop)
    out = []
    for b, s in zip(blocks, seen):
        if s is None:
            raise AnalysisInputError(f"{b.name} did not run in the forward pass")
        with torch.no_grad():
            f_high = b.module.proj_high(s.high)
        # the gain's upsampling factor: r*k for AATS; variants that sample no tokens say token_stride = 1
        m = modulation(s.gain, b.module.token_stride, s.low.shape[-2:])
        out.append(BlockMaps(s.low, s.high, f_high, s.gain, m, s.out))
    return out


def layer_outputs(net: nn.Module, x: torch.Tensor, indices: list[int]) -> dict[int, torch.Tensor]:
    """Outputs of baseline layers ``indices`` of ``net`` on ``x`` (no grad; the pass stops after the last one)."""
    want = sorted(set(indices))
    got: dict[int, torch.Tensor] = {}

    def hook(j: int):
        def f(module, args, out):
            got[j] = out
            if len(got) == len(want):
                raise StopForward
        return f

    handles = [layer(net, j).register_forward_hook(hook(j)) for j in want]
    with removing(handles), torch.no_grad(), contextlib.suppress(StopForward):
        net(x)
    return got


def block_inputs(net: nn.Module, x: torch.Tensor, blocks: list[Block] | None = None
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every FINE block's ``(low, high)`` inputs on ``x``, *with* the autograd graph back to ``x`` (for input
    gradients); the forward pass stops after the last block."""
    blocks = fine_blocks(net) if blocks is None else blocks
    seen = record(net, x, [b.module for b in blocks], grad=True)
    missing = [b.name for b, s in zip(blocks, seen) if s is None]
    if missing:
        raise AnalysisInputError(f"{', '.join(missing)} did not run in the forward pass")
    return [(s.low, s.high) for s in seen]
