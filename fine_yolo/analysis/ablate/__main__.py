"""``python -m fine_yolo.analysis.ablate key=value ...``: the ``fine-yolo ablate`` command."""

import sys

from fine_yolo.analysis.ablate.command import main

sys.exit(main(sys.argv[1:]))
