#!/usr/bin/env bash
# Paper Table 1 on a Jetson Orin Nano in one go: YOLOv8-S, YOLOv10-S and YOLOv12-S, each without and with FINE,
# TensorRT FP16 at 640x640, batch 1 — built on this board, timed interleaved by `fine-yolo bench`.
#
#   scripts/jetson_table1.sh [OUT_DIR]                    # untrained weights (speed does not depend on them)
#   WEIGHTS=~/weights scripts/jetson_table1.sh            # uses $WEIGHTS/yolov8s.pt and $WEIGHTS/yolov8s-fine.pt, ...
#
# Environment knobs: NVP_MODE (nvpmodel mode, default 0; `nvpmodel -q --verbose` lists the board's modes, MAXN SUPER
# on JetPack 6.2 "Super" boards is usually 2), LOCK_CLOCKS=0 to leave clocks alone, WORKSPACE (GiB, default 2: 4 GB
# boards can run out of memory building), ITERS (default 1000), SECONDS_MIN (default 30), CUDA_GRAPH (default True).
# Writes OUT_DIR/<model>.json (every raw sample), OUT_DIR/<model>.md and OUT_DIR/table1.md.
set -euo pipefail

OUT=${1:-runs/jetson_table1}
NVP_MODE=${NVP_MODE:-0}
LOCK_CLOCKS=${LOCK_CLOCKS:-1}
WORKSPACE=${WORKSPACE:-2}
ITERS=${ITERS:-1000}
SECONDS_MIN=${SECONDS_MIN:-30}
CUDA_GRAPH=${CUDA_GRAPH:-True}
export YOLO_OFFLINE=${YOLO_OFFLINE:-1} YOLO_AUTOINSTALL=${YOLO_AUTOINSTALL:-False}
mkdir -p "$OUT"

if [ ! -e /etc/nv_tegra_release ]; then
  echo "warning: this does not look like a Jetson (/etc/nv_tegra_release missing); timing anyway" >&2
fi
if [ "$LOCK_CLOCKS" = 1 ] && command -v jetson_clocks >/dev/null; then
  # Maximum power mode and clocks pinned at their maximum: without this the governors scale clocks with load and
  # a 5 ms network is timed at whatever clock the last idle gap left. -n: never prompt (skip with a warning).
  if sudo -n nvpmodel -m "$NVP_MODE" && sudo -n jetson_clocks; then
    echo "nvpmodel mode $NVP_MODE and jetson_clocks set" >&2
    sleep 5  # let the fan and clocks settle
  else
    echo "warning: could not run 'sudo nvpmodel -m $NVP_MODE && sudo jetson_clocks' (needs passwordless sudo);" \
         "run them yourself first - the bench reports whether clocks are locked" >&2
  fi
fi

jsons=()
for m in yolov8s yolov10s yolo12s; do
  if [ -n "${WEIGHTS:-}" ]; then
    model="$WEIGHTS/$m-fine.pt"; baseline="$WEIGHTS/$m.pt"
  else
    model="$m-fine.yaml"; baseline="$m.yaml"
  fi
  echo "=== $baseline vs $model ===" >&2
  fine-yolo bench model="$model" baseline="$baseline" format=engine device=0 half=True imgsz=640 \
    cuda_graph="$CUDA_GRAPH" workspace="$WORKSPACE" iters="$ITERS" seconds="$SECONDS_MIN" warmup=200 block=20 \
    out="$OUT" json="$OUT/$m.json" | tee "$OUT/$m.md"
  jsons+=("$OUT/$m.json")
done

python - "${jsons[@]}" <<'PY' | tee "$OUT/table1.md"
import sys
from fine_yolo.bench.report import summary_from_files
print(summary_from_files(sys.argv[1:]))
PY
