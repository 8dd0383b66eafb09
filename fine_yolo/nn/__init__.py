"""Pure-torch building blocks (no ultralytics import): the FINE block and the fusion row that holds it."""

from fine_yolo.nn.fine import FINE
from fine_yolo.nn.fusion import FINEConcat

__all__ = ["FINE", "FINEConcat"]
