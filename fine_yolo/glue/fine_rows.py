"""How FINE enters a model: the patch of ``ultralytics.nn.tasks.parse_model`` that understands FINEConcat rows.

``parse_model`` is looked up in ``ultralytics.nn.tasks``' globals at call time by every model class. A FINE YAML is
its upstream YAML with each top-down fusion row's ``Concat`` replaced by ``FINEConcat`` (paper eq. 3,
:class:`fine_yolo.nn.fusion.FINEConcat`) and the Concat's dimension by FINE's arguments::

    [[-1, 6], 1, Concat, [1]]          ->  [[-1, 6], 1, FINEConcat, [1]]         # [up, low]: high = up[..., ::2, ::2]
    [[-1, 6], 1, Concat, [1]] (YOLOv6) ->  [[-1, 6, 10], 1, FINEConcat, [1]]     # [up, low, high]: learned upsampler

The arguments are ``[k, r, head_dim, attention, pool]`` (each optional, in the order of FINE's; a last item may
instead be a mapping of them, ``[1, {attention: window}]``). ultralytics' channel bookkeeping cannot learn a new
multi-input module (an unknown module with a list ``from`` raises TypeError), so the wrapper hands ultralytics each
fusion row as the upstream ``Concat`` of its first two inputs -- exactly the upstream model, whose layers, indices,
``from`` lists, output channels, state-dict names and random initialisation are then the baseline's -- and replaces
those Concat layers by FINEConcat modules (same ``i``, ``f`` as written, output channels ``c_up + c_low``). Nothing is
renumbered: every layer index of the upstream YAML names the same layer, so ultralytics' name-and-shape matching
transfers every tensor of a baseline checkpoint (``pretrained=yolov8s.pt``; FINE's tensors are ``model.11.fine.*``).

FINE's channels (c_low, c_high) and the stride ratio are read off the built baseline with one small no-grad forward
pass on a random image (so they are right at every scale), the map that a two-input row's upsampler reads is checked
to be ``up[..., ::s, ::s]`` bit for bit, and each FINE runs once on the probe maps; a wrong row fails here, naming the
file and the row. A YAML without FINEConcat rows goes to ultralytics' ``parse_model`` untouched.

The patch also lets ``ULTRALYTICS_SAFE_LOAD=1`` (``weights_only`` loading) unpickle FINE modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from fine_yolo.errors import FineYoloError
from fine_yolo.glue._wrap import wrap_once

FUSION_ROW = "FINEConcat"
# Probe image side: a multiple of 64 at which the coarsest map (P5: 4x4, P6: 2x2) still holds whole AATS cells at
# every k the placement rule gives; a quarter of the pixels of a 256 px probe (the probe was ~25% of a build's time).
PROBE_SIZE = 128


class FINERowError(FineYoloError, ValueError):
    """A YAML row that uses FINE incorrectly; the message names the file, the row and what is wrong."""


@dataclass
class _FusionRow:
    i: int  # row index == layer index
    f: list[int]  # inputs as written: [up, low] or [up, low, high]
    inputs: list[int]  # the same as absolute layer indices
    args: dict  # FINE's keyword arguments (k, r, head_dim, attention, pool), those the row gives
    text: str  # the row as written, for messages

    def error(self, yaml_file: str, what: str) -> FINERowError:
        return FINERowError(f"{yaml_file}: YAML row {self.i} {self.text}: {what}")


def _is_row(row: Any, module: str) -> bool:
    return isinstance(row, (list, tuple)) and len(row) == 4 and row[2] == module


def _split_fusion_rows(d: dict) -> tuple[dict, list[_FusionRow]]:
    """Return (the YAML dict with each FINEConcat row as the upstream Concat of its first two inputs, the fusion rows
    validated for form), raising FINERowError."""
    yaml_file = str(d.get("yaml_file", "<model dict>"))
    rows = list(d["backbone"]) + list(d["head"])
    fusions = []
    for i, row in enumerate(rows):
        if _is_row(row, "FINE"):
            raise FINERowError(f"{yaml_file}: YAML row {i} {list(row)}: FINE is not a row of its own; write the "
                               f"top-down fusion row as [[up, low], 1, {FUSION_ROW}, [k, ...]] in its Concat's place")
        if not _is_row(row, FUSION_ROW):
            continue
        f, n, _, args = row
        fu = _FusionRow(i, f, [], {}, str(list(row)))
        if not (isinstance(f, (list, tuple)) and len(f) in (2, 3) and all(isinstance(x, int) for x in f)):
            raise fu.error(yaml_file, f"{FUSION_ROW} reads [up, low] or [up, low, high] (up: the upsampled map, high: "
                                      f"the map it upsamples), got from={f!r}")
        if n != 1:
            raise fu.error(yaml_file, f"{FUSION_ROW} cannot be repeated, got n={n!r} (use 1)")
        try:
            fu.args = _row_kwargs(args)
        except ValueError as e:
            raise fu.error(yaml_file, str(e)) from None
        for x in f:
            j = x + i if x < 0 else x
            if not 0 <= j < i:
                raise fu.error(yaml_file, f"input {x} does not name an earlier layer (layers 0..{i - 1} exist)")
            fu.inputs.append(j)
        rows[i] = [list(f[:2]), 1, "Concat", [1]]
        fusions.append(fu)
    n_backbone = len(d["backbone"])
    return {**d, "backbone": rows[:n_backbone], "head": rows[n_backbone:]}, fusions


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


def _high_of(layers, fu: _FusionRow, y: list, yaml_file: str) -> tuple[int, int]:
    """``(high, s)``: the layer FINE reads as high for fusion row ``fu`` and the upsampling factor s of its first
    input, checked on the probe maps ``y`` (a two-input row's upsampled map must be ``high`` repeated, bit for bit)."""
    import torch
    from torch import nn

    up_j = fu.inputs[0]
    if len(fu.inputs) == 3:
        return fu.inputs[2], 2
    upsampler = layers[up_j]
    if not (isinstance(upsampler, nn.Upsample) and upsampler.mode == "nearest" and isinstance(upsampler.f, int)):
        raise fu.error(yaml_file, f"input {fu.f[0]} (layer {up_j}, {type(upsampler).__name__}) is not a nearest "
                                  f"nn.Upsample of one map, so the map it upsamples cannot be recovered: name that "
                                  f"map as a third input [up, low, high]")
    high_j = upsampler.f + up_j if upsampler.f < 0 else upsampler.f
    s = y[up_j].shape[-1] // max(y[high_j].shape[-1], 1)
    if s < 1 or not torch.equal(y[up_j][..., ::s, ::s], y[high_j]):  # eq. 3 reads high itself, bit for bit
        raise fu.error(yaml_file, f"layer {up_j} is not an integer nearest upsampling of layer {high_j} "
                                  f"({tuple(y[high_j].shape)} -> {tuple(y[up_j].shape)} at a {PROBE_SIZE}px probe)")
    return high_j, s


def placement_k(high: tuple[int, ...], top: tuple[int, ...]) -> int | None:
    """The AATS kernel k of a stage whose high map has shape ``high`` in a model whose coarsest high map (over all its
    fusion rows) has shape ``top``: k = stride(top) / stride(high), so that every stage's tokens lie on the coarsest
    map's grid (paper §5.3.2: k=1 at P4<-P5, k=2 at P3<-P4 with r=2; continued: 4 at P2<-P3). None when the sizes are
    not an integer ratio apart."""
    k = high[-1] // top[-1]
    return k if k >= 1 and tuple(high[-2:]) == (top[-2] * k, top[-1] * k) else None


def _check_maps(fu: _FusionRow, y: list, high_j: int, yaml_file: str) -> None:
    """Fusion row ``fu``'s maps on the probe: feature maps, the upsampled one the size of low, high r (or 2) times
    coarser than low; checked before the row's Concat runs, so a wrong row fails with a sentence, not a torch error."""
    up_j, low_j = fu.inputs[:2]
    up, low, high = (tuple(y[j].shape) for j in (up_j, low_j, high_j))
    if len(low) != 4 or len(high) != 4 or len(up) != 4:
        raise fu.error(yaml_file, f"inputs must be feature maps, got shapes {up} (up), {low} (low) and {high} (high)")
    if up[2:] != low[2:]:
        raise fu.error(yaml_file, f"the upsampled map (layer {up_j}, {up[2]}x{up[3]}) and low (layer {low_j}, "
                                  f"{low[2]}x{low[3]}) differ in size at a {PROBE_SIZE}px probe")
    r = fu.args.get("r", 2)
    # The maps are r times apart (AATS aligned), or adjacent levels (2 times apart) with any r: the paper's Fig. 5
    # sweeps r in {1, 2, 4} against the stride ratio 2.
    if not any((low[2], low[3]) == (high[2] * t, high[3] * t) for t in {r, 2}):
        also = "" if r == 2 else " (or 2 times: adjacent levels, against which Fig. 5 sweeps r)"
        raise fu.error(
            yaml_file,
            f"high input (layer {high_j}, {high[2]}x{high[3]} at a {PROBE_SIZE}px probe) must be r={r} times "
            f"coarser than low input (layer {low_j}, {low[2]}x{low[3]}){also}",
        )


def _fusion_module(fu: _FusionRow, y: list, high_j: int, s: int, top: tuple[int, ...], yaml_file: str):
    """The FINEConcat module for fusion row ``fu`` (its maps checked by :func:`_check_maps`); a row without k gets
    :func:`placement_k` (with attention="aats"; the token-free variants keep k=1)."""
    from fine_yolo.nn.fusion import FINEConcat

    low_j = fu.inputs[1]
    low, high = tuple(y[low_j].shape), tuple(y[high_j].shape)
    args = dict(fu.args)
    if "k" not in args and args.get("attention", "aats") == "aats":
        args["k"] = placement_k(high, top)
        if args["k"] is None:
            raise fu.error(yaml_file, f"high (layer {high_j}, {high[2]}x{high[3]}) is not an integer number of times "
                                      f"finer than the coarsest high map of the model ({top[2]}x{top[3]}) at a "
                                      f"{PROBE_SIZE}px probe, so no k puts its tokens on that grid: give k")
    try:
        module = FINEConcat(low[1], high[1], **args, up=s).eval()
        module.fine(y[low_j], y[high_j])  # fail here, not in the first training step: a non-empty token grid
    except ValueError as e:
        raise fu.error(yaml_file, str(e)) from None
    module.i, module.f, module.type = fu.i, list(fu.f), f"{FINEConcat.__module__}.{FINEConcat.__name__}"
    module.np = sum(p.numel() for p in module.parameters())
    module.fine_from = [low_j, high_j]  # the layers FINE reads (absolute): for analyses and messages
    return module


def _install(layers, save: list[int], fusions: list[_FusionRow], ch: int, yaml_file: str, verbose: bool):
    """Replace each fusion row's Concat by its FINEConcat. The baseline's layers are probed first (no grad, eval mode,
    a random image from a private generator: the global RNG, and so every initialisation, is the baseline's); at its
    identity start a FINEConcat's output is its Concat's, so the probe maps are the FINE model's too."""
    import torch

    todo = {fu.i: fu for fu in fusions}
    last = max(todo)
    was_training = layers.training
    layers.eval()
    y: list[Any] = []
    x: Any = torch.rand(1, ch, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            highs = {}
            for m in list(layers)[: last + 1]:
                if m.f != -1:
                    x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
                if m.i in todo:
                    highs[m.i] = _high_of(layers, todo[m.i], y, yaml_file)
                    _check_maps(todo[m.i], y, highs[m.i][0], yaml_file)
                x = m(x)
                y.append(x)
            top = min((tuple(y[h].shape) for h, _ in highs.values()), key=lambda shape: shape[-1])
            for fu in fusions:
                m = _fusion_module(fu, y, *highs[fu.i], top, yaml_file)
                layers[fu.i] = m
                if verbose:
                    _log(m)
    finally:
        layers.train(was_training)
    # A third input is an output read by index, which _predict_once (and RT-DETR's predict) keep only when saved;
    # ultralytics' own list (duplicates and all) is otherwise returned as it is.
    extra = {fu.inputs[2] for fu in fusions if len(fu.f) == 3 and fu.f[2] != -1} - set(save)
    return layers, sorted([*save, *extra])


def _log(module) -> None:
    from ultralytics.utils import LOGGER

    (low, high), up = module.fine_from, module.f[0] % module.i  # ultralytics' own x % i for a relative index
    LOGGER.info(f"{module.i:>3} {FUSION_ROW}: Concat(layer {up}, FINE(low=layer {low}, high=layer {high})), "
                f"{module.fine.extra_repr()}, {module.np:,} params")


def wrap_parse_model(original: Callable) -> Callable:
    """Return a ``parse_model`` that understands FINEConcat rows and otherwise is ``original`` untouched."""
    def parse_model(d, ch, *args, **kwargs):
        rows = d["backbone"] + d["head"]
        if not any(_is_row(r, FUSION_ROW) or _is_row(r, "FINE") for r in rows):
            return original(d, ch, *args, **kwargs)
        baseline, fusions = _split_fusion_rows(d)
        layers, save = original(baseline, ch, *args, **kwargs)
        verbose = kwargs.get("verbose", args[0] if args else True)
        return _install(layers, save, fusions, ch, str(d.get("yaml_file", "<model dict>")), bool(verbose))

    return wrap_once(original, parse_model)


def patch(tasks: ModuleType) -> None:
    """Install the FINE-aware ``parse_model`` and allow FINE in restricted (weights_only) checkpoint loading."""
    import torch

    import fine_yolo.nn.fine as fine
    import fine_yolo.nn.fusion as fusion

    tasks.parse_model = wrap_parse_model(tasks.parse_model)
    if hasattr(torch.serialization, "add_safe_globals"):  # every class a pickled FINE module can contain
        torch.serialization.add_safe_globals([getattr(m, name) for m in (fine, fusion) for name in m.__all__])
