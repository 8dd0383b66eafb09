"""fine_yolo: FINE (Feature Interaction NEtwork, arXiv 2606.14005) for Ultralytics YOLO.

Importing this package is cheap (no torch, no ultralytics): the start-up hook imports it in every interpreter.
It is also the one place FINE is registered: importing it installs the hook (:func:`fine_yolo._hook.install`, even
with ``FINE_YOLO_HOOK=0``), which patches ultralytics as its modules load, so ``import fine_yolo`` before or after
``from ultralytics import YOLO`` is all a Python user with the start-up hook off needs. ``FINE`` and ``register``
(apply every patch now) are loaded on first access.
"""

from fine_yolo import _hook

__version__ = "0.1.0"
__all__ = ["FINE", "register", "__version__"]

_hook.install(force=True)


def __getattr__(name: str):
    if name == "FINE":
        from fine_yolo.nn.fine import FINE

        return FINE
    if name == "register":
        return _hook.register
    raise AttributeError(f"module 'fine_yolo' has no attribute '{name}'")
