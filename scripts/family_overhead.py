"""Overhead of FINE for every shipped family and task at the s scale (RT-DETR: l, x, R50): params and GFLOPs at 640.

    python scripts/family_overhead.py [imgsz=640] [json=out.json]
    python scripts/family_overhead.py help

GFLOPs are counted twice, as ``fine-yolo flops`` does (fine_yolo.bench.complexity): ultralytics' thop figure
(``info()``, which misses functional attention) and torch's FlopCounterMode with math attention ("attention
counted"). RT-DETR YAMLs build only through ``ultralytics.RTDETR``, so models are built with fine_yolo.models.build.
The paper's own overheads are printed where fine_yolo.paper has them (Table 1 at 640; Table 8, VisDrone, gives GFLOPs
at 800 px, so those models are also counted at 800).
"""

import json
import re
import sys
from pathlib import Path

from tqdm import tqdm

from fine_yolo.args import Command, Option
from fine_yolo.bench.complexity import torch_gflops
from fine_yolo.models import baseline_name, build, catalogue, scales
from fine_yolo.paper import TABLE1, TABLE8, TABLE8_IMGSZ
from fine_yolo.tables import markdown_table, millions, signed, signed_millions


def s_models() -> list[str]:
    """One FINE model per family and task: its s scale (yolov9s, yolov10s), RT-DETR's l, x and R50."""
    out = []
    for name, m in catalogue().items():
        if m.family == "RT-DETR":
            out += [] if "resnet101" in name else [name]  # R101 has R50's neck: the same FINE
        else:
            out += [n for n in scales(name) if re.match(r"^yolov?\d+s", n)]
    return out


def measure(name: str, imgsz: int) -> dict:
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    net = build(name).model
    return {"params": get_num_params(net), "gflops_thop": get_flops(net, imgsz), "gflops": torch_gflops(net, imgsz)}


def _paper_overhead(key: str, paper: dict | None, paper_fine: dict | None, row: dict) -> str | None:
    """The paper's FINE overhead for this model: Table 1 (params, GFLOPs at 640), Table 8 (GFLOPs at 800, ours too)."""
    parts = []
    if paper and paper_fine:
        parts.append(f"{paper_fine['params_m'] - paper['params_m']:+.1f}M / "
                     f"{paper_fine['gflops'] - paper['gflops']:+.1f}G (Table 1)")
    if key in TABLE8:
        ours = row[f"gflops_{TABLE8_IMGSZ}"]
        parts.append(f"{TABLE8[f'{key}-fine']['gflops'] - TABLE8[key]['gflops']:+.1f}G at {TABLE8_IMGSZ} px "
                     f"(Table 8; ours there {signed(ours['fine'] - ours['baseline'], '.2f')}G)")
    return "; ".join(parts) or None


def _run(args: dict, extra: dict) -> int:
    imgsz, out_json = args["imgsz"], args["json"]
    rows, cells = [], []
    for fine in tqdm(s_models(), desc="building and counting"):
        base = baseline_name(fine)
        b, f = measure(base, imgsz), measure(fine, imgsz)
        key = Path(base).stem
        paper, paper_fine = TABLE1.get(key), TABLE1.get(f"{key}-fine")
        row = {"model": key, "baseline": b, "fine": f}
        if key in TABLE8:  # the paper gives these models' FLOPs at VisDrone's 800 px: count ours there too
            row[f"gflops_{TABLE8_IMGSZ}"] = {arm: torch_gflops(build(name).model, TABLE8_IMGSZ)
                                             for arm, name in (("baseline", base), ("fine", fine))}
        rows.append(row)
        cells.append([
            key, millions(b["params"]), f"{b['gflops_thop']:.1f}", f"{b['gflops']:.1f}",
            signed_millions(f["params"] - b["params"]), f"{signed(f['gflops'] - b['gflops'], '.2f')}G",
            f"{signed(100 * (f['gflops'] / b['gflops'] - 1), '.1f')}%",
            _paper_overhead(key, paper, paper_fine, row),
        ])
    header = ["model", "params", "GFLOPs (ultralytics `info()`)", "GFLOPs (attention counted)", "+ FINE params",
              "+ FINE GFLOPs (attention counted)", "+ FINE GFLOPs %", "paper's + FINE"]
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
