"""The ablation tables' variants of a FINE model and the model YAMLs that build them.

A :class:`Variant` rewrites every FINE row's arguments ``[k, r, head_dim, attention, pool]``; :class:`Stage` is one
FINE row of the model as shipped (read off the built model). A variant's YAML is the model's own YAML, loaded as a
dict by ultralytics (``yaml_model_load``), with only the args of its ``FINEConcat`` rows replaced and written with
``yaml.safe_dump``: it builds, trains and exports like any FINE YAML.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fine_yolo.args import split_list
from fine_yolo.errors import FineYoloError, UsageError
from fine_yolo.glue.fine_rows import FUSION_ROW

TABLES = ("3", "5", "4", "6")  # printed in this order (the paper's: attention, r/k, heads, pooling)


class AblateError(FineYoloError, ValueError):
    """A model or variant that cannot be ablated; the message names it."""


@dataclass(frozen=True)
class Stage:
    """One FINE row of the model as shipped: its low-map channels and arguments."""

    c_low: int
    k: int
    r: int
    head_dim: int


@dataclass(frozen=True)
class Variant:
    """A rewrite of every FINE row: fields left None keep the model's own value at each stage."""

    name: str
    table: str
    label: str
    attention: str = "aats"
    pool: str = "avg"
    r: int | None = None
    k: int | None = None
    head_dim: int | None = None  # per stage: min(head_dim, C)

    def stage_args(self, stage: Stage) -> list[Any]:
        """The FINE row's args ``[k, r, head_dim, attention, pool]`` at ``stage``."""
        sampled = self.attention == "aats"
        k = (self.k or stage.k) if sampled else 1  # the Table-3 alternatives sample no tokens: k, r stay default
        r = (self.r or stage.r) if sampled else 2
        d = stage.head_dim if self.head_dim is None else min(self.head_dim, stage.c_low)
        return [k, r, d, self.attention, self.pool]

    def key(self, stages: list[Stage]) -> tuple:
        """What the variant builds: two variants with the same key are the same model (measured once)."""
        return tuple(tuple(self.stage_args(s)) for s in stages)


def table_variants(table: str) -> list[Variant]:
    """The variants of one table, in the order the paper lists them."""
    if table == "3":
        labels = {"vanilla": "vanilla", "window": "window (7x7)", "area": "area (A=4)", "linear": "linear",
                  "aats": "AATS"}
        return [Variant(a, "3", lab, attention=a) for a, lab in labels.items()]
    if table == "5":
        out = [Variant(f"r{r}k{k}", "5", f"r={r}, k={k}", r=r, k=k) for r in (1, 2, 4) for k in (1, 2)]
        return [*out, Variant("shipped", "5", "r=2, model's k (shipped)", r=2)]
    if table == "4":
        return [Variant(f"d{d}", "4", f"d={d}", head_dim=d) for d in (256, 64, 32, 16, 8, 4, 2)]
    if table == "6":
        return [Variant(p, "6", {"dwconv": "DWConv", "max": "MaxPool", "avg": "AvgPool"}[p], pool=p)
                for p in ("dwconv", "max", "avg")]
    raise UsageError(f"argument 'table={table}' must be one of 3, 4, 5, 6, all (or a comma list of them)")


def parse_tables(value: str) -> list[str]:
    """``"all"`` -> every table; ``"3,6"`` -> ``["3", "6"]`` (in the paper's order)."""
    if str(value) == "all":
        return list(TABLES)
    wanted = split_list(str(value), "table")
    for t in wanted:
        table_variants(t)  # validates
    return [t for t in TABLES if t in wanted]


def select(tables: list[str], names: str) -> list[Variant]:
    """Every variant of ``tables``, or those named in ``names`` (comma list); an unknown name lists the known."""
    every = [v for t in tables for v in table_variants(t)]
    if not names:
        return every
    wanted = split_list(names, "variants")
    known = [v.name for v in every]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise UsageError(f"argument 'variants={names}': no variant {', '.join(unknown)} in table(s) "
                         f"{', '.join(tables)} (known: {', '.join(dict.fromkeys(known))})")
    return [v for v in every if v.name in wanted]


def model_yaml(model: str) -> dict[str, Any]:
    """The model dict of a FINE model YAML as ultralytics loads it (``yaml_model_load``: ``yolov8n-fine.yaml`` is
    ``yolov8-fine.yaml`` with ``scale: n``; bare names of the shipped FINE YAMLs resolve through the start-up hook)."""
    from ultralytics.nn.tasks import yaml_model_load

    if not str(model).endswith((".yaml", ".yml")):
        raise UsageError(f"argument 'model={model}': ablate rewrites a FINE model YAML's rows; give a .yaml")
    try:
        return yaml_model_load(model)
    except FileNotFoundError:
        raise UsageError(f"argument 'model={model}': no such model YAML") from None


def read_stages(model: str) -> list[Stage]:
    """The FINE rows of ``model`` as built (channels are read off the built model, right at every scale)."""
    from fine_yolo.models import build
    from fine_yolo.nn import FINE

    fines = [m for m in build(model).model.modules() if isinstance(m, FINE)]
    if not fines:
        raise AblateError(f"{model} has no FINE row to ablate")
    return [Stage(m.c_low, m.k, m.r, m.head_dim) for m in fines]


def variant_yaml(model: dict[str, Any], variant: Variant, stages: list[Stage]) -> dict[str, Any]:
    """A copy of the model dict ``model`` with the args of its FINE rows (in order, one per stage) replaced by the
    variant's, without the ``yaml_file`` key ultralytics adds on load; every other row and key is unchanged."""
    out = {key: copy.deepcopy(value) for key, value in model.items() if key != "yaml_file"}
    rows = [row for row in out["backbone"] + out["head"] if row[2] == FUSION_ROW]
    if len(rows) != len(stages):
        raise AblateError(f"found {len(rows)} FINE rows in the model YAML but the model has {len(stages)} FINE "
                          "blocks")
    for row, stage in zip(rows, stages):
        row[3] = variant.stage_args(stage)
    return out


class _RowDumper(yaml.SafeDumper):
    """``yaml.safe_dump`` with one model row per line: a list is written in block style only when every item is a
    list (``backbone``, ``head``), every other list (a row, its ``from`` and args, a scale) in flow style."""

    def represent_sequence(self, tag, sequence, flow_style=None):
        rows = bool(sequence) and all(isinstance(x, list) for x in sequence)
        return super().represent_sequence(tag, sequence, flow_style=not rows)


def write_yamls(model: dict[str, Any], variants: list[Variant], stages: list[Stage], out: Path) -> dict[str, Path]:
    """One YAML per variant of the model dict ``model`` (:func:`model_yaml`) under ``out/yaml``, named
    ``<model stem>-<variant>.yaml``.

    The name keeps the model's scale: ultralytics reads the scale off the file name when it loads a YAML
    (``guess_model_scale``, which finds ``n`` in ``yolov8n-fine-max.yaml`` as in ``yolov8n-fine.yaml``) and overwrites
    a ``scale:`` key with it; the key is written too, so the dict alone also builds at that scale.
    """
    source = model["yaml_file"]
    folder = out / "yaml"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for v in variants:
        path = folder / f"{Path(source).stem}-{v.name}.yaml"
        path.write_text(f"# fine-yolo ablate: {source} with FINE rows as variant {v.name} ({v.label})\n"
                        + yaml.dump(variant_yaml(model, v, stages), Dumper=_RowDumper, sort_keys=False,
                                    allow_unicode=True, width=120), encoding="utf-8")
        paths[v.name] = path
    return paths
