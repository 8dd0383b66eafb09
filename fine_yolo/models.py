"""The shipped FINE model YAMLs: which upstream YAML each derives from, and where FINE goes (one table, as data).

Each FINE YAML is its ultralytics baseline plus one row per top-down fusion stage, inserted just before the Concat
that fuses the stage (paper §5.3.2: k=1 at P4<-P5, k=2 at P3<-P4; r=2; head dim 16). A *top-down fusion stage* is a
Concat whose two inputs are an upsampled coarse map (``nn.Upsample``, or ``nn.ConvTranspose2d`` in YOLOv6) and a
lateral finer map: FINE aligns the lateral map (``low``) with the map the upsampler reads (``high``), which is
``r = 2`` times coarser. FINE rows take no layer index (see ``fine_yolo.glue.fine_rows``), so every other row keeps
the baseline's index, comment and state-dict name. ``scripts/make_fine_yamls.py`` writes ``cfg/models/`` from
:data:`FINE_MODELS`; tests check that the files still match, that every placement is a top-down fusion stage of its
upstream YAML, and that the README's placement table is :func:`placement_table`'s output.
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
    """One FINE row: refine layer ``low`` with layer ``high`` (baseline indices), AATS kernel ``k``, head dim."""

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


def _stages(p4: tuple[int, int], p3: tuple[int, int], p4_head_dim: int = HEAD_DIM) -> tuple[Stage, ...]:
    """The paper's two stages: P4<-P5 with k=1, then P3<-P4 with k=2 (``(low, high)`` each)."""
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
    **_family("yolov5", "v5", "YOLOv5", _stages((6, 10), (4, 14)), ("detect",)),
    **_family("yolov6", "v6", "YOLOv6", _stages((6, 10), (4, 15)), ("detect",)),
    **_family("yolov8", "v8", "YOLOv8", _stages((6, 9), (4, 12)), _TASKS),
    **{f"yolov9{s}-fine.yaml": FineModel(f"v9/yolov9{s}.yaml", _stages((6, 9), (4, 12), _V9_HEAD_DIM.get(s, HEAD_DIM)),
                                         "YOLOv9", "detect") for s in "tsmc"},
    "yolov9e-fine.yaml": FineModel("v9/yolov9e.yaml", _stages((25, 29), (22, 32)), "YOLOv9", "detect"),
    **{f"yolov10{s}-fine.yaml": FineModel(f"v10/yolov10{s}.yaml", _stages((6, 10), (4, 13)), "YOLOv10", "detect")
       for s in "nsmblx"},
    **_family("yolo11", "11", "YOLO11", _stages((6, 10), (4, 13)), _TASKS),
    **_family("yolo12", "12", "YOLO12", _stages((6, 8), (4, 11)), ("detect",)),
    **_family("yolo26", "26", "YOLO26", _stages((6, 10), (4, 13)), (*_TASKS, "semantic")),
    # RT-DETR's hybrid encoder (CCFF): the lateral input_proj conv (low) meets the upsampled lateral conv (high).
    "rtdetr-l-fine.yaml": FineModel("rt-detr/rtdetr-l.yaml", _stages((14, 12), (19, 17)), "RT-DETR", "detect"),
    "rtdetr-x-fine.yaml": FineModel("rt-detr/rtdetr-x.yaml", _stages((18, 16), (23, 21)), "RT-DETR", "detect"),
    **{f"rtdetr-resnet{d}-fine.yaml": FineModel(f"rt-detr/rtdetr-resnet{d}.yaml", _stages((9, 7), (14, 12)),
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
    "# A FINE row [[low, high], 1, FINE, [k]] aligns layer `low` with layer `high` before the next fusion and takes\n"
    "# no layer index: every other row keeps the baseline's index, so baseline checkpoints transfer by name.\n"
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


def fine_row(stage: Stage) -> str:
    """The YAML text of a FINE row (head dim written only when it is not the paper's 16)."""
    args = [stage.k] if stage.head_dim == HEAD_DIM else [stage.k, 2, stage.head_dim]
    return f"[[{stage.low}, {stage.high}], 1, FINE, {args}]"


def render_fine_yaml(name: str, upstream_text: str) -> str:
    """Return the text of FINE YAML ``name`` given the text of its upstream YAML.

    Raises:
        PlacementError: a stage of :data:`FINE_MODELS` is not a top-down fusion stage of the upstream YAML.
    """
    import yaml

    entry = FINE_MODELS[name]
    d = yaml.safe_load(upstream_text)
    lines = upstream_text.splitlines(keepends=True)
    row_lines = _row_lines(lines)
    if len(row_lines) != len(d["backbone"]) + len(d["head"]):
        raise PlacementError(f"{entry.upstream}: found {len(row_lines)} row lines for "
                             f"{len(d['backbone']) + len(d['head'])} rows (a row spanning lines?)")
    found = {(low, high): concat for concat, low, high in top_down_stages(d)}
    inserts = []
    for stage in entry.stages:
        if (stage.low, stage.high) not in found:
            raise PlacementError(f"{entry.upstream}: ({stage.low}, {stage.high}) is not a top-down fusion stage; the "
                                 f"YAML has {sorted(found)}")
        inserts.append((row_lines[found[stage.low, stage.high]], stage))
    for n, stage in sorted(inserts, reverse=True):  # bottom first: earlier line numbers stay valid
        indent = re.match(r"^(\s*)", lines[n]).group(1)
        d = "" if stage.head_dim == HEAD_DIM else f", head dim {stage.head_dim}"
        comment = f"# FINE: align layer {stage.low} with layer {stage.high} (k={stage.k}{d})"
        lines.insert(n, f"{indent}- {fine_row(stage)} {comment}\n")
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
    return f"{stage.low} ← {stage.high}, k={stage.k}{d}"


def placement_table() -> str:
    """The README's table of shipped FINE models: one row per upstream YAML, grouped by family (v9/v10 per file).

    Rows of one family and task that place FINE identically are merged (``yolov9{t,s,c}``); the cells read
    ``low ← high, k`` in baseline layer indices.
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
    header = ["family", "task", "FINE YAML", "from ultralytics (`cfg/models/`)", "FINE at P4←P5 (low ← high)",
              "FINE at P3←P4 (low ← high)"]
    return markdown_table(header, out)


def not_shipped_table() -> str:
    """The README's table of what has no FINE model, and why."""
    return markdown_table(["not shipped", "why"], [[k, v] for k, v in NOT_SHIPPED.items()])
