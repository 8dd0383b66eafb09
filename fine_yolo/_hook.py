"""The start-up hook: make ultralytics FINE-aware in every interpreter, at no cost until ultralytics is imported.

``fine_yolo_startup.pth`` (installed at the site-packages root) calls :func:`install` at interpreter start. It adds a
meta-path finder that does nothing but compare module names until one of the ultralytics modules in ``_TARGETS`` is
imported; right after each of them has executed, the matching patch of
``fine_yolo.ultralytics_glue`` is applied. Importing torch or ultralytics here would cost every Python process more
than a second; this costs microseconds.

The hook can never break ultralytics: every failure becomes one warning and ultralytics runs unpatched. Turn it off
with ``FINE_YOLO_HOOK=0`` and use the ``fine-yolo`` console script (or ``fine_yolo.register()``) instead.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
import warnings

# module name -> name of the glue function applied right after the module has executed
_TARGETS = {
    "ultralytics.utils.checks": "patch_checks",
    "ultralytics.nn.tasks": "patch_tasks",
    "ultralytics.engine.exporter": "patch_exporter",
    "ultralytics.cfg": "patch_cfg",
}
_OFF = {"0", "false", "no", "off"}


def enabled() -> bool:
    """Whether the hook is on (``FINE_YOLO_HOOK`` unset or not one of 0/false/no/off)."""
    return os.environ.get("FINE_YOLO_HOOK", "1").strip().lower() not in _OFF


def _apply(fullname: str, module) -> None:
    try:
        from fine_yolo import ultralytics_glue

        getattr(ultralytics_glue, _TARGETS[fullname])(module)
    except Exception as e:  # never let FINE break ultralytics
        warnings.warn(
            f"fine_yolo could not register FINE with {fullname} ({type(e).__name__}: {e}); ultralytics runs without "
            "FINE. Use `fine-yolo` instead of `yolo`, or call fine_yolo.register().",
            RuntimeWarning,
            stacklevel=2,
        )


class _Loader(importlib.abc.Loader):
    """Delegates to the real loader, then applies the patch."""

    def __init__(self, loader, fullname: str) -> None:
        self._loader, self._fullname = loader, fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _apply(self._fullname, module)

    def __getattr__(self, name: str):  # get_source, get_filename, ... of the real loader
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
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


def install() -> None:
    """Install the hook (idempotent). Modules already imported are patched at once."""
    if not enabled() or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    for fullname in _TARGETS:
        if fullname in sys.modules:
            _apply(fullname, sys.modules[fullname])
    sys.meta_path.insert(0, _Finder())
