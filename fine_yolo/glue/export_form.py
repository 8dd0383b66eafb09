"""Patch of ``ultralytics.engine.exporter.Exporter.__call__``: FINE blocks are recorded in their export's form.

ultralytics sets ``export``/``format`` on its own heads before recording a model; FINE's ``form`` attribute
(:mod:`fine_yolo.nn.fine`, "Forms") is set here the same way, for the duration of the export, on the FINE blocks of
the model: ``"conv"`` for ONNX and TensorRT (``format=onnx``, ``engine``), the eager default ``"tokens"`` for every
other format (OpenVINO above all, whose fused attention kernel matches it); :func:`fine_yolo.nn.fine.form_for` says
which. Each block gets its own form back afterwards. A model without FINE is handed to ultralytics untouched.

Relies on ``Exporter.__call__(self, model)`` reading the format from ``self.args.format`` (ultralytics 8.3.215-8.4.x).
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable

from torch import nn

from fine_yolo.glue._wrap import wrap_once
from fine_yolo.nn.fine import block_form, form_for


def wrap_exporter_call(original: Callable) -> Callable:
    """Return an ``Exporter.__call__`` that exports a FINE model's blocks in the form of ``self.args.format``."""

    def __call__(self, *args, **kwargs):
        model = args[0] if args else kwargs.get("model")
        if not isinstance(model, nn.Module):  # not ours to judge: ultralytics' own call, and its own errors
            return original(self, *args, **kwargs)
        with block_form(model, form_for(str(getattr(self.args, "format", "")))):
            return original(self, *args, **kwargs)

    return wrap_once(original, __call__)


def patch(exporter: ModuleType) -> None:
    exporter.Exporter.__call__ = wrap_exporter_call(exporter.Exporter.__call__)
