"""Test-session settings: everything offline, ultralytics' state in a temporary directory."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Before anything imports ultralytics: no downloads, no pip installs, settings/fonts/datasets in a throwaway dir.
_STATE = Path(tempfile.mkdtemp(prefix="fine_yolo_tests_"))
atexit.register(shutil.rmtree, _STATE, ignore_errors=True)  # leave no state behind
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", str(_STATE / "config"))
os.environ.setdefault("MPLBACKEND", "Agg")

# Offline, ultralytics' check_font would try the network for Arial; a stand-in font where it looks first (its
# USER_CONFIG_DIR, $YOLO_CONFIG_DIR/Ultralytics) keeps every test and its subprocesses off the network.
from fine_yolo.glue.font import place_fonts  # noqa: E402

place_fonts(Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics")


def offline_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: offline ultralytics, this session's config dir, plus ``extra``."""
    env = dict(os.environ)
    env.update({"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def output_tensors(out) -> list:
    """Every tensor in a (nested) model output, in a fixed order (dict keys sorted)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in output_tensors(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in output_tensors(v)]
    return []
