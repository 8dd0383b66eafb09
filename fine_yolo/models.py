"""The shipped FINE model YAMLs: which upstream YAML each derives from, and where FINE goes (one table, as data).

Each FINE YAML is its ultralytics baseline with the Concat row of each top-down fusion stage replaced by a
``FINEConcat`` row with FINE's arguments (paper eq. 3 and §5.3.2: k=1 at P4<-P5, k=2 at P3<-P4; r=2; head dim 16);
every other row, index, comment and state-dict name is upstream's. A *top-down fusion stage* is a Concat whose two
inputs are an upsampled coarse map (``nn.Upsample``, or ``nn.ConvTranspose2d`` in YOLOv6) and a lateral finer map:
FINE aligns the lateral map (``low``) with the map the upsampler reads (``high``), which is ``r = 2`` times coarser.
A nearest ``nn.Upsample``'s input is recovered from its output by a strided slice, so the row keeps upstream's two
inputs; a learned upsampler (YOLOv6) gets ``high`` as a third input (see ``fine_yolo.glue.fine_rows``).
``scripts/make_fine_yamls.py`` writes ``cfg/models/`` from :data:`FINE_MODELS`; tests check that the files still
match, that every placement is a top-down fusion stage of its upstream YAML, and that the docs' placement table is
:func:`placement_table`'s output.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from fine_yolo.errors import UsageError
from fine_yolo.tables import markdown_table

HEAD_DIM = 16  # paper §5.3.2 / Table 4: d = 16 channels per head
UPSAMPLERS = ("nn.Upsample", "nn.ConvTranspose2d")  # the modules that carry a top-down path up one level


class ModelNameError(UsageError):
    """A model name that does not follow ``<baseline>-fine.yaml``."""


class PlacementError(ValueError):
    """A placement that is not a top-down fusion stage of its upstream YAML (a defect of this table, not user input)."""


class Stage(NamedTuple):
    """One fusion row: upstream Concat row ``row`` becomes FINEConcat; FINE refines layer ``low`` with layer ``high``
    (upstream indices) with AATS kernel ``k`` and head dim ``head_dim``."""

    row: int
    low: int
    high: int
    k: int
    head_dim: int = HEAD_DIM


class FineModel(NamedTuple):
    """A shipped FINE YAML: its upstream YAML (relative to ultralytics/cfg/models), stages, README family, task."""

    upstream: str
    stages: tuple[Stage, ...]
    family: str
    task: str


def _stages(p4: tuple[int, int, int], p3: tuple[int, int, int], p4_head_dim: int = HEAD_DIM) -> tuple[Stage, ...]:
    """The paper's two stages: P4<-P5 with k=1, then P3<-P4 with k=2 (``(row, low, high)`` each)."""
    return Stage(*p4, 1, p4_head_dim), Stage(*p3, 2)


_TASK_SUFFIX = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb", "semantic": "-sem"}


def _family(prefix: str, upstream_dir: str, family: str, stages: tuple[Stage, ...], tasks: tuple[str, ...]) -> dict:
    """Entries for one scaled family (one upstream YAML per task, all with the same neck indices)."""
    out = {}
    for task in tasks:
        s = _TASK_SUFFIX[task]
        out[f"{prefix}{s}-fine.yaml"] = FineModel(f"{upstream_dir}/{prefix}{s}.yaml", stages, family, task)
    return out


_TASKS = ("detect", "segment", "pose", "obb")
# yolov9m's P4 map has 360 channels: 16 does not divide it; 24 does (15 heads, a multiple of 8 as TensorRT wants)
_V9_HEAD_DIM = {"m": 24}

