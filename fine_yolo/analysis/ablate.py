"""``fine-yolo ablate``: the paper's ablations of FINE as one command per table, on any FINE model.

Tables (``table=3|4|5|6|all``, or a comma list), each a list of *variants* of the model's FINE rows:

* **3** — attention strategy (paper Table 3, RT-DETR R18): ``vanilla``, ``window`` (7x7), ``area`` (4 areas),
  ``linear``, ``aats`` (the model as shipped). The first four replace AATS and sample no tokens, so their rows are
  written with k=1 (see :class:`fine_yolo.nn.FINE`, "Variants").
* **5** — AATS sampling ratio r and kernel k (Fig. 5 and §5.3.2, Faster R-CNN R50): ``r1k1`` ... ``r4k2`` (r in
  {1, 2, 4} x k in {1, 2}, the same k at every stage, as the paper sweeps), and ``shipped`` (r=2 with the model's own
  k per stage: k=1 at P4<-P5, k=2 at P3<-P4).
* **4** — per-head dim d (Table 4, Faster R-CNN R50 with C = 256): ``d256`` ... ``d2``. At a stage with fewer
  channels than d, that stage gets d = C (one head); the table prints the heads per stage.
* **6** — AATS's Down() operator (Table 6): ``dwconv``, ``max``, ``avg``.

Each variant is the model's own YAML with only its FINE rows' arguments rewritten (``[k, r, head_dim, attention,
pool]``), written to ``out/yaml/<model>-<variant>.yaml``, so it builds, trains and exports like any FINE YAML.

**Cost** (no data): for the baseline (the model without ``-fine``) and every variant at ``imgsz``, batch 1:

* params and GFLOPs of the whole model (``fine_yolo.analysis.complexity.torch_gflops``: FlopCounterMode with
  math-backend attention, so attention matmuls count), and their increase over the baseline;
* GFLOPs and peak activation memory of the FINE blocks alone, run on the maps they see in the model
  (``fine_yolo.analysis.attention_cost.block_cost``: bytes of tensors alive at once, inputs and weights excluded,
  unfused attention, the paper's "Mem" column; the peak over the blocks, which run one after another);
* latency: PyTorch eager on this machine's CPU, every model timed interleaved in one run
  (``fine_yolo.bench.backends.prepare_torch`` + ``fine_yolo.bench.stats.interleave``), the median and the
  baseline/variant ratio of medians.

The paper's numbers (``fine_yolo.paper``) stand beside ours. They come from other detectors (RT-DETR R18, Faster
R-CNN R50), so compare directions and ratios, not absolute values.

**Accuracy** (``data=``): every variant is trained and evaluated against the *same* baseline runs with the
seed-controlled machinery of ``fine-yolo compare`` (:mod:`fine_yolo.compare`): one baseline run per seed, one run
per variant and seed, identical ``yolo train`` arguments except ``model=`` (so, per seed, the same data order and the
same initial baseline weights, FINE starting as the identity), every ``best.pt`` evaluated with pycocotools. The
tables then add AP50:95 per variant (mean over seeds) and its paired difference from the baseline with the 95%
t-interval over seeds; a difference whose interval contains 0 is not an effect. ``dry_run=True`` prints the
``yolo train`` commands and trains nothing; reruns skip finished runs.

Outputs under ``out/``: ``ablate.md``, ``ablate.json`` (or ``json=``), ``ablate.png`` (one panel per table: AP50:95
against the variant's extra GFLOPs, Fig. 5 style, or latency against extra GFLOPs without data).
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fine_yolo.args import Command, Option, split_list
from fine_yolo.devices import set_torch_threads
from fine_yolo.errors import FineYoloError, UsageError
from fine_yolo.tables import markdown_table, millions, num, signed

TABLES = ("3", "5", "4", "6")  # printed in this order (the paper's: attention, r/k, heads, pooling)
TABLE_TITLES = {
    "3": "Table 3: attention strategy",
    "5": "Fig. 5: AATS sampling ratio r and kernel k",
    "4": "Table 4: per-head dim d",
    "6": "Table 6: AATS downsampling operator",
}
# The paper's complexity column of Table 3, per attention type.
COMPLEXITY = {
    "vanilla": "O(HlWl x HhWh)", "window": "O(HlWl x M^2), M=7", "area": "O(HlWl x HhWh / A), A=4",
    "linear": "O(HlWl + HhWh)", "aats": "O(HlWl/(r^2k^2) x HhWh/k^2)",
}


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


# ---------------------------------------------------------------------------------------------------- the YAMLs

_FINE_ROW = re.compile(r"(\[\s*\[[-\d\s,]*\]\s*,\s*1\s*,\s*FINEConcat\s*,\s*)\[[^\]]*\]")  # fusion rows


def model_text(model: str) -> str:
    """Text of the model YAML (a path, or a name ultralytics or the shipped FINE YAMLs resolve)."""
    from ultralytics.utils.checks import check_yaml

    if not str(model).endswith((".yaml", ".yml")):
        raise UsageError(f"argument 'model={model}': ablate rewrites a FINE model YAML's rows; give a .yaml")
    # ultralytics' own rule (yaml_model_load): yolov8n-fine.yaml is yolov8-fine.yaml at scale n
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", str(model))
    for name in dict.fromkeys((unified, str(model))):
        try:
            path = check_yaml(name, hard=False)
        except FileNotFoundError:  # the start-up hook's bare-name lookup raises where ultralytics returns ""
            path = ""
        if path:
            return Path(path).read_text(encoding="utf-8")
    raise UsageError(f"argument 'model={model}': no such model YAML")


def read_stages(model: str) -> list[Stage]:
    """The FINE rows of ``model`` as built (channels are read off the built model, right at every scale)."""
    from fine_yolo.models import build
    from fine_yolo.nn import FINE

    fines = [m for m in build(model).model.modules() if isinstance(m, FINE)]
    if not fines:
        raise AblateError(f"{model} has no FINE row to ablate")
    return [Stage(m.c_low, m.k, m.r, m.head_dim) for m in fines]


def variant_yaml(text: str, variant: Variant, stages: list[Stage]) -> str:
    """``text`` with the args of its FINE rows (in order) replaced by the variant's."""
    rows = iter(stages)

    def sub(match: re.Match) -> str:
        k, r, d, attention, pool = variant.stage_args(next(rows))
        return f"{match.group(1)}[{k}, {r}, {d}, {attention}, {pool}]"

    out, n = _FINE_ROW.subn(sub, text)
    if n != len(stages):
        raise AblateError(f"found {n} FINE rows in the YAML text but the model has {len(stages)} FINE blocks")
    return out


