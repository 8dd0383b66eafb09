"""The glue that teaches an unmodified ultralytics about FINE: one small module per patched seam.

Each module wraps one ultralytics function through ``patch(module)`` and says in its docstring what it changes and
for whom; the list of patches and their reasons is :data:`fine_yolo._hook.PATCHES`, which the start-up hook applies
as ultralytics loads each module, and :func:`register` applies eagerly.
"""

from __future__ import annotations


def register() -> None:
    """Make ultralytics FINE-aware in this process (idempotent; imports the patched ultralytics modules)."""
    import importlib

    from fine_yolo._hook import PATCHES

    for target, glue, _ in PATCHES:
        importlib.import_module(glue).patch(importlib.import_module(target))
