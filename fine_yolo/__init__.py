"""fine_yolo: FINE (Feature Interaction NEtwork, arXiv 2606.14005) for Ultralytics YOLO.

Importing this package is cheap (no torch, no ultralytics): the start-up hook imports it in every interpreter.
``FINE`` and ``register`` are loaded on first access.
"""

__version__ = "0.1.0"
__all__ = ["FINE", "register", "__version__"]


def __getattr__(name: str):
    if name == "FINE":
        from fine_yolo.nn.fine import FINE

        return FINE
    if name == "register":
        from fine_yolo.glue import register

        return register
    raise AttributeError(f"module 'fine_yolo' has no attribute '{name}'")