def write_yamls(model: str, variants: list[Variant], stages: list[Stage], out: Path) -> dict[str, Path]:
    """One YAML per variant under ``out/yaml``; named ``<model stem>-<variant>.yaml`` (keeps the scale letter)."""
    text = model_text(model)
    folder = out / "yaml"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for v in variants:
        path = folder / f"{Path(model).stem}-{v.name}.yaml"
        path.write_text(f"# fine-yolo ablate: {model} with FINE rows as variant {v.name} ({v.label})\n"
                        + variant_yaml(text, v, stages))
        paths[v.name] = path
    return paths


# --------------------------------------------------------------------------------------------------------- cost

def block_inputs(net, imgsz: int) -> list[tuple[Any, Any, Any]]:
    """``(block, low, high)`` for every FINE block of ``net``, with the maps it sees at ``imgsz`` (one forward)."""
    import torch

    from fine_yolo.analysis.taps import record

    return [(s.block, s.low, s.high) for s in record(net, torch.zeros(1, 3, imgsz, imgsz))]


def measure_cost(model: str, imgsz: int) -> dict[str, Any]:
    """Params and GFLOPs of ``model``; for a FINE model also its blocks' GFLOPs and peak activation memory.

    Raises ValueError (from the block) when a map is too small for the variant at ``imgsz``.
    """
    import torch
    from ultralytics.utils.torch_utils import get_num_params

    from fine_yolo.analysis.attention_cost import block_cost
    from fine_yolo.bench.complexity import torch_gflops
    from fine_yolo.models import build

    net = build(model).model.eval()
    out: dict[str, Any] = {"params": get_num_params(net), "gflops": torch_gflops(net, imgsz)}
    blocks = []
    for m, low, high in block_inputs(net, imgsz):
        torch.manual_seed(0)  # random maps of the right shapes: cost does not depend on the values
        g, peak = block_cost(m, torch.randn_like(low), torch.randn_like(high))
        blocks.append({"maps": f"{low.shape[2]}x{low.shape[3]}x{low.shape[1]} <- "
                               f"{high.shape[2]}x{high.shape[3]}x{high.shape[1]}", "module": m.extra_repr(),
                       "params": sum(p.numel() for p in m.parameters()), "gflops": g, "peak_mb": peak})
    if blocks:
        out.update(fine_gflops=sum(b["gflops"] for b in blocks), fine_peak_mb=max(b["peak_mb"] for b in blocks),
                   fine_params=sum(b["params"] for b in blocks), blocks=blocks)
    return out


