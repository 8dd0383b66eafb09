"""Fonts for an offline ultralytics without patching it: DejaVu Sans where ultralytics' ``check_font`` looks first.

ultralytics' ``check_font`` (every dataset check, every plot) returns ``USER_CONFIG_DIR/<name>`` when that file
exists; otherwise it searches matplotlib's font list and then fetches the font (``Arial.ttf``, or
``Arial.Unicode.ttf`` for non-ASCII class names) from the network — even with ``YOLO_OFFLINE=1``, where the request
fails (after up to its 3 s timeout) and the function returns None. Rather than replacing that function in every
process, :func:`place_fonts` copies matplotlib's bundled DejaVu Sans to those two names in a config directory, where
ultralytics' own lookup finds it. The tests do it for their throwaway ``YOLO_CONFIG_DIR`` (tests/conftest.py);
``fine-yolo compare`` (and the demo and recipes, which run through it) does it, offline only, for ultralytics'
config directory of its runs (:func:`offline_fonts`). Online, ultralytics downloads Arial itself, as upstream. The
files stay (as a downloaded Arial would): delete them to get Arial at the next online run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

FONTS = ("Arial.ttf", "Arial.Unicode.ttf")  # the names ultralytics' check_font asks for (ASCII, non-ASCII labels)


def place_fonts(config_dir: Path | str) -> list[Path]:
    """Copy matplotlib's DejaVu Sans to each name of :data:`FONTS` in ``config_dir`` (ultralytics' ``USER_CONFIG_DIR``:
    ``$YOLO_CONFIG_DIR/Ultralytics`` when that is set) where no such file is; return the files it wrote. A directory
    it cannot write to is left alone (ultralytics then behaves as upstream: it tries the download)."""
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    config_dir = Path(config_dir)
    placed = []
    try:
        config_dir.mkdir(parents=True, exist_ok=True)
        for name in FONTS:
            target = config_dir / name
            if not target.exists():
                shutil.copyfile(source, target)
                placed.append(target)
    except OSError:
        pass
    return placed


def offline_fonts() -> list[Path]:
    """:func:`place_fonts` in ultralytics' ``USER_CONFIG_DIR`` when ultralytics is offline (its ``ONLINE`` is False);
    online nothing. Call before starting ultralytics processes that share this process's environment."""
    import ultralytics.utils as utils

    return [] if utils.ONLINE else place_fonts(utils.USER_CONFIG_DIR)
