"""Patch of ``ultralytics.utils.checks.check_file``: FINE model YAMLs and this package's data YAMLs by name.

``check_yaml`` and the dataset checks find files through ``check_file``, which looks only in the working directory,
inside the ultralytics package and at the site-packages root. A missing ``<upstream>-fine.yaml`` (a bare name such as
``yolov8s-p2-fine.yaml`` or a path such as ``path/to/mine-fine.yaml``) resolves to the FINE YAML rendered from the
upstream YAML ultralytics finds (:func:`fine_yolo.models.fine_yaml_path`); a bare ``fine-synth.yaml`` or
``VisDrone-fine.yaml`` to the data YAML shipped here (:func:`fine_yolo.assets.packaged_yaml`). Every other argument,
and every file that exists, goes to ultralytics unchanged.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Callable

from fine_yolo.assets import packaged_yaml
from fine_yolo.glue._wrap import rebind, wrap_once


def wrap_check_file(original: Callable) -> Callable:
    """Return a ``check_file`` that also finds FINE model YAMLs and this package's data YAMLs by name."""

    def check_file(file, *args, **kwargs):
        name = str(file).strip() if isinstance(file, (str, Path)) else ""
        if name and "://" not in name and not Path(name).exists():
            found = packaged_yaml(name)
            if found is None and "-fine" in Path(name).stem:  # a plain model's name never imports the renderer
                from fine_yolo.models import fine_yaml_path

                found = fine_yaml_path(name)
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
