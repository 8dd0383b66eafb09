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

Each variant is the model's own YAML, loaded as ultralytics loads it, with only its FINE rows' arguments replaced
(``[k, r, head_dim, attention, pool]``), written to ``out/yaml/<model>-<variant>.yaml``, so it builds, trains and
exports like any FINE YAML.

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

The package, by concern: :mod:`.variants` (the tables' variants and their model YAMLs), :mod:`.cost` (params,
GFLOPs, memory, latency), :mod:`.accuracy` (the plan through :mod:`fine_yolo.compare` and its summary),
:mod:`.report` (markdown, JSON's paper numbers, plot), :mod:`.command` (``COMMAND``, ``main``).
"""

from fine_yolo.analysis.ablate.accuracy import accuracy_plan, accuracy_summary, run_accuracy
from fine_yolo.analysis.ablate.command import COMMAND, main
from fine_yolo.analysis.ablate.cost import cost_rows, measure_cost, measure_latency
from fine_yolo.analysis.ablate.report import TABLE_TITLES, ap_cells, markdown, plot, table_markdown
from fine_yolo.analysis.ablate.variants import (
    TABLES,
    AblateError,
    Stage,
    Variant,
    model_yaml,
    parse_tables,
    read_stages,
    select,
    table_variants,
    variant_yaml,
    write_yamls,
)

__all__ = [
    "COMMAND", "TABLES", "TABLE_TITLES", "AblateError", "Stage", "Variant", "accuracy_plan", "accuracy_summary",
    "ap_cells", "cost_rows", "main", "markdown", "measure_cost", "measure_latency", "model_yaml", "parse_tables",
    "plot", "read_stages", "run_accuracy", "select", "table_markdown", "table_variants", "variant_yaml",
    "write_yamls",
]