# fine YAML name -> FineModel. Indices were read off each upstream YAML; tests re-derive them from the YAML text.
FINE_MODELS: dict[str, FineModel] = {
    **_family("yolov5", "v5", "YOLOv5", _stages((12, 6, 10), (16, 4, 14)), ("detect",)),
    **_family("yolov6", "v6", "YOLOv6", _stages((12, 6, 10), (17, 4, 15)), ("detect",)),
    **_family("yolov8", "v8", "YOLOv8", _stages((11, 6, 9), (14, 4, 12)), _TASKS),
    **{f"yolov9{s}-fine.yaml": FineModel(f"v9/yolov9{s}.yaml",
                                         _stages((11, 6, 9), (14, 4, 12), _V9_HEAD_DIM.get(s, HEAD_DIM)),
                                         "YOLOv9", "detect") for s in "tsmc"},
    "yolov9e-fine.yaml": FineModel("v9/yolov9e.yaml", _stages((31, 25, 29), (34, 22, 32)), "YOLOv9", "detect"),
    **{f"yolov10{s}-fine.yaml": FineModel(f"v10/yolov10{s}.yaml", _stages((12, 6, 10), (15, 4, 13)), "YOLOv10",
                                          "detect") for s in "nsmblx"},
    **_family("yolo11", "11", "YOLO11", _stages((12, 6, 10), (15, 4, 13)), _TASKS),
    **_family("yolo12", "12", "YOLO12", _stages((10, 6, 8), (13, 4, 11)), ("detect",)),
    **_family("yolo26", "26", "YOLO26", _stages((12, 6, 10), (15, 4, 13)), (*_TASKS, "semantic")),
    # RT-DETR's hybrid encoder (CCFF): the lateral input_proj conv (low) meets the upsampled lateral conv (high).
    "rtdetr-l-fine.yaml": FineModel("rt-detr/rtdetr-l.yaml", _stages((15, 14, 12), (20, 19, 17)), "RT-DETR", "detect"),
    "rtdetr-x-fine.yaml": FineModel("rt-detr/rtdetr-x.yaml", _stages((19, 18, 16), (24, 23, 21)), "RT-DETR", "detect"),
    **{f"rtdetr-resnet{d}-fine.yaml": FineModel(f"rt-detr/rtdetr-resnet{d}.yaml", _stages((10, 9, 7), (15, 14, 12)),
                                                "RT-DETR", "detect") for d in (50, 101)},
}

# What is not shipped, and why (printed in the README under the placement table).
NOT_SHIPPED: dict[str, str] = {
    "classification (`*-cls`, every family)": "no neck: backbone, then the Classify head; there is no top-down "
    "fusion stage for FINE to sit in",
    "RT-DETR R18 (the paper's Table 1-3 model)": "ultralytics ships no ResNet-18 RT-DETR YAML (only `rtdetr-resnet50`, "
    "`rtdetr-resnet101` and the HGNetv2 `rtdetr-l`/`rtdetr-x`); `rtdetr-resnet50-fine` is the paper's R50 model",
    "P2 / P6 variants (`yolov8-p2`, `yolo26-p6`, ...)": "three top-down stages; the paper places FINE at two (P4<-P5, "
    "P3<-P4) and gives no k for a third",
    "`yolo26-depth`": "same two top-down stages as YOLO26; not shipped because there is no depth dataset here to test "
    "its training",
}

_HEADER = (
    "# fine_yolo: {name} = ultralytics {upstream} + FINE (arXiv 2606.14005) at both top-down fusion stages.\n"
    "# Each top-down Concat row is a FINEConcat row with FINE's args [k, r, head_dim, attention, pool] (eq. 3:\n"
    "# Concat(up, FINE(low, high))); every layer index is upstream's, so baseline checkpoints transfer by name.\n"
    "# Generated by scripts/make_fine_yamls.py; do not edit by hand.\n\n"
)


def baseline_name(fine_model: str) -> str:
    """``yolov8s-fine.yaml`` -> ``yolov8s.yaml``; ``yolo11n-seg-fine.yaml`` -> ``yolo11n-seg.yaml``."""
    name = Path(fine_model).name
    if "-fine" not in name:
        raise ModelNameError(f"'{fine_model}' is not a FINE model name (expected '<baseline>-fine.yaml')")
    return name.replace("-fine", "")


def is_rtdetr(model: str) -> bool:
    """Whether ultralytics builds ``model`` through ``RTDETR`` (the rule of the ``yolo`` command: "rtdetr" in the
    file name). ``YOLO("rtdetr-l.yaml")`` fails; a trained RT-DETR ``.pt`` loads through either class."""
    return "rtdetr" in Path(str(model)).stem


def model_class(model: str):
    """``ultralytics.RTDETR`` for RT-DETR YAMLs, else ``ultralytics.YOLO`` (imports ultralytics)."""
    import ultralytics

    return ultralytics.RTDETR if is_rtdetr(model) else ultralytics.YOLO


def build(model: str):
    """The ultralytics model object for a YAML or checkpoint: ``RTDETR(model)`` or ``YOLO(model, verbose=False)``."""
    cls = model_class(model)
    return cls(model) if is_rtdetr(model) else cls(model, verbose=False)


