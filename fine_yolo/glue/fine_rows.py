"""How FINE enters a model: the patch of ``ultralytics.nn.tasks.parse_model`` that understands FINE rows.

``parse_model`` is looked up in ``ultralytics.nn.tasks``' globals at call time by every model class. A YAML row
``[[low, high], 1, FINE, [k, r, head_dim, attention, pool]]`` (each optional, in the order of FINE's arguments; a
last item may instead be a mapping of them, ``[1, {attention: window}]``) is a *FINE row*. FINE rows take no layer
index: the wrapper hands ultralytics the YAML without them — exactly the upstream baseline, so every layer keeps its
index, its channel bookkeeping and its state-dict name (``model.12.cv1.conv.weight``) — and then inserts each FINE
module into the built ``nn.Sequential`` under its own name (``model.fine0.*``, ``model.fine1.*``). A FINE row
refines row ``low`` *in place*: rows after it that read ``low`` read the aligned map instead. Because FINE keeps
``low``'s shape, no downstream channel count changes at any width scale, and ultralytics' own name-and-shape matching
transfers every tensor of a baseline checkpoint into its FINE model (``pretrained=yolov8s.pt``).

The channels of ``low`` and ``high`` (c_low, c_high) and their spatial ratio are read off the built baseline with
one small no-grad forward pass, so they are right for every scale and are checked before the model is used. Every
``from`` index of the baseline rows is renumbered to the new positions and stays as explicit as ultralytics wrote
it. A YAML without FINE rows goes to ultralytics' ``parse_model`` untouched, with whatever arguments it was given.

The patch also lets ``ULTRALYTICS_SAFE_LOAD=1`` (``weights_only`` loading) unpickle FINE modules.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from fine_yolo.errors import FineYoloError
from fine_yolo.glue._wrap import wrap_once

FINE_ROW = "FINE"
PROBE_SIZE = 256  # probe image side: a multiple of 32 whose P3..P5 maps hold whole AATS cells for k <= 2


class FINERowError(FineYoloError, ValueError):
    """A YAML row that uses FINE incorrectly; the message names the file, the row and what is wrong."""


@dataclass
class _FineRow:
    position: int  # index among backbone+head rows of the YAML as written
    before: int  # number of baseline (indexed) rows above it: it runs just before baseline layer `before`
    low: int  # absolute baseline layer indices
    high: int
    args: dict  # FINE's keyword arguments (k, r, head_dim, attention, pool), those the row gives
    text: str  # the row as written, for messages

    def error(self, yaml_file: str, what: str) -> FINERowError:
        return FINERowError(f"{yaml_file}: YAML row {self.position} {self.text}: {what}")


def _split_fine_rows(d: dict) -> tuple[dict, list[_FineRow]]:
    """Return (the YAML dict without FINE rows, the FINE rows validated for form), raising FINERowError."""
    yaml_file = str(d.get("yaml_file", "<model dict>"))
    n_backbone = len(d["backbone"])
    fine_rows: list[_FineRow] = []
    kept = {"backbone": [], "head": []}
    n_base = 0
    for pos, row in enumerate(d["backbone"] + d["head"]):
        section = "backbone" if pos < n_backbone else "head"
        if not (isinstance(row, (list, tuple)) and len(row) == 4 and row[2] == FINE_ROW):
            kept[section].append(row)
            n_base += 1
            continue
        f, n, _, args = row
        fr = _FineRow(pos, n_base, -1, -1, {}, str(list(row)))
        if not (isinstance(f, (list, tuple)) and len(f) == 2 and all(isinstance(x, int) for x in f)):
            raise fr.error(yaml_file, f"FINE needs exactly two inputs [low, high], got from={f!r}")
        if n != 1:
            raise fr.error(yaml_file, f"FINE cannot be repeated, got n={n!r} (use 1)")
        try:
            kwargs = _row_kwargs(args)
        except ValueError as e:
            raise fr.error(yaml_file, str(e)) from None
        if n_base == 0:
            raise fr.error(yaml_file, "a FINE row needs two earlier layers to read")
        absolute = []
        for x in f:
            j = x + n_base if x < 0 else x  # FINE rows take no index: -1 is the last indexed row above
            if not 0 <= j < n_base:
                raise fr.error(yaml_file, f"input {x} does not name an earlier layer (layers 0..{n_base - 1} exist)")
            absolute.append(j)
        if absolute[0] == absolute[1]:
            raise fr.error(yaml_file, "low and high are the same layer")
        fr.low, fr.high, fr.args = absolute[0], absolute[1], kwargs
        fine_rows.append(fr)
    for fr in fine_rows:
        if fr.before == n_base:
            raise fr.error(yaml_file, "a FINE row must come before the row that fuses its output, not last")
    stripped = {**d, "backbone": kept["backbone"], "head": kept["head"]}
    return stripped, fine_rows


INT_ARGS = ("k", "r", "head_dim")  # FINE's positional arguments after c_low, c_high, in order
STR_ARGS = ("attention", "pool")


def _row_kwargs(args: Any) -> dict[str, Any]:
    """A FINE row's args as FINE keyword arguments: ``[k, r, head_dim, attention, pool]`` positionally (each
    optional), optionally ending in a mapping of the remaining ones (``[2, {pool: max}]``). ValueError names what is
    wrong; the values themselves are FINE's to judge (it names the allowed attention and pool values)."""
    from fine_yolo.nn.fine import ATTENTIONS, POOLS

    names = INT_ARGS + STR_ARGS
    form = ("FINE args are [k, r, head_dim] followed by attention and pool (each optional; a last {key: value} "
            f"mapping may give any of them by name), got {args!r}")
    if not isinstance(args, (list, tuple)):
        raise ValueError(form)
    items = list(args)
    named = items.pop() if items and isinstance(items[-1], dict) else {}
    if len(items) > len(names) or any(isinstance(a, dict) for a in items):
        raise ValueError(form)
    kwargs = dict(zip(names, items))
    for key, value in named.items():
        if key not in names:
            raise ValueError(f"FINE has no argument {key!r} (its row arguments: {', '.join(names)})")
        if key in kwargs:
            raise ValueError(f"FINE argument {key!r} is given twice, by position and by name, in {args!r}")
        kwargs[key] = value
    for key in INT_ARGS:
        v = kwargs.get(key)
        if key in kwargs and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise ValueError(f"FINE args k, r, head_dim must be positive integers, got {key}={v!r} in {args!r}")
    for key, allowed in zip(STR_ARGS, (ATTENTIONS, POOLS)):
        if key in kwargs and kwargs[key] not in allowed:
            raise ValueError(f"FINE {key}={kwargs[key]!r} is not one of {', '.join(allowed)}; {form}")
    return kwargs


