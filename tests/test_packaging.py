"""A normal (non-editable) wheel install: YAMLs inside the package, the start-up hook at the site-packages root."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from conftest import offline_env

ROOT = Path(__file__).resolve().parents[1]


def _dependency_dirs() -> list[str]:
    """Where torch, ultralytics & co. are installed (a venv with system site-packages spreads them over two)."""
    import torch
    import ultralytics

    dirs = [sysconfig.get_paths()["purelib"], *(str(Path(m.__file__).parents[1]) for m in (ultralytics, torch))]
    return list(dict.fromkeys(dirs))


def test_wheel_ships_yamls_and_hook_and_works_without_the_source_tree(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), ROOT],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = wheel_dir.glob("fine_yolo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "fine_yolo_startup.pth" in names
    assert "fine_yolo/cfg/datasets/fine-synth.yaml" in names
    assert not any("/models/" in n and n.endswith("-fine.yaml") for n in names)  # rendered on demand
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    # -S: no site-packages .pth processing, so the editable checkout is invisible; the wheel's own .pth installs the
    # hook, and torch/ultralytics come from the normal site-packages appended without their .pth files.
    code = (
        "import sys, site; site.addsitedir(sys.argv[1]); sys.path.extend(sys.argv[2:]);"
        "from ultralytics import YOLO; import fine_yolo; print(fine_yolo.__file__);"
        "m = YOLO('yolov12s-fine.yaml', verbose=False); print(type(m.model.model[10].fine).__name__)"
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code, str(target), *_dependency_dirs()],
        cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    file, cls = proc.stdout.split()[-2:]
    assert Path(file).is_relative_to(target) and cls == "FINE"
