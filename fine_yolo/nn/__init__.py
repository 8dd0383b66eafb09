"""Pure-torch building blocks (no ultralytics import)."""

from fine_yolo.nn.fine import FINE

__all__ = ["FINE"]
