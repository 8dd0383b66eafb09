"""Overhead of FINE for every shipped family and task at the s scale (RT-DETR: l, x, R50): params and GFLOPs at 640.

    python scripts/family_overhead.py [imgsz=640] [json=out.json]
    python scripts/family_overhead.py help

GFLOPs are counted twice, as ``fine-yolo flops`` does (fine_yolo.analysis.complexity): ultralytics' thop figure
(``info()``, which misses functional attention) and torch's FlopCounterMode with math attention ("attention
counted"). RT-DETR YAMLs build only through ``ultralytics.RTDETR``, so models are built with fine_yolo.models.build.
The paper's own overheads are printed where fine_yolo.paper has them.
"""

import json
import re
import sys
from pathlib import Path

from tqdm import tqdm

from fine_yolo.analysis.complexity import torch_gflops
from fine_yolo.args import Command, Option
from fine_yolo.models import FINE_MODELS, baseline_name, build, scales
from fine_yolo.paper import TABLE1
from fine_yolo.tables import markdown_table, millions, signed, signed_millions


def s_models() -> list[str]:
    """One FINE model per family and task: its s scale (yolov9s, yolov10s), RT-DETR's l, x and R50."""
    out = []
    for name, m in FINE_MODELS.items():
        if m.family == "RT-DETR":
            out += [] if "resnet101" in name else [name]  # R101 has R50's neck: the same FINE
        else:
            out += [n for n in scales(name) if re.match(r"^yolov?\d+s", n)]
    return out


def measure(name: str, imgsz: int) -> dict:
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    net = build(name).model
    return {"params": get_num_params(net), "gflops_thop": get_flops(net, imgsz), "gflops": torch_gflops(net, imgsz)}


def _run(args: dict, extra: dict) -> int:
    imgsz, out_json = args["imgsz"], args["json"]
    rows, cells = [], []
    for fine in tqdm(s_models(), desc="building and counting"):
        base = baseline_name(fine)
        b, f = measure(base, imgsz), measure(fine, imgsz)
        key = Path(base).stem
        paper, paper_fine = TABLE1.get(key), TABLE1.get(f"{key}-fine")
        rows.append({"model": key, "baseline": b, "fine": f})
        cells.append([
            key, millions(b["params"]), f"{b['gflops_thop']:.1f}", f"{b['gflops']:.1f}",
            signed_millions(f["params"] - b["params"]), f"{signed(f['gflops'] - b['gflops'], '.2f')}G",
            f"{signed(100 * (f['gflops'] / b['gflops'] - 1), '.1f')}%",
            f"{paper_fine['params_m'] - paper['params_m']:+.1f}M / {paper_fine['gflops'] - paper['gflops']:+.1f}G"
            if paper else None,
        ])
    header = ["model", "params", "GFLOPs (ultralytics `info()`)", "GFLOPs (attention counted)", "+ FINE params",
              "+ FINE GFLOPs (attention counted)", "+ FINE GFLOPs %", "paper's + FINE (Table 1)"]
    print(markdown_table(header, cells))
    if out_json:
        Path(out_json).write_text(json.dumps(rows, indent=2))
    return 0


COMMAND = Command(
    options={"imgsz": Option(640, "square input size of the count"), "json": Option("", "also write the rows here")},
    run=_run,
    example="python scripts/family_overhead.py imgsz=640 json=overhead.json",
    description=__doc__.split("\n\n")[1],
)


if __name__ == "__main__":
    sys.exit(COMMAND.main(sys.argv[1:], "python scripts/family_overhead.py"))
