#!/usr/bin/env bash
# Issue 22 §4 on the device machine (no ultralytics there): install the carried .whl/ (ultralytics 8.4.190, ultralytics-thop 2.2.3; docs/performance.md), run scripts/gpu_check.py from this source tree into $OUT.
set -euo pipefail; export PYTHONPATH=/tmp/site:$PWD YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_CONFIG_DIR=/tmp/yolo_config PYTHONUNBUFFERED=1 OUT=${OUT:-runs/gpu_check}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/ultralytics-8.4.190-py3-none-any.whl .whl/ultralytics_thop-2.2.3-py3-none-any.whl
mkdir -p "$OUT" && python3 scripts/gpu_check.py out="$OUT" work=/tmp/gpu_check "$@" 2>&1 | tee "$OUT/gpu_check.log"
