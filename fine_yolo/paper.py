"""The paper's reported numbers (arXiv 2606.14005), in one place: what our tables print beside our measurements."""

from __future__ import annotations

# Table 1: COCO val2017; params (M), GFLOPs, FPS (Jetson Orin Nano, TensorRT 10.7, FP16) and AP metrics (%).
TABLE1: dict[str, dict[str, float]] = {
    "yolov8s": {"params_m": 11.2, "gflops": 28.6, "fps": 189,
                "AP50:95": 45.0, "AP50": 61.8, "APs": 26.0, "APm": 49.9, "APl": 61.0},
    "yolov8s-fine": {"params_m": 12.3, "gflops": 29.6, "fps": 177,
                     "AP50:95": 45.8, "AP50": 62.7, "APs": 27.0, "APm": 51.2, "APl": 62.1},
    "yolov10s": {"params_m": 8.1, "gflops": 24.8, "fps": 173,
                 "AP50:95": 46.2, "AP50": 63.0, "APs": 26.9, "APm": 51.1, "APl": 63.7},
    "yolov10s-fine": {"params_m": 9.0, "gflops": 25.7, "fps": 153,
                      "AP50:95": 46.7, "AP50": 63.6, "APs": 28.2, "APm": 51.4, "APl": 63.2},
    "yolo12s": {"params_m": 9.1, "gflops": 19.4, "fps": 112,
                "AP50:95": 47.6, "AP50": 64.5, "APs": 28.3, "APm": 52.7, "APl": 65.9},
    "yolo12s-fine": {"params_m": 10.5, "gflops": 21.2, "fps": 106,
                     "AP50:95": 48.2, "AP50": 65.1, "APs": 30.6, "APm": 53.3, "APl": 65.2},
}

# Table 8: VisDrone-DET2019 at 800x800, AP50 (%).
TABLE8: dict[str, dict[str, float]] = {"yolov8s": {"AP50": 46.3}, "yolov8s-fine": {"AP50": 47.2}}

# Table 3: RT-DETR R18 encoder, AATS against vanilla full-resolution cross-level attention: GFLOPs, peak memory (MB)
# and FPS (baseline 80 FPS without the module).
TABLE3: dict[str, dict[str, float]] = {
    "vanilla": {"gflops": 18.0, "peak_mb": 1223.48, "fps": 57},
    "aats": {"gflops": 1.2, "peak_mb": 1.17, "fps": 78},
}
TABLE3_BASE_FPS = 80

# Appendix F, eq. 13: E[sigma_high] / E[sigma_low] of the ERF (eq. 12 Gaussian fit) between adjacent ResNet-50
# stages, at the centre of each stage's last map, over COCO val2017, averaged over stage pairs 1-2, 2-3, 3-4.
ERF_RATIO_RESNET50 = 2.29