def measure_latency(models: dict[str, str], imgsz: int, iters: int, block: int = 4) -> dict[str, list[float]]:
    """Interleaved eager CPU latency samples (ms) of every model, batch 1 (``bench``'s preparation and loop)."""
    from fine_yolo.bench.backends import prepare_torch
    from fine_yolo.bench.stats import interleave

    runners = {name: prepare_torch(src, imgsz=imgsz, device="cpu", e2e=False).network for name, src in models.items()}
    return interleave(runners, iters=iters, warmup=1, block=block, desc="latency")


def cost_rows(model: str, baseline: str, variants: list[Variant], stages: list[Stage], paths: dict[str, Path],
              imgsz: int, iters: int) -> dict[str, Any]:
    """Measure the baseline and every distinct variant; return ``{"baseline": ..., "variants": {name: ...}}``."""
    import statistics

    from tqdm import tqdm

    base = measure_cost(baseline, imgsz)
    measured: dict[tuple, dict[str, Any]] = {}  # by what the variant builds: shared rows are measured once
    rows: dict[str, dict[str, Any]] = {}
    for v in tqdm(variants, desc="cost", unit="variant"):
        key = v.key(stages)
        if key not in measured:
            try:
                measured[key] = {"source": str(paths[v.name]), **measure_cost(str(paths[v.name]), imgsz)}
            except ValueError as e:  # e.g. a map too small for r*k at this imgsz: say so, measure the rest
                measured[key] = {"source": str(paths[v.name]), "error": str(e)}
        row = dict(measured[key])
        if "error" not in row:
            row.update(d_params=row["params"] - base["params"], d_gflops=row["gflops"] - base["gflops"])
        rows[v.name] = {**asdict(v), "stage_args": [v.stage_args(s) for s in stages], **row}
    if iters > 0:
        sources = {"baseline": baseline}
        first: dict[tuple, str] = {}
        for v in variants:
            if "error" not in rows[v.name]:
                first.setdefault(v.key(stages), v.name)
        sources.update({name: rows[name]["source"] for name in first.values()})
        samples = measure_latency(sources, imgsz, iters)
        base["latency_ms"] = statistics.median(samples["baseline"])
        base["latency_samples_ms"] = samples["baseline"]
        for v in variants:
            name = first.get(v.key(stages))
            if name is not None:
                rows[v.name].update(latency_ms=statistics.median(samples[name]), latency_samples_ms=samples[name])
                rows[v.name].update(speed_ratio_of(base, rows[v.name]))
    return {"baseline": {"model": baseline, **base}, "variants": rows}


