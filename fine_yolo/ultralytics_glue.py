"""Teach an unmodified ultralytics about FINE by wrapping a few of its seams. Nothing of ultralytics is copied.

1. ``ultralytics.nn.tasks.parse_model`` (looked up in the module's globals at call time by every model class). A YAML
   row ``[[low, high], 1, FINE, [k, r, head_dim]]`` is a *FINE row*. FINE rows take no layer index: the wrapper hands
   ultralytics the YAML without them — exactly the upstream baseline, so every layer keeps its index, its channel
   bookkeeping and its state-dict name (``model.12.cv1.conv.weight``) — and then inserts each FINE module into the
   built ``nn.Sequential`` under its own name (``model.fine0.*``, ``model.fine1.*``). A FINE row refines row ``low``
   *in place*: rows after it that read ``low`` read the aligned map instead. Because FINE keeps ``low``'s shape, no
   downstream channel count changes at any width scale, and ultralytics' own name-and-shape matching transfers every
   tensor of a baseline checkpoint into its FINE model (``pretrained=yolov8s.pt``).
   The channels of ``low`` and ``high`` (c_low, c_high) and their spatial ratio are read off the built baseline with
   one small no-grad forward pass, so they are right for every scale and are checked before the model is used.
2. ``ultralytics.utils.checks.check_file`` (through which ``check_yaml`` and the dataset checks find files): a bare
   name such as ``yolov8s-fine.yaml`` or ``fine-synth.yaml`` that is not in the working directory resolves to the
   YAML shipped in this package; everything else goes to ultralytics unchanged. Its ``check_font`` never downloads
   (ultralytics fetches Arial.ttf even with ``YOLO_OFFLINE=1``): a font not on the machine becomes matplotlib's
   bundled DejaVu Sans.
3. ``ultralytics.engine.exporter.Exporter.__call__`` and ``ultralytics.cfg.entrypoint`` (the ``yolo`` command): a
   ``format=engine`` export that is bound to fail here (no CUDA GPU, ``device=cpu``, TensorRT missing and not
   installable by ultralytics) stops with one sentence (:func:`fine_yolo.export.engine.engine_preflight`) instead of
   ultralytics' ``Invalid CUDA 'device=0' requested`` traceback or a pip install. ``Exporter.export_onnx`` re-sorts
   the nodes of the file it writes, so a CPU FP16 export is valid ONNX.

FINE is also registered with ``torch.serialization.add_safe_globals`` so ``ULTRALYTICS_SAFE_LOAD=1`` loads FINE
checkpoints. ``register()`` is idempotent; the start-up hook (``fine_yolo._hook``) calls the ``patch_*`` functions
as soon as ultralytics loads the modules they patch.
"""

from __future__ import annotations

import functools
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from fine_yolo.assets import packaged_yaml
from fine_yolo.export.engine import ENGINE_ALIASES, EngineUnavailableError, engine_preflight, repair_onnx_order

FINE_ROW = "FINE"
PROBE_SIZE = 256  # probe image side: a multiple of 32 whose P3..P5 maps hold whole AATS cells for k <= 2


class FINERowError(ValueError):
    """A YAML row that uses FINE incorrectly; the message names the file, the row and what is wrong."""


