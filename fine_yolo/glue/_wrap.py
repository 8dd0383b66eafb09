"""How every patch wraps an ultralytics function: once, dressed as the original, marked as ours."""

from __future__ import annotations

import functools
import sys
from typing import Callable


def wrap_once(original: Callable, wrapper: Callable) -> Callable:
    """``wrapper`` dressed as ``original`` and marked, or ``original`` itself if it is already one of ours."""
    if getattr(original, "__fine_yolo__", False):
        return original
    wrapper = functools.wraps(original)(wrapper)
    wrapper.__fine_yolo__ = True
    return wrapper


def rebind(name: str, original: Callable, replacement: Callable) -> None:
    """Point every loaded ultralytics module that imported ``original`` by name at ``replacement``.

    ``from ultralytics.utils.checks import check_font`` copies the function into the importing module, so replacing it
    in ``checks`` alone would miss the modules that were imported before the patch.
    """
    for mod_name, module in list(sys.modules.items()):
        if (mod_name == "ultralytics" or mod_name.startswith("ultralytics.")) and module is not None:
            if getattr(module, name, None) is original:
                setattr(module, name, replacement)
