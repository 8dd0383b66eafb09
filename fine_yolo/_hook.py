"""The start-up hook: make ultralytics FINE-aware in every interpreter, at no cost until ultralytics is imported.

``fine_yolo_startup.pth`` (installed at the site-packages root) checks the ``FINE_YOLO_HOOK`` switch and, when it is
on, calls :func:`install`. That adds a meta-path finder which only compares module names until one of the
ultralytics modules in :data:`PATCHES` is imported; right after such a module has executed, the ``patch(module)``
of each glue module listed for it runs. Importing torch, ultralytics, or even ``importlib.abc`` (about 59 modules,
14 ms on Python 3.11) here would cost every Python process; this module imports nothing beyond ``sys`` and ``os``,
which the interpreter has already loaded (a test checks it).

The one other entry point is ``import fine_yolo`` (any ``fine_yolo`` module): the package calls
``install(force=True)``, so with the start-up hook off (``FINE_YOLO_HOOK=0``) a Python user imports fine_yolo, before
or after ultralytics, and the ``fine-yolo`` console script works the same way. :func:`register` applies everything
at once instead (it imports the patched ultralytics modules); nothing in the package needs to call it.

The hook can never break ultralytics: every failure becomes one warning and ultralytics runs unpatched; the tests
turn such a warning into a failure, and check every seam's signature (tests/test_hook.py).
"""

import os
import sys

# What the hook applies, and why: (ultralytics module, glue module whose patch(module) runs right after it, the
# private seams it relies on as `name(signature)` in that module, reason). Every patch is a wrapper that acts for FINE
# models (and compare's runs) and otherwise calls ultralytics' own function with the same arguments; a user who never
# builds a FINE model gets ultralytics' behaviour, function for function.
PATCHES = (
    ("ultralytics.utils.checks", "fine_yolo.glue.bare_names",
     ("check_file(file, suffix='', download=True, download_dir='.', hard=True)",),
     "a missing <upstream>-fine.yaml (yolov8s-p2-fine.yaml, path/to/mine-fine.yaml) is rendered from the upstream "
     "YAML ultralytics finds; fine-synth.yaml resolves from any directory; any other name goes to ultralytics "
     "unchanged"),
    ("ultralytics.nn.tasks", "fine_yolo.glue.fine_rows",
     ("parse_model(d, ch, verbose=True)",),
     "FINE rows in model YAMLs (a YAML without them goes to ultralytics unchanged); FINE modules allowed in "
     "weights_only checkpoint loading"),
    ("ultralytics.engine.exporter", "fine_yolo.glue.export_form",
     ("Exporter.__call__(self, model)",),
     "FINE blocks are recorded in their export's form (conv for ONNX/TensorRT, tokens otherwise: OpenVINO's fused "
     "attention); a model without FINE is exported untouched"),
    ("ultralytics.engine.exporter", "fine_yolo.glue.onnx_order",
     ("Exporter.export_onnx(*args, **kwargs)",),  # try_export's wrapper; returns the file (or (file, proto) earlier)
     "FP16 ONNX files of FINE models are written in topological order (valid ONNX); other files are never re-read"),
    ("ultralytics.engine.trainer", "fine_yolo.glue.checkpoints",
     ("BaseTrainer.save_model(self)", "BaseTrainer.final_eval(self)",
      "strip_optimizer(f='best.pt', s='', updates=None)"),
     "checkpoint writes of FINE trainings and compare's runs are atomic (a kill never leaves a truncated last.pt)"),
)
_TARGETS = {row[0] for row in PATCHES}
OFF_VALUES = ("0", "false", "no", "off")  # fine_yolo_startup.pth repeats this tuple (a test checks they agree)


def enabled() -> bool:
    """Whether the hook is on (``FINE_YOLO_HOOK`` unset or not one of 0/false/no/off)."""
    return os.environ.get("FINE_YOLO_HOOK", "1").strip().lower() not in OFF_VALUES


def apply(fullname: str, module) -> None:
    """Run every patch listed for ultralytics module ``fullname`` on ``module``; a failure is one warning."""
    import importlib

    for target, glue, *_ in PATCHES:
        if target != fullname:
            continue
        try:
            importlib.import_module(glue).patch(module)
        except Exception as e:  # never let FINE break ultralytics
            import warnings

            warnings.warn(
                f"fine_yolo could not apply {glue} to {fullname} ({type(e).__name__}: {e}); ultralytics runs without "
                "it.",
                RuntimeWarning,
                stacklevel=2,
            )


class _Loader:
    """Delegates to the real loader, then applies the patches (the two methods of the loader protocol)."""

    def __init__(self, loader, fullname: str) -> None:
        self._loader, self._fullname = loader, fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        apply(self._fullname, module)

    def __getattr__(self, name: str):  # get_source, get_filename, get_resource_reader, ... of the real loader
        return getattr(self._loader, name)


class _Finder:
    """A meta-path finder (only ``find_spec`` is required): answers for the patched modules, None for the rest."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None


def install(force: bool = False) -> None:
    """Install the hook (idempotent); ``force``: even with ``FINE_YOLO_HOOK`` off (``import fine_yolo`` does this).
    Modules already imported are patched at once, the others as they load."""
    if (not force and not enabled()) or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    for fullname in sorted(_TARGETS):
        if fullname in sys.modules:
            apply(fullname, sys.modules[fullname])
    sys.meta_path.insert(0, _Finder())


def register() -> None:
    """Apply every patch now: :func:`install`, then import each patched ultralytics module."""
    import importlib

    install(force=True)
    for fullname in sorted(_TARGETS):
        importlib.import_module(fullname)