def upstream_text(name: str) -> str:
    """Text of the installed ultralytics YAML that FINE model ``name`` derives from."""
    from ultralytics.utils import ROOT

    return (ROOT / "cfg" / "models" / FINE_MODELS[name].upstream).read_text(encoding="utf-8")


def _absolute(f: int | list, i: int) -> list[int]:
    """Row ``i``'s inputs as absolute layer indices (ultralytics: a negative index counts back from row ``i``)."""
    return [x if x >= 0 else i + x for x in ([f] if isinstance(f, int) else f)]


def top_down_stages(d: dict) -> list[tuple[int, int, int]]:
    """Every top-down fusion stage of a parsed model YAML, in row order: ``(concat row, low, high)``.

    A stage is a two-input Concat row one of whose inputs is an upsampler row (:data:`UPSAMPLERS`) reading one layer
    (``high``); the other input is ``low``. Bottom-up (PAN) Concats read a strided conv instead and are not stages.
    """
    rows = d["backbone"] + d["head"]
    stages = []
    for i, (f, _, module, _) in enumerate(rows):
        if module != "Concat" or isinstance(f, int) or len(f) != 2:
            continue
        a, b = _absolute(f, i)
        for up, low in ((a, b), (b, a)):
            if rows[up][2] in UPSAMPLERS and len(_absolute(rows[up][0], up)) == 1:
                stages.append((i, low, _absolute(rows[up][0], up)[0]))
                break
    return stages


def _row_lines(lines: list[str]) -> list[int]:
    """Line index of every backbone/head row, in row order (one row per ``- [`` line, as every upstream YAML has)."""
    out, inside = [], False
    for n, line in enumerate(lines):
        if re.match(r"^(backbone|head):", line):
            inside = True
        elif re.match(r"^\S", line):  # another top-level key ends the row lists
            inside = False
        elif inside and re.match(r"^\s*- \[", line):
            out.append(n)
    return out


FUSION = "FINEConcat"  # the YAML word of a fusion row (fine_yolo.nn.fusion.FINEConcat)


def _nearest(row: list) -> bool:
    """Whether an upstream row is a nearest ``nn.Upsample`` by an integer factor (input: ``up[..., ::s, ::s]``)."""
    _, _, module, args = row
    args = list(args) + [None, None, "nearest"][len(args):]  # nn.Upsample(size=None, scale_factor=None, mode="nearest")
    return module == "nn.Upsample" and isinstance(args[1], int) and args[2] == "nearest"


def fine_row(stage: Stage, f: list[int], nearest: bool = True) -> str:
    """The YAML text of a fusion row reading ``f`` (upstream's Concat inputs, the upsampled map first), plus ``high``
    as a third input when the upsampler is not a nearest upsampling; head dim written only when it is not 16."""
    args = [stage.k] if stage.head_dim == HEAD_DIM else [stage.k, 2, stage.head_dim]
    inputs = list(f) if nearest else [*f, stage.high]
    return f"[{inputs}, 1, {FUSION}, {args}]"


def render_fine_yaml(name: str, upstream_text: str) -> str:
    """Return the text of FINE YAML ``name`` given the text of its upstream YAML: each stage's Concat row rewritten
    as a fusion row in place (its comment kept, what FINE reads appended), every other line as upstream wrote it.

    Raises:
        PlacementError: a stage of :data:`FINE_MODELS` is not a top-down fusion stage of the upstream YAML, or its
            Concat lists the low map first (a fusion row reads the upsampled map first).
    """
    import yaml

    entry = FINE_MODELS[name]
    d = yaml.safe_load(upstream_text)
    rows = d["backbone"] + d["head"]
    lines = upstream_text.splitlines(keepends=True)
    row_lines = _row_lines(lines)
    if len(row_lines) != len(rows):
        raise PlacementError(f"{entry.upstream}: found {len(row_lines)} row lines for {len(rows)} rows "
                             "(a row spanning lines?)")
    found = top_down_stages(d)
    for stage in entry.stages:
        if stage[:3] not in found:
            raise PlacementError(f"{entry.upstream}: (row, low, high) {stage[:3]} is not a top-down fusion stage; the "
                                 f"YAML has {found}")
        f = rows[stage.row][0]
        up = _absolute(f, stage.row)[0]
        if up == stage.low:
            raise PlacementError(f"{entry.upstream}: row {stage.row} {f} lists the low map first")
        n = row_lines[stage.row]
        m = re.match(r"^(\s*- )(\[.*?\]\s*,\s*1\s*,\s*Concat\s*,\s*\[1\]\s*\])(\s*#.*)?$", lines[n].rstrip("\n"))
        if not m:
            raise PlacementError(f"{entry.upstream}: cannot read row {stage.row}'s line: {lines[n].strip()}")
        dim = "" if stage.head_dim == HEAD_DIM else f", head dim {stage.head_dim}"
        fine = f"FINE(low={stage.low}, high={stage.high}, k={stage.k}{dim})"
        comment = f"{m.group(3)} + {fine}" if m.group(3) else f" # {fine}"
        lines[n] = f"{m.group(1)}{fine_row(stage, f, _nearest(rows[up]))}{comment}\n"
    return _HEADER.format(name=name, upstream=entry.upstream) + "".join(lines)