@dataclass
class _FineRow:
    position: int  # index among backbone+head rows of the YAML as written
    before: int  # number of baseline (indexed) rows above it: it runs just before baseline layer `before`
    low: int  # absolute baseline layer indices
    high: int
    args: list
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
        fr = _FineRow(pos, n_base, -1, -1, [], str(list(row)))
        if not (isinstance(f, (list, tuple)) and len(f) == 2 and all(isinstance(x, int) for x in f)):
            raise fr.error(yaml_file, f"FINE needs exactly two inputs [low, high], got from={f!r}")
        if n != 1:
            raise fr.error(yaml_file, f"FINE cannot be repeated, got n={n!r} (use 1)")
        if not isinstance(args, (list, tuple)) or len(args) > 3:
            raise fr.error(yaml_file, f"FINE args are [k, r, head_dim] (each optional), got {args!r}")
        if not all(isinstance(a, int) and not isinstance(a, bool) and a >= 1 for a in args):
            raise fr.error(yaml_file, f"FINE args k, r, head_dim must be positive integers, got {args!r}")
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
        fr.low, fr.high, fr.args = absolute[0], absolute[1], list(args)
        fine_rows.append(fr)
    for fr in fine_rows:
        if fr.before == n_base:
            raise fr.error(yaml_file, "a FINE row must come before the row that fuses its output, not last")
    stripped = {**d, "backbone": kept["backbone"], "head": kept["head"]}
    return stripped, fine_rows


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
        r = fr.args[1] if len(fr.args) > 1 else 2
        if (low[2], low[3]) != (high[2] * r, high[3] * r):
            raise fr.error(
                yaml_file,
                f"high input (layer {fr.high}, {high[2]}x{high[3]} at a {PROBE_SIZE}px probe) must be r={r} times "
                f"coarser than low input (layer {fr.low}, {low[2]}x{low[3]})",
            )
        try:
            module = FINE(low[1], high[1], *fr.args)
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
        absolute = [f] if isinstance(f, int) else list(f)
        absolute = [j - 1 if x == -1 else x for x in absolute]  # -1 means the previous baseline layer
        mapped = [alias[x] if x >= 0 else -1 for x in absolute]  # layer 0 reads the image (-1)
        mapped = [-1 if x == pos - 1 else x for x in mapped]
        layer.f = mapped[0] if isinstance(f, int) else mapped
        layer.i = pos
        alias[j] = pos
        entries.append((str(j), layer))
    for fr, module in zip(fine_rows, modules):
        if not any(module.i in _reads(m) for _, m in entries[module.i + 1 :]):
            raise fr.error(yaml_file, f"no row after it reads layer {fr.low}, so the aligned map would be unused")
    save = sorted({x for _, m in entries for x in ([m.f] if isinstance(m.f, int) else m.f) if x != -1})
    return torch.nn.Sequential(OrderedDict(entries)), save


def _reads(m) -> set[int]:
    """Positions whose outputs layer ``m`` reads (-1 resolved to the previous position)."""
    return {m.i - 1 if x == -1 else x for x in ([m.f] if isinstance(m.f, int) else m.f)}


def _log_fine(fr: _FineRow, module) -> None:
    from ultralytics.utils import LOGGER

    LOGGER.info(
        f"FINE (YAML row {fr.position}, runs before layer {fr.before}): low=layer {fr.low}, high=layer {fr.high}, "
        f"{module.extra_repr()}, {module.np:,} params"
    )


def _wrap_once(original: Callable, wrapper: Callable) -> Callable:
    """``wrapper`` dressed as ``original`` and marked, or ``original`` itself if it is already one of ours."""
    if getattr(original, "__fine_yolo__", False):
        return original
    wrapper = functools.wraps(original)(wrapper)
    wrapper.__fine_yolo__ = True
    return wrapper


def wrap_parse_model(original: Callable) -> Callable:
    """Return a ``parse_model`` that understands FINE rows and otherwise is ``original`` untouched."""
    def parse_model(d, ch, verbose=True):
        rows = d["backbone"] + d["head"]
        if not any(isinstance(r, (list, tuple)) and len(r) == 4 and r[2] == FINE_ROW for r in rows):
            return original(d, ch, verbose)
        stripped, fine_rows = _split_fine_rows(d)
        layers, _ = original(stripped, ch, verbose)  # save list is recomputed for the new positions
        return _insert_fine(layers, fine_rows, ch, str(d.get("yaml_file", "<model dict>")), verbose)

    return _wrap_once(original, parse_model)


def wrap_check_file(original: Callable) -> Callable:
    """Return a ``check_file`` that also finds this package's YAMLs by bare name."""
    def check_file(file, *args, **kwargs):
        name = str(file).strip() if isinstance(file, (str, Path)) else ""
        if name and "://" not in name and not Path(name).exists():
            found = packaged_yaml(name)
            if found is not None:
                file = str(found)
        return original(file, *args, **kwargs)

    return _wrap_once(original, check_file)


def _rebind(name: str, original: Callable, replacement: Callable) -> None:
    """Point every loaded ultralytics module that imported ``original`` by name at ``replacement``."""
    for mod_name, module in list(sys.modules.items()):
        if (mod_name == "ultralytics" or mod_name.startswith("ultralytics.")) and module is not None:
            if getattr(module, name, None) is original:
                setattr(module, name, replacement)


def wrap_check_font(original: Callable, config_dir: Path) -> Callable:
    """Return a ``check_font`` that never downloads: a font not on this machine becomes matplotlib's bundled one.

    ultralytics' ``check_font`` (called by every dataset check and plot) looks in ``config_dir`` and matplotlib's
    font list, then fetches ``Arial.ttf`` from the network — even with ``YOLO_OFFLINE=1``. A local font still goes to
    ``original``; otherwise the answer is DejaVu Sans, which ships with matplotlib (labels look slightly different).
    """

    def check_font(font="Arial.ttf", *args, **kwargs):
        from matplotlib import font_manager

        name = Path(str(font)).name
        if (config_dir / name).exists() or any(str(font) in f.fname for f in font_manager.fontManager.ttflist):
            return original(font, *args, **kwargs)
        return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=True)

    return _wrap_once(original, check_font)