def speed_ratio_of(base: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """``speed_ratio`` (median baseline / median variant latency) and its 95% bootstrap interval over the interleaved
    rounds (``fine_yolo.bench.stats.speed_ratio``: samples of one round resampled together)."""
    from fine_yolo.bench.stats import speed_ratio

    r = speed_ratio(base["latency_samples_ms"], row["latency_samples_ms"])
    return {"speed_ratio": r.of_medians, "speed_ratio_ci95": list(r.ci95)}


# ----------------------------------------------------------------------------------------------------- accuracy

def accuracy_plan(baseline: str, variants: list[Variant], stages: list[Stage], paths: dict[str, Path],
                  seeds: list[int], project: Path, train_args: dict[str, Any]):
    """The runs of the accuracy part: ``(plan, arms)``.

    ``plan`` (a :class:`~fine_yolo.compare.plan.Plan`) holds the baseline runs once per seed (``seed{s}-baseline``)
    and one run per distinct variant and seed (``seed{s}-{variant}``), every run with the same ``yolo train``
    arguments except ``model=`` and its name (:func:`fine_yolo.compare.plan.make_plan` makes each pair). Variants that
    build the same model (``aats``, ``shipped``, ``d16`` and ``avg`` are all the shipped model) train once, under the
    first one's name; ``arms`` maps every variant name to the name its runs have.
    """
    from fine_yolo.compare.plan import Plan, RunSpec, make_plan

    plan = Plan(model="", baseline=baseline, seeds=list(seeds), project=Path(project).resolve())
    arms: dict[str, str] = {}
    first: dict[tuple, str] = {}
    for v in variants:
        key = v.key(stages)
        if key in first:
            arms[v.name] = first[key]
            continue
        first[key] = arms[v.name] = v.name
        pair = make_plan(str(paths[v.name]), baseline, seeds, project, train_args)
        if not plan.runs:
            plan.model = pair.model
            plan.runs += [r for r in pair.runs if r.arm == "baseline"]
        plan.runs += [RunSpec(r.seed, v.name, r.model, {**r.args, "name": f"seed{r.seed}-{v.name}"})
                      for r in pair.runs if r.arm == "fine"]
    return plan, arms


def accuracy_summary(plan, arms: dict[str, str], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per variant: ``fine-yolo compare``'s per-metric summary (values per seed, paired differences FINE - baseline,
    95% t-interval over seeds, verdict) of its runs against the shared baseline runs; ``results`` maps run names to
    :func:`fine_yolo.compare.evaluate.evaluate_run` results."""
    from fine_yolo.compare.plan import Plan, RunSpec
    from fine_yolo.compare.report import summarize

    out = {}
    for name, arm in arms.items():
        model = plan.run(plan.seeds[0], arm).model
        pair = Plan(model=model, baseline=plan.baseline, seeds=plan.seeds, project=plan.project)
        pair_results = {}
        for s in plan.seeds:  # the pair as `compare` names it: seed{s}-baseline, seed{s}-fine
            pair.runs += [plan.run(s, "baseline"), RunSpec(s, "fine", model, {})]
            pair_results[f"seed{s}-baseline"] = results[f"seed{s}-baseline"]
            pair_results[f"seed{s}-fine"] = results[f"seed{s}-{arm}"]
        out[name] = summarize(pair, pair_results)
    return out


def run_accuracy(plan, arms: dict[str, str], args: dict[str, Any]) -> dict[str, Any]:
    """Train what is missing, evaluate every run (cached), summarise per variant."""
    from tqdm import tqdm

    from fine_yolo.compare.evaluate import EvalSettings, evaluate_run
    from fine_yolo.compare.runner import device_slots, run_plan

    report = run_plan(plan, device=str(args["device"]))
    settings = EvalSettings(data=str(plan.runs[0].args["data"]), split=str(args["split"]), imgsz=int(args["imgsz"]),
                            batch=int(args["batch"]), conf=float(args["conf"]), iou=float(args["iou"]))
    device = (device_slots(str(args["device"]))[0] or "cpu").split(",")[0]
    results = {spec.name: evaluate_run(spec, settings, plan.project / "eval", device, spec.args.get("workers"))
               for spec in tqdm(plan.runs, desc="evaluate", unit="run")}
    return {"seeds": plan.seeds, "trained": report.trained, "skipped": report.skipped,
            "runs": {s.name: {"seed": s.seed, "arm": s.arm, "model": s.model, "command": s.command(),
                              "fingerprint": s.fingerprint(), **results[s.name]} for s in plan.runs},
            "arms": arms, "summary": accuracy_summary(plan, arms, results)}


# ------------------------------------------------------------------------------------------------------- tables

def _ap_cells(summary: dict[str, Any] | None) -> list[Any]:
    """AP50:95 of a variant (mean over seeds, points) and its difference from the baseline with the interval."""
    from fine_yolo.compare.stats import fmt_diff

    if summary is None:
        return []
    e = summary["AP50:95"]
    fine = [x for x in e["fine"] if x is not None]
    mean = 100 * sum(fine) / len(fine) if fine and len(fine) == len(e["fine"]) else None
    p = e["paired"]
    diff = None if p is None else fmt_diff(p["mean"], 100)
    interval = None if p is None or p["low"] is None else f"[{fmt_diff(p['low'], 100)}, {fmt_diff(p['high'], 100)}]"
    return [num(mean, ".1f"), diff, interval]


def _ratio_cell(c: dict[str, Any]) -> str | None:
    if c.get("speed_ratio") is None:
        return None
    ci = c.get("speed_ratio_ci95")
    return f"{c['speed_ratio']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _paper_cells(v: Variant) -> list[Any]:
    from fine_yolo import paper

    if v.table == "3":
        p = paper.TABLE3_ROWS[v.attention]
        return [signed(p["d_gflops"], ".1f"), signed(p["d_peak_mb"], ".2f"), p["fps"], p["AP"]]
    if v.table == "5":
        p = paper.FIG5.get((v.r, v.k)) if v.k else None
        return [signed(p["d_gflops"], ".1f") if p else None, p["AP"] if p else None]
    if v.table == "4":
        return [paper.TABLE4.get(v.head_dim)]
    p = paper.TABLE6[v.pool]
    return [num(p["macs_m"], ".2f"), f"+{p['d_params_k']:.2f}K", p["AP"]]


def _paper_header(table: str) -> list[str]:
    return {"3": ["paper ΔGFLOPs", "paper ΔMem (MB)", "paper FPS", "paper AP"],
            "5": ["paper ΔGFLOPs", "paper AP"], "4": ["paper AP"],
            "6": ["paper MACs (M)", "paper Δparams", "paper AP"]}[table]


def _paper_baseline(table: str) -> list[Any]:
    from fine_yolo import paper

    if table == "3":
        b = paper.TABLE3_BASELINE
        return [f"{b['gflops']:.2f}", f"{b['peak_mb']:.2f}", b["fps"], b["AP"]]
    if table == "5":
        return [None, paper.FIG5_BASELINE_AP]
    if table == "4":
        return [paper.TABLE4_BASELINE_AP]
    return [None, None, None]


def table_markdown(table: str, variants: list[Variant], cost: dict[str, Any], stages: list[Stage],
                   accuracy: dict[str, Any] | None = None) -> str:
    """One table in the paper's layout: the baseline row, then one row per variant, ours then the paper's."""
    rows_v = [v for v in variants if v.table == table]
    base = cost["baseline"]
    first = {"3": "attention", "5": "r, k", "4": "d (heads per stage)", "6": "Down()"}[table]
    header = [first, "params", "Δparams", "GFLOPs", "ΔGFLOPs", "FINE GFLOPs", "FINE peak act. (MB)", "latency (ms)",
              "baseline/variant [95% CI]"]
    if table == "3":
        header.insert(1, "complexity (paper)")
    if accuracy:
        header += ["AP50:95", "Δ AP50:95", "95% interval"]
    header += _paper_header(table)
    base_cells = [f"baseline ({Path(base['model']).stem})", millions(base["params"]), None,
                  f"{base['gflops']:.2f}", None, None, None, num(base.get("latency_ms"), ".1f"), None]
    if table == "3":
        base_cells.insert(1, None)
    if accuracy:
        b = next(iter(accuracy.values()))["AP50:95"]["baseline"]
        base_cells += [num(100 * sum(b) / len(b), ".1f") if b and None not in b else None, None, None]
    cells = [base_cells + _paper_baseline(table)]
    for v in rows_v:
        c = cost["variants"][v.name]
        label = v.label
        if table == "4":
            label += " (" + "/".join(str(s.c_low // a[2]) for s, a in zip(stages, c["stage_args"])) + ")"
        if "error" in c:
            row = [label, *[None] * 7, f"not measured: {c['error']}"]
        else:
            row = [label, millions(c["params"]), f"{c['d_params'] / 1e3:+.1f}K", f"{c['gflops']:.2f}",
                   signed(c["d_gflops"], ".3f"), f"{c['fine_gflops']:.3f}", f"{c['fine_peak_mb']:.2f}",
                   num(c.get("latency_ms"), ".1f"), _ratio_cell(c)]
        if table == "3":
            row.insert(1, COMPLEXITY[v.attention])
        if accuracy:
            row += _ap_cells(accuracy.get(v.name))
        cells.append(row + _paper_cells(v))
    return markdown_table(header, cells)


def markdown(tables: list[str], variants: list[Variant], cost: dict[str, Any], stages: list[Stage],
             settings: dict[str, Any], accuracy: dict[str, Any] | None = None) -> str:
    """``ablate.md``: one section per table, with what was measured how."""
    lines = [f"# Ablations of {settings['model']} (imgsz {settings['imgsz']}, batch 1)", "",
             f"Ours: {settings['model']} and its baseline {Path(cost['baseline']['model']).stem}; GFLOPs counted "
             "with attention (FlopCounterMode, math attention); FINE peak act. = peak bytes of tensors the FINE "
             "blocks create (unfused attention, inputs and weights excluded; the largest block); latency = "
             f"PyTorch eager, CPU, {settings['threads']} threads, median of {settings['iters']} interleaved runs, "
             f"on {settings['cpu']}; baseline/variant = ratio of medians with its 95% bootstrap interval over the "
             "interleaved rounds (an interval containing 1 is no measurable difference in speed). Paper: Table 3 on "
             "RT-DETR R18 (its FPS, baseline 80; Mem in MB), Fig. 5 / Tables 4 and 6 on Faster R-CNN R50 (AP on COCO "
             "val2017): compare directions, not absolute values.", ""]
    if accuracy:
        seeds = next(iter(accuracy.values()))["AP50:95"]["baseline"]
        lines += [f"AP50:95: pycocotools on {settings['data']} ({settings['split']}), mean over {len(seeds)} seed(s);"
                  " Δ = variant - baseline per seed, 95% t-interval over seeds (no interval from one seed). A Δ "
                  "whose interval contains 0 is no measurable difference.", ""]
    for t in tables:
        lines += [f"## {TABLE_TITLES[t]}", "", table_markdown(t, variants, cost, stages, accuracy), ""]
    return "\n".join(lines)


def plot(tables: list[str], variants: list[Variant], cost: dict[str, Any], path: Path,
         accuracy: dict[str, Any] | None = None) -> Path:
    """One panel per table: AP50:95 (with the 95% interval of the difference around the baseline, when there is
    data) or latency (with the bootstrap interval of the speed ratio), against the variant's extra GFLOPs over the
    baseline (Table 4: against d, the FLOPs being equal); each point labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = min(len(tables), 2)
    nrows = math.ceil(len(tables) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6.0 * cols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[len(tables):]:
        ax.set_visible(False)
    base = cost["baseline"]
    for ax, t in zip(axes.flat, tables):
        xs, ys, errs, labels = [], [], [], []
        for v in (v for v in variants if v.table == t):
            c = cost["variants"][v.name]
            if "error" in c:
                continue
            if accuracy:
                e = accuracy[v.name]["AP50:95"]
                base_mean = 100 * sum(e["baseline"]) / len(e["baseline"])
                p = e["paired"]
                y = None if p is None else base_mean + 100 * p["mean"]
                err = 0.0 if p is None or p["low"] is None else 100 * (p["high"] - p["mean"])
            else:  # the bootstrap interval of baseline/variant, as a latency range around the median
                y, ci = c.get("latency_ms"), c.get("speed_ratio_ci95")
                err = (y - base["latency_ms"] / ci[1], base["latency_ms"] / ci[0] - y) if ci and y else 0.0
            if y is None:
                continue
            xs.append(v.head_dim if t == "4" else c["d_gflops"])  # Table 4: same FLOPs at every d
            ys.append(y)
            errs.append(err if isinstance(err, tuple) else (err, err))
            labels.append(v.label.replace(" (shipped)", "*"))
        spread = max((max(e) for e in errs), default=0.0)
        if xs and accuracy and max(ys) - min(ys) < 1.0:  # AP values within a point: show +-1 point, no offset
            mid = (max(ys) + min(ys)) / 2
            ax.set_ylim(mid - 1.0 - spread, mid + 1.0 + spread)
        ax.ticklabel_format(axis="y", useOffset=False)
        if xs:
            yerr = [[e[0] for e in errs], [e[1] for e in errs]] if spread else None
            ax.errorbar(xs, ys, yerr=yerr, fmt="o", color="#DD8452", ecolor="#999999", capsize=3)
            for i, (x, y, lab) in enumerate(zip(xs, ys, labels)):  # alternate above/below: neighbours overlap less
                ax.annotate(lab, (x, y), textcoords="offset points", xytext=(5, 4 if i % 2 == 0 else -11), fontsize=8)
        if accuracy:
            ax.axhline(100 * sum(next(iter(accuracy.values()))["AP50:95"]["baseline"]) /
                       len(next(iter(accuracy.values()))["AP50:95"]["baseline"]), color="#4C72B0", lw=1, ls="--",
                       label="baseline")
            ax.set_ylabel("AP50:95 (%)")
        elif base.get("latency_ms") is not None:
            ax.axhline(base["latency_ms"], color="#4C72B0", lw=1, ls="--", label="baseline")
            ax.set_ylabel("latency (ms, CPU eager, median, 95% CI)")
        if t == "4":
            ax.set_xscale("log", base=2)
            ax.set_xlabel("per-head dim d (capped at each stage's C)")
        else:
            if xs and max(xs) > 20 * max(min(x for x in xs if x > 0) if any(x > 0 for x in xs) else 1, 1e-9):
                ax.set_xscale("symlog", linthresh=max(min((x for x in xs if x > 0), default=1.0), 1e-3))
            else:
                ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.set_xlabel("ΔGFLOPs over the baseline")
        ax.set_title(TABLE_TITLES[t], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.margins(x=0.25, y=0.2)
    fig.suptitle(f"fine-yolo ablate: {Path(base['model']).stem} + FINE variants", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------- command

def _local(value: str) -> str:
    """An existing local file as an absolute path (the runs may start elsewhere); other names unchanged."""
    p = Path(value).expanduser()
    return str(p.resolve()) if p.is_file() else value


def _run(args: dict[str, Any], extra: dict[str, Any]) -> int:
    import torch

    from fine_yolo.bench.env import cpu_name
    from fine_yolo.compare.command import parse_seeds
    from fine_yolo.models import baseline_name

    if extra and not args["data"]:
        raise UsageError(f"unknown argument(s) {', '.join(extra)}: `yolo train` keys pass through only with data=")
    set_torch_threads(args["threads"])
    model = _local(str(args["model"]))
    tables = parse_tables(str(args["table"]))
    variants = select(tables, str(args["variants"]))
    try:
        baseline = _local(str(args["baseline"])) if args["baseline"] else baseline_name(model)
    except ValueError as e:
        raise UsageError(f"argument 'model={args['model']}': {e}; give baseline= explicitly") from None
    out = Path(str(args["out"]))
    model_text(model)  # a model that does not resolve is a usage error, before anything is built
    stages = read_stages(model)
    paths = write_yamls(model, variants, stages, out)
    imgsz = int(args["imgsz"])
    settings = {"model": str(args["model"]), "baseline": baseline, "imgsz": imgsz, "tables": tables,
                "iters": int(args["iters"]), "threads": torch.get_num_threads(), "cpu": cpu_name(),
                "data": str(args["data"]), "split": str(args["split"]),
                "stages": [asdict(s) for s in stages]}

    accuracy = plan = arms = None
    if args["data"]:
        train_args = {"data": _local(str(args["data"])), "epochs": args["epochs"], "imgsz": imgsz,
                      "batch": args["batch"], **({"pretrained": _local(str(args["pretrained"]))}
                                                 if args["pretrained"] else {}), **extra}
        try:
            plan, arms = accuracy_plan(baseline, variants, stages, paths, parse_seeds(str(args["seeds"])),
                                       out / "accuracy", train_args)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if args["dry_run"]:
            for spec in plan.runs:
                print(f"# {spec.name}")
                print(spec.command())
            return 0
        from fine_yolo._hook import enabled

        if not enabled():
            raise UsageError("the accuracy part runs plain `yolo train` processes, which know FINE through the "
                             "start-up hook; it is off (FINE_YOLO_HOOK=0)")
    elif args["dry_run"]:
        raise UsageError("dry_run=True prints the training commands of the accuracy part: give data=")

    settings["threads"] = torch.get_num_threads()  # what the latency runs get (ultralytics' import may change it)
    cost = cost_rows(model, baseline, variants, stages, paths, imgsz, int(args["iters"]))
    if plan is not None:
        accuracy = run_accuracy(plan, arms, args)
    summary = accuracy["summary"] if accuracy else None
    md = markdown(tables, variants, cost, stages, settings, summary)
    out.mkdir(parents=True, exist_ok=True)
    json_path = Path(str(args["json"])) if args["json"] else out / "ablate.json"
    document = {"settings": settings, "baseline": cost["baseline"], "variants": cost["variants"],
                "tables": {t: [v.name for v in variants if v.table == t] for t in tables},
                "paper": _paper_document(tables), "accuracy": accuracy}
    json_path.write_text(json.dumps(document, indent=2, default=_jsonable))
    (out / "ablate.md").write_text(md)
    png = plot(tables, variants, cost, out / "ablate.png", summary)
    print(f"\n{md}\nWritten: {out / 'ablate.md'}, {json_path}, {png}, variant YAMLs in {out / 'yaml'}")
    return 0


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return float(x) if hasattr(x, "__float__") else str(x)


def _paper_document(tables: list[str]) -> dict[str, Any]:
    from fine_yolo import paper

    doc: dict[str, Any] = {}
    if "3" in tables:
        doc["3"] = {"model": "RT-DETR R18", "baseline": paper.TABLE3_BASELINE, "rows": paper.TABLE3_ROWS}
    if "5" in tables:
        doc["5"] = {"model": "Faster R-CNN R50", "baseline_AP": paper.FIG5_BASELINE_AP,
                    "rows": {f"r{r}k{k}": v for (r, k), v in paper.FIG5.items()}}
    if "4" in tables:
        doc["4"] = {"model": "Faster R-CNN R50, C=256", "baseline_AP": paper.TABLE4_BASELINE_AP,
                    "rows": {f"d{d}": {"AP": ap} for d, ap in paper.TABLE4.items()}}
    if "6" in tables:
        doc["6"] = {"model": "Faster R-CNN R50", "rows": paper.TABLE6}
    return doc


DESCRIPTION = """\
Cost (always): params, GFLOPs (attention counted), FINE blocks' GFLOPs and peak activation memory, and interleaved
CPU latency of the baseline and every variant of the model's FINE rows, in the layout of the paper's Table 3
(attention), Fig. 5 (r, k), Table 4 (head dim) and Table 6 (pooling), the paper's numbers beside ours.
Accuracy (with data=): every variant trained and evaluated against the same baseline runs with the seed-controlled
machinery of `fine-yolo compare`; AP50:95 per variant with its paired difference and 95% t-interval over seeds.
Variants per table: 3: vanilla, window, area, linear, aats; 5: r1k1, r1k2, r2k1, r2k2, r4k1, r4k2, shipped;
4: d256, d64, d32, d16, d8, d4, d2; 6: dwconv, max, avg."""

COMMAND = Command(
    options={
        "model": Option("yolov8s-fine.yaml", "FINE model YAML whose FINE rows are varied"),
        "baseline": Option("", "baseline model (default: model without -fine)"),
        "table": Option("all", "3, 4, 5 (Fig. 5), 6, all, or a comma list"),
        "variants": Option("", "comma list of variant names to keep (default: every variant of the tables)"),
        "imgsz": Option(640, "input size (cost and, with data=, training and evaluation)"),
        "iters": Option(20, "timed runs per model for the latency column (0: no latency)"),
        "threads": Option(0, "torch CPU threads (0: torch's default)"),
        "out": Option("runs/ablate", "output directory (ablate.md, ablate.json, ablate.png, yaml/, accuracy/)"),
        "json": Option("", "write the JSON here instead of out/ablate.json"),
        "data": Option("", "dataset YAML: also train and evaluate every variant (accuracy part)"),
        "seeds": Option("3", "accuracy: number of seeds (from 0) or a comma list"),
        "epochs": Option(100, "accuracy: training epochs of every run"),
        "batch": Option(16, "accuracy: train and evaluation batch size"),
        "pretrained": Option("", "accuracy: checkpoint every run starts from (warm start), e.g. yolov8s.pt"),
        "device": Option("", "accuracy: '' (ultralytics' choice), cpu, 0, or 0,1,2,3 (one run per device)"),
        "split": Option("val", "accuracy: dataset split to evaluate"),
        "conf": Option(0.5, "accuracy: confidence threshold of the TP/FP/FN counts"),
        "iou": Option(0.5, "accuracy: IoU threshold of the TP/FP/FN counts"),
        "dry_run": Option(False, "accuracy: print each run's `yolo train` command and train nothing"),
    },
    run=_run,
    example="fine-yolo ablate model=yolov8s-fine.yaml table=3 imgsz=640 out=runs/ablate",
    description=DESCRIPTION,
    passthrough="with data=: any `yolo train` argument, passed to every run (e.g. lr0=0.02 workers=4)",
)


def main(argv: list[str]) -> int:
    """Run the command from a raw argv list: ``help`` prints the keys, bad input one sentence (as ``fine-yolo``)."""
    return COMMAND.main(argv, prog="python -m fine_yolo.analysis.ablate")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