def scales(name: str) -> list[str]:
    """The model names a shipped YAML builds: ``yolov8-fine.yaml`` -> ``yolov8n-fine.yaml`` ... ``yolov8x-fine.yaml``
    (its upstream ``scales:`` keys, the letter after the version number). A per-scale file (``yolov10s``, ``yolov9m``,
    ``rtdetr-l``: no ``scales:`` or one key) builds only itself."""
    import yaml

    keys = list(yaml.safe_load(upstream_text(name)).get("scales") or {})
    if len(keys) <= 1:
        return [name]
    prefix, rest = re.match(r"^(yolov?\d+)(.*)$", name).groups()
    return [f"{prefix}{s}{rest}" for s in keys]


def _scale_pattern(name: str) -> str:
    """``yolov8-seg-fine.yaml`` -> ``yolov8{n,s,m,l,x}-seg-fine.yaml`` (as the README lists them)."""
    names = scales(name)
    if len(names) == 1:
        return f"`{name}`"
    prefix, rest = re.match(r"^(yolov?\d+)(.*)$", name).groups()
    return f"`{prefix}{{{','.join(n[len(prefix)] for n in names)}}}{rest}`"


def _common_pattern(names: list[str]) -> str:
    """``["yolov9t-fine.yaml", "yolov9s-fine.yaml"]`` -> ``yolov9{t,s}-fine.yaml``: the common prefix and suffix
    around the differing middles (``rtdetr-resnet{50,101}-fine.yaml``)."""
    import os

    prefix = os.path.commonprefix(names)
    suffix = os.path.commonprefix([n[len(prefix):][::-1] for n in names])[::-1]
    middles = [n[len(prefix) : len(n) - len(suffix)] for n in names]
    return f"`{prefix}{{{','.join(middles)}}}{suffix}`"


def _cell(stage: Stage) -> str:
    d = "" if stage.head_dim == HEAD_DIM else f", d={stage.head_dim}"
    return f"{stage.row}: {stage.low} ← {stage.high}, k={stage.k}{d}"


def placement_table() -> str:
    """The README's table of shipped FINE models: one row per upstream YAML, grouped by family (v9/v10 per file).

    Rows of one family and task that place FINE identically are merged (``yolov9{t,s,c}``); the cells read
    ``row: low ← high, k`` in upstream layer indices (the fusion row, the maps FINE reads).
    """
    rows: list[list[str]] = []
    merged: dict[tuple, list[str]] = {}
    for name, m in FINE_MODELS.items():
        key = (m.family, m.task, m.stages)
        if key in merged and len(scales(name)) == 1:
            merged[key].append(name)
            continue
        merged[key] = [name]
        rows.append([m.family, m.task, key, m.upstream])
    out = []
    for family, task, key, upstream in rows:
        names = merged[key]
        if len(names) == 1:
            model, source = _scale_pattern(names[0]), f"`{upstream}`"
        else:  # per-scale files with one placement: yolov9{t,s,c}-fine.yaml, rtdetr-resnet{50,101}-fine.yaml
            model = _common_pattern(names)
            source = _common_pattern([FINE_MODELS[n].upstream for n in names])
        out.append([family, task, model, source, *(_cell(s) for s in key[2])])
    header = ["family", "task", "FINE YAML", "from ultralytics (`cfg/models/`)", "P4←P5 fusion (row: low ← high)",
              "P3←P4 fusion (row: low ← high)"]
    return markdown_table(header, out)


def not_shipped_table() -> str:
    """The README's table of what has no FINE model, and why."""
    return markdown_table(["not shipped", "why"], [[k, v] for k, v in NOT_SHIPPED.items()])