def _probe_shapes(layers, ch: int, upto: int) -> list[tuple[int, ...]]:
    """Run baseline layers 0..upto on a zero image (no grad, eval mode) and return each output's shape."""
    import torch

    was_training = layers.training
    layers.eval()
    y: list[Any] = []
    x: Any = torch.zeros(1, ch, PROBE_SIZE, PROBE_SIZE)
    try:
        with torch.no_grad():
            for m in list(layers)[: upto + 1]:
                if m.f != -1:
                    x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
                x = m(x)
                y.append(x)
    finally:
        layers.train(was_training)
    return [tuple(t.shape) if hasattr(t, "shape") else () for t in y]


def _insert_fine(layers, fine_rows: list[_FineRow], ch: int, yaml_file: str, verbose: bool):
    """Build the FINE modules and return (Sequential with them inserted, save list), indices remapped to positions."""
    import torch

    from fine_yolo.nn.fine import FINE

    shapes = _probe_shapes(layers, ch, max(max(fr.low, fr.high) for fr in fine_rows))
    modules = []
    for fr in fine_rows:
        low, high = shapes[fr.low], shapes[fr.high]
        if len(low) != 4 or len(high) != 4:
            raise fr.error(yaml_file, f"inputs must be feature maps, got shapes {low} (low) and {high} (high)")
        r = fr.args.get("r", 2)
        # The maps are r times apart (AATS aligned), or adjacent levels (2 times apart) with any r: the paper's Fig. 5
        # sweeps r in {1, 2, 4} against the stride ratio 2.
        if not any((low[2], low[3]) == (high[2] * s, high[3] * s) for s in {r, 2}):
            also = "" if r == 2 else " (or 2 times: adjacent levels, against which Fig. 5 sweeps r)"
            raise fr.error(
                yaml_file,
                f"high input (layer {fr.high}, {high[2]}x{high[3]} at a {PROBE_SIZE}px probe) must be r={r} times "
                f"coarser than low input (layer {fr.low}, {low[2]}x{low[3]}){also}",
            )
        try:
            module = FINE(low[1], high[1], **fr.args)
            # Fail here, not in the first training step: the token grid must be non-empty at the probe size.
            with torch.no_grad():
                module(torch.zeros(low), torch.zeros(high))
        except ValueError as e:
            raise fr.error(yaml_file, str(e)) from None
        modules.append(module)

    # Positions in the new Sequential: FINE modules run just before the baseline layer that follows them in the YAML.
    alias: dict[int, int] = {}  # baseline index -> position of its latest version (FINE-aligned or original)
    entries: list[tuple[str, torch.nn.Module]] = []

    fine_iter = iter(zip(fine_rows, modules))  # in YAML order
    pending = next(fine_iter, None)
    for j, layer in enumerate(layers):
        while pending is not None and pending[0].before == j:
            fr, module = pending
            pos = len(entries)  # == j + number of FINE modules inserted so far
            module.f = [alias[fr.low], alias[fr.high]]
            module.i, module.type = pos, f"{FINE.__module__}.{FINE.__name__}"
            module.np = sum(p.numel() for p in module.parameters())
            entries.append((f"fine{pos - j}", module))  # pos - j FINE modules precede it: fine0, fine1, ...
            alias[fr.low] = pos  # in-place refinement: later readers of `low` read the aligned map
            if verbose:
                _log_fine(fr, module)
            pending = next(fine_iter, None)
        pos = len(entries)
        f = layer.f
        layer.f = _remap(f, j, pos, alias) if isinstance(f, int) else [_remap(x, j, pos, alias) for x in f]
        layer.i = pos
        alias[j] = pos
        entries.append((str(j), layer))
    for fr, module in zip(fine_rows, modules):
        if not any(module.i in _reads(m) for _, m in entries[module.i + 1 :]):
            raise fr.error(yaml_file, f"no row after it reads layer {fr.low}, so the aligned map would be unused")
    # Outputs read by a later layer other than through ``x`` (the -1 chain) must be kept: RT-DETR's predict, like
    # _predict_once, stores y[i] only for i in save. A relative index other than -1 ([-2, -1] in RT-DETR) is a kept
    # output too, saved under its absolute position as ultralytics' own ``x % i`` does.
    save = sorted({m.i + x if x < 0 else x for _, m in entries for x in _froms(m) if x != -1})
    return torch.nn.Sequential(OrderedDict(entries)), save


