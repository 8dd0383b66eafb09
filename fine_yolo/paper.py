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

# Table 8 (Appendix E): VisDrone-DET2019 at 800x800, GFLOPs at 800 and AP50 (%). YOLOv6-S is "v3.0" in the paper.
TABLE8: dict[str, dict[str, float]] = {
    "yolov5s": {"gflops": 37.5, "AP50": 45.9}, "yolov5s-fine": {"gflops": 40.8, "AP50": 46.9},
    "yolov6s": {"gflops": 72.2, "AP50": 44.8}, "yolov6s-fine": {"gflops": 74.5, "AP50": 45.6},
    "yolov8s": {"gflops": 44.7, "AP50": 46.3}, "yolov8s-fine": {"gflops": 49.2, "AP50": 47.2},
}
TABLE8_IMGSZ = 800

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

# Table 3 in full (RT-DETR R18, COCO, 1x schedule): each attention strategy inside FINE, as increments over the
# baseline (params M, GFLOPs, peak memory MB) and absolute FPS, latency (ms) and AP. The paper prints +params only
# for vanilla (+1.0M); the strategies share FINE's projections, so None stands for "not printed".
TABLE3_BASELINE: dict[str, float] = {"params_m": 20.2, "gflops": 61.74, "peak_mb": 64.50, "fps": 80,
                                     "latency_ms": 12.81, "AP": 38.7}
TABLE3_ROWS: dict[str, dict[str, float | None]] = {
    "vanilla": {"d_params_m": 1.0, "d_gflops": 18.0, "d_peak_mb": 1223.48, "fps": 57, "latency_ms": 17.74, "AP": 39.5},
    "window": {"d_params_m": None, "d_gflops": 8.9, "d_peak_mb": 65.11, "fps": 68, "latency_ms": 15.05, "AP": 39.7},
    "area": {"d_params_m": None, "d_gflops": 10.0, "d_peak_mb": 65.67, "fps": 69, "latency_ms": 14.71, "AP": 39.2},
    "linear": {"d_params_m": None, "d_gflops": 7.0, "d_peak_mb": 18.42, "fps": 64, "latency_ms": 16.05, "AP": 39.0},
    "aats": {"d_params_m": None, "d_gflops": 1.2, "d_peak_mb": 1.17, "fps": 78, "latency_ms": 13.24, "AP": 39.7},
}

# Fig. 5 / §5.3.2 (Faster R-CNN R50, COCO, 1x): AATS sampling ratio r for k in {1, 2}, the same k at every stage.
# Only the numbers the text states: +GFLOPs over the baseline and AP (%); Fig. 5 itself is a picture.
FIG5_BASELINE_AP = 37.0  # Faster R-CNN R50 without FINE (Table 4's baseline column)
FIG5: dict[tuple[int, int], dict[str, float | None]] = {  # (r, k) -> values
    (1, 1): {"d_gflops": 19.3, "AP": 38.2},
    (1, 2): {"d_gflops": 2.5, "AP": 38.1},
    (2, 1): {"d_gflops": None, "AP": 38.4},
    (2, 2): {"d_gflops": None, "AP": 38.2},
    (4, 1): {"d_gflops": 1.9, "AP": 38.1},
    (4, 2): {"d_gflops": 0.6, "AP": 38.1},
}

# Table 4 (Faster R-CNN R50, COCO, 1x, C = 256): AP (%) by per-head dim d (h = 256 / d heads); baseline 37.0.
TABLE4_BASELINE_AP = 37.0
TABLE4: dict[int, float] = {256: 37.9, 64: 38.1, 32: 38.1, 16: 38.2, 8: 38.2, 4: 38.1, 2: 38.0}

# Table 6 (Faster R-CNN R50, COCO, 1x): AATS's Down() operator. MACs and extra params are printed for DWConv only
# (pooling adds none); 6.14K = 256 x (2^2 + 4^2 + 2^2), a depthwise kernel = stride at a k=1 and a k=2 stage.
TABLE6: dict[str, dict[str, float | None]] = {
    "dwconv": {"macs_m": 2.46, "d_params_k": 6.14, "AP": 38.1},
    "max": {"macs_m": None, "d_params_k": 0.0, "AP": 38.2},
    "avg": {"macs_m": None, "d_params_k": 0.0, "AP": 38.2},
}
