"""Params and GFLOPs of one model, counted two ways (``fine-yolo flops`` and ``fine-yolo bench`` print them).

* ``thop``: ultralytics' own ``get_flops`` (what ``model.info()`` prints). thop counts module hooks, so it misses
  functional attention (the matmuls inside ``F.scaled_dot_product_attention``) and under-counts FINE and YOLO12.
* ``torch``: ``torch.utils.flop_counter.FlopCounterMode`` with SDPA forced to the math backend, which counts every
  matmul. It reads yolov8s at 640 as 28.6 GFLOPs, the paper's Table 1 figure, so this is the column to compare with
  the paper. FLOPs = 2 x multiply-accumulates, as in ultralytics and the paper.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Complexity:
    model: str
    params: int
    gflops_thop: float  # ultralytics' info() figure (misses functional attention)
    gflops_torch: float  # FlopCounterMode with math-backend attention (counts everything)


def torch_gflops(model, imgsz: int | tuple[int, int] = 640) -> float:
    """GFLOPs of one forward pass at ``imgsz`` counted by torch's FlopCounterMode, attention matmuls included."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, p.shape[1] if p.dim() == 4 else 3, h, w, dtype=p.dtype, device=p.device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def measure(model_name: str, imgsz: int = 640) -> Complexity:
    """Build ``model_name`` (a YAML or checkpoint ultralytics can load) and count its params and GFLOPs."""
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    net = YOLO(model_name, verbose=False).model
    return Complexity(model_name, get_num_params(net), get_flops(net, imgsz), torch_gflops(net, imgsz))