def _remap(x: int, j: int, pos: int, alias: dict[int, int]) -> int:
    """Position baseline layer ``j`` (now at ``pos``) reads for its input ``x``, written as ultralytics wrote it.

    An explicit index stays explicit (``Detect.f`` ``[15, 18, 21]`` becomes ``[17, 20, 23]``, never ``-1``: code
    that reads ``m.f`` — ``DistillationModel.get_distill_layers``, feature hooks, ``visualize`` — must find the layer
    it names). A relative index (``-1``; RT-DETR's Concat also reads ``-2``) means baseline layer ``j + x``; it stays
    relative while ``pos + x`` still holds what that baseline layer means (the layer itself, or a FINE module refining
    it), otherwise it becomes that layer's explicit position. Layer 0's ``-1`` is the image.
    """
    if x >= 0:
        return alias[x]
    if j + x < 0:  # before the first layer: the image for -1 at layer 0; anything else is ultralytics' to judge
        return x
    target = alias[j + x]
    return x if target == pos + x else target


def _froms(m) -> list[int]:
    """Layer ``m``'s ``from`` as a list."""
    return [m.f] if isinstance(m.f, int) else list(m.f)


def _reads(m) -> set[int]:
    """Positions whose outputs layer ``m`` reads (relative indices resolved against its position)."""
    return {m.i + x if x < 0 else x for x in _froms(m)}


def _log_fine(fr: _FineRow, module) -> None:
    from ultralytics.utils import LOGGER

    LOGGER.info(
        f"FINE (YAML row {fr.position}, runs before layer {fr.before}): low=layer {fr.low}, high=layer {fr.high}, "
        f"{module.extra_repr()}, {module.np:,} params"
    )


def wrap_parse_model(original: Callable) -> Callable:
    """Return a ``parse_model`` that understands FINE rows and otherwise is ``original`` untouched."""
    def parse_model(d, ch, *args, **kwargs):
        rows = d["backbone"] + d["head"]
        if not any(isinstance(r, (list, tuple)) and len(r) == 4 and r[2] == FINE_ROW for r in rows):
            return original(d, ch, *args, **kwargs)
        stripped, fine_rows = _split_fine_rows(d)
        layers, _ = original(stripped, ch, *args, **kwargs)  # save list is recomputed for the new positions
        verbose = kwargs.get("verbose", args[0] if args else True)
        return _insert_fine(layers, fine_rows, ch, str(d.get("yaml_file", "<model dict>")), bool(verbose))

    return wrap_once(original, parse_model)


def patch(tasks: ModuleType) -> None:
    """Install the FINE-aware ``parse_model`` and allow FINE in restricted (weights_only) checkpoint loading."""
    import torch

    import fine_yolo.nn.fine as fine

    tasks.parse_model = wrap_parse_model(tasks.parse_model)
    if hasattr(torch.serialization, "add_safe_globals"):  # every class a pickled FINE module can contain
        torch.serialization.add_safe_globals([getattr(fine, name) for name in fine.__all__])
