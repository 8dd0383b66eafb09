"""The glue that teaches an unmodified ultralytics about FINE: one small module per patched seam.

Each module wraps one ultralytics function through ``patch(module)`` and says in its docstring what it changes and
for whom (FINE models, and compare's runs; everyone else gets ultralytics' own function's result); the list of
patches, the seams they rely on and their reasons is :data:`fine_yolo._hook.PATCHES`, which the hook applies as
ultralytics loads each module (``import fine_yolo`` installs it). :func:`register` applies them all at once.
``font`` patches nothing: it puts a font file where ultralytics looks for one (offline use without a patch).
"""

from __future__ import annotations

from fine_yolo._hook import register

__all__ = ["register"]
