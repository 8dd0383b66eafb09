"""Where the packaged data YAMLs live, and how bare names resolve to them. No torch import.

After a wheel install the YAMLs sit in ``fine_yolo/cfg`` (hatch force-includes the repository's top-level ``cfg/``
there); in a source checkout or an editable install they are read from ``cfg/`` beside the package.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def cfg_dir() -> Path:
    """Return the directory holding ``datasets/`` (wheel layout first, then the source tree)."""
    for candidate in (_PACKAGE / "cfg", _PACKAGE.parent / "cfg"):
        if (candidate / "datasets").is_dir():
            return candidate
    looked = f"{_PACKAGE / 'cfg'} and {_PACKAGE.parent / 'cfg'}"
    raise FileNotFoundError(f"fine_yolo's cfg/ directory is missing (looked in {looked})")


def packaged_yaml(name: str) -> Path | None:
    """Return the packaged data YAML called ``name`` (a bare file name: ``fine-synth.yaml``), or None. (FINE model
    YAMLs are rendered from ultralytics' own: :func:`fine_yolo.models.fine_yaml_path`.)"""
    if not name or Path(name).name != name or not name.endswith((".yaml", ".yml")):
        return None
    path = cfg_dir() / "datasets" / name
    return path if path.is_file() else None
