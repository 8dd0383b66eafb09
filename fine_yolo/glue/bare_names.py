"""Patch of ``ultralytics.utils.checks.check_file``: bare names of this package's YAMLs resolve from any directory.

``check_yaml`` and the dataset checks find files through ``check_file``, which looks only in the working directory,
inside the ultralytics package and at the site-packages root. A bare name such as ``yolov8s-fine.yaml`` or
``fine-synth.yaml`` that is not in the working directory resolves to the YAML shipped here
(:func:`fine_yolo.assets.packaged_yaml`); every other argument goes to ultralytics unchanged.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Callable

from fine_yolo.assets import packaged_yaml
from fine_yolo.glue._wrap import rebind, wrap_once


def wrap_check_file(original: Callable) -> Callable:
    """Return a ``check_file`` that also finds this package's YAMLs by bare name."""

    def check_file(file, *args, **kwargs):
        name = str(file).strip() if isinstance(file, (str, Path)) else ""
        if name and "://" not in name and not Path(name).exists():
            found = packaged_yaml(name)
            if found is not None:
                file = str(found)
        return original(file, *args, **kwargs)

    return wrap_once(original, check_file)


def patch(checks: ModuleType) -> None:
    """Install the resolver in ``ultralytics.utils.checks`` and in the modules that imported it by name."""
    original = checks.check_file
    wrapped = wrap_check_file(original)
    if wrapped is not original:
        checks.check_file = wrapped
        rebind("check_file", original, wrapped)
