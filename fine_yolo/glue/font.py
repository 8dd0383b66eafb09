"""Patch of ``ultralytics.utils.checks.check_font``: offline, a local font stands in for the download.

ultralytics' ``check_font`` (called by every dataset check and plot) looks in its config directory and matplotlib's
font list, then downloads the font (``Arial.ttf``, or ``Arial.Unicode.ttf`` for non-ASCII class names) — even with
``YOLO_OFFLINE=1``, where the request waits for its timeout and the function returns None, which the plotting code
then cannot open. Online, ultralytics' function runs unchanged (a CJK label still gets Arial Unicode); only when the
machine is offline, or the download returns nothing, the answer becomes matplotlib's bundled DejaVu Sans, with one
warning naming the font it stands in for.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Callable

from fine_yolo.glue._wrap import rebind, wrap_once

_warned: set[str] = set()


def _online() -> bool:
    import ultralytics.utils as utils

    return bool(getattr(utils, "ONLINE", False))


def _local(font: str, config_dir: Path) -> str | None:
    """The font as ultralytics would find it without downloading (its config directory, matplotlib's list)."""
    from matplotlib import font_manager

    file = config_dir / Path(font).name
    if file.exists():
        return str(file)
    return next((f.fname for f in font_manager.fontManager.ttflist if font in f.fname), None)


def _stand_in(font: str) -> str:
    from matplotlib import font_manager
    from ultralytics.utils import LOGGER

    if font not in _warned:
        _warned.add(font)
        LOGGER.warning(f"fine_yolo: {font} is not on this machine and cannot be downloaded; using DejaVu Sans")
    return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=True)


def wrap_check_font(original: Callable, config_dir: Path, online: Callable[[], bool] = _online) -> Callable:
    """Return a ``check_font`` that is ``original`` online and never downloads offline."""

    def check_font(font="Arial.ttf", *args, **kwargs):
        if online():
            found = original(font, *args, **kwargs)
            return found if found is not None else _stand_in(str(font))
        return _local(str(font), config_dir) or _stand_in(str(font))

    return wrap_once(original, check_font)


def patch(checks: ModuleType) -> None:
    """Install the offline-aware ``check_font`` in ``ultralytics.utils.checks`` and its importers."""
    original = checks.check_font
    wrapped = wrap_check_font(original, Path(checks.USER_CONFIG_DIR))
    if wrapped is not original:
        checks.check_font = wrapped
        rebind("check_font", original, wrapped)