def patch_checks(checks: ModuleType) -> None:
    """Install the bare-name resolver and the no-download font lookup in ``ultralytics.utils.checks`` (and in the
    modules that already imported them by name)."""
    for name, wrap in (("check_file", wrap_check_file),
                       ("check_font", lambda f: wrap_check_font(f, Path(checks.USER_CONFIG_DIR)))):
        original = getattr(checks, name)
        wrapped = wrap(original)
        if wrapped is not original:
            _rebind(name, original, wrapped)


def patch_tasks(tasks: ModuleType) -> None:
    """Install the FINE-aware ``parse_model`` and allow FINE in restricted (weights_only) checkpoint loading."""
    import torch

    from fine_yolo.nn import fine

    tasks.parse_model = wrap_parse_model(tasks.parse_model)
    if hasattr(torch.serialization, "add_safe_globals"):  # every class a pickled FINE module can contain
        torch.serialization.add_safe_globals([getattr(fine, name) for name in fine.__all__])


def _autoinstalls_packages() -> bool:
    """Whether ultralytics would pip-install a missing package here (YOLO_AUTOINSTALL on and online)."""
    import ultralytics.utils as utils

    return bool(getattr(utils, "AUTOINSTALL", True)) and bool(getattr(utils, "ONLINE", False))


def wrap_exporter_call(original: Callable) -> Callable:
    """Return an ``Exporter.__call__`` that stops a TensorRT export that cannot run here with one sentence.

    Only the cases where ultralytics' own run is bound to fail are stopped (no CUDA GPU, ``device=cpu``, a DLA core
    the GPU lacks, TensorRT missing while ultralytics may not install it); every other export is ``original``.
    """
    def __call__(self, *args, **kwargs):
        if str(getattr(self.args, "format", "")).lower() in ENGINE_ALIASES:
            engine_preflight(str(getattr(self.args, "model", None) or "<model>"), self.args.device,
                             getattr(self.args, "imgsz", None), tensorrt_installable=_autoinstalls_packages())
        return original(self, *args, **kwargs)

    return _wrap_once(original, __call__)


def wrap_entrypoint(original: Callable) -> Callable:
    """Return the ``yolo`` CLI entrypoint that ends an impossible TensorRT export with its sentence, not a traceback."""
    def entrypoint(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except EngineUnavailableError as e:
            print(f"ERROR: {e}", file=sys.stderr)
            raise SystemExit(1) from None  # the same status as `fine-yolo export`

    return _wrap_once(original, entrypoint)


def wrap_export_onnx(original: Callable) -> Callable:
    """Return an ``Exporter.export_onnx`` whose file is always valid ONNX (nodes in topological order).

    ultralytics' CPU FP16 conversion appends the input/output Casts after the nodes that read them, which
    ``onnx.checker`` rejects (for every model); the stable re-sort (:func:`fine_yolo.export.engine.repair_onnx_order`)
    leaves a valid graph untouched. Every export that goes through ONNX (``onnx``, ``engine``, ...) gets it.
    """

    def export_onnx(self, *args, **kwargs):
        result = original(self, *args, **kwargs)  # a path, or (path, proto) on older releases
        repair_onnx_order(Path(result if isinstance(result, (str, Path)) else result[0]))
        return result

    return _wrap_once(original, export_onnx)


def patch_exporter(exporter: ModuleType) -> None:
    """Make ``ultralytics.engine.exporter.Exporter`` check ``format=engine`` before it starts and write valid ONNX."""
    exporter.Exporter.__call__ = wrap_exporter_call(exporter.Exporter.__call__)
    exporter.Exporter.export_onnx = wrap_export_onnx(exporter.Exporter.export_onnx)


def patch_cfg(cfg: ModuleType) -> None:
    """Wrap ``ultralytics.cfg.entrypoint`` (the ``yolo`` command) so :class:`EngineUnavailableError` is one line."""
    cfg.entrypoint = wrap_entrypoint(cfg.entrypoint)


def register() -> None:
    """Make ultralytics FINE-aware in this process (idempotent; imports ultralytics)."""
    import ultralytics.cfg as cfg
    import ultralytics.engine.exporter as exporter
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils.checks as checks

    patch_checks(checks)
    patch_tasks(tasks)
    patch_exporter(exporter)
    patch_cfg(cfg)
