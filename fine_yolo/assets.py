"""Where the packaged model and data YAMLs live, and how bare names resolve to them. No torch import.

After a wheel install the YAMLs sit in ``fine_yolo/cfg`` (hatch force-includes the repository's top-level ``cfg/``
there); in a source checkout or an editable install they are read from ``cfg/`` beside the package.
"""

from __future__ import annotations

import re
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def cfg_dir() -> Path:
    """Return the directory holding ``models/`` and ``datasets/`` (wheel layout first, then the source tree)."""
    for candidate in (_PACKAGE / "cfg", _PACKAGE.parent / "cfg"):
        if (candidate / "models").is_dir():
            return candidate
    looked = f"{_PACKAGE / 'cfg'} and {_PACKAGE.parent / 'cfg'}"
    raise FileNotFoundError(f"fine_yolo's cfg/ directory is missing (looked in {looked})")


def packaged_yaml(name: str) -> Path | None:
    """Return the packaged model or data YAML called ``name`` (a bare file name), or None.

    ``yolov11*``, ``yolov12*`` and ``yolov26*`` also find ultralytics' v-less spelling (``yolo12-fine.yaml``),
    because users type both and ultralytics itself names these files without the ``v`` (``yolov10`` keeps it).
    """
    if not name or Path(name).name != name or not name.endswith((".yaml", ".yml")):
        return None
    names = [name, re.sub(r"^yolov(1[1-9]|2\d)", r"yolo\1", name)]
    root = cfg_dir()
    for sub in ("models", "datasets"):
        for n in names:
            path = root / sub / n
            if path.is_file():
                return path
    return None

