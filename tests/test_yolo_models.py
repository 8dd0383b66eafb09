"""FINE YAMLs inside ultralytics: the placement rule on every installed upstream YAML with a top-down stage (P2/P6,
ghost, yolov3, every task), build at every scale, upstream's layer list index for index, forward, the strided slice
that recovers high, identity at init, names, bit-exact checkpoint transfer, on-demand rendering by name or path,
``fine-yolo yaml`` on a YAML of the test's own, bad rows."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from conftest import output_tensors, script
from helpers import in_depth, placement_ks
from ultralytics import YOLO

from fine_yolo.glue.fine_rows import FINERowError
from fine_yolo.models import (
    FineYamlError,
    Stage,
    baseline_name,
    build,
    catalogue,
    fine_yaml_path,
    not_covered_table,
    placement_table,
    scales,
    top_down_stages,
    upstream_text,
    write_fine_yaml,
)
from fine_yolo.nn import FINEConcat
from fine_yolo.nn.fine import head_dim_for

MODELS_DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"  # the placement tables live there
SHIPPED = in_depth()
ALL_SCALES = [(name, n) for name in SHIPPED for n in scales(name)]
# the other catalogued YAMLs at their smallest scale, but the ~100M-parameter yolov3, yolov3-spp and the per-scale
# yolov9c-seg, yolov9e-seg (their detect twins are in SHIPPED), checked by hand (docs/models.md)
OTHERS = [scales(n)[0] for n in catalogue() if n not in SHIPPED and n not in ("yolov3-fine.yaml",
          "yolov3-spp-fine.yaml", "yolov9c-seg-fine.yaml", "yolov9e-seg-fine.yaml")]


def _first_per(key) -> list[str]:
    """The first scale of the first in-depth file for each value of ``key(FineModel)``, in that order."""
    first: dict = {}
    for name, m in SHIPPED.items():
        first.setdefault(key(m), scales(name)[0])
    return list(first.values())


# One model per family, task and placement (v9e, v9m and the RT-DETR backbones differ from their family's first file).
REPRESENTATIVES = _first_per(lambda m: (m.family, m.task, m.stages))
# At 640 one model per family and task, the smallest (RT-DETR: rtdetr-l; the others run at the small size).
FORWARD_640 = _first_per(lambda m: (m.family, m.task))


def _live(model):
    """Re-estimate every BatchNorm's statistics on one small batch (train mode, every layer but the head), as training
    would, and return the model in eval mode.

    At PyTorch's initialisation with BatchNorm's default statistics, activations shrink ~3x per layer, so comparing
    outputs would compare near-zero numbers (and FINE's identity check near-zero maps). After this they are O(1).
    """
    net = model.model.float()
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics
    net.train()
    torch.manual_seed(0)
    y, x = [], torch.rand(2, 3, 64, 128)  # multiples of 64: P6 models too
    with torch.no_grad():
        for m in net.model[:-1]:  # the head's training path would need targets (RT-DETR's denoising)
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x)
    net.eval()
    return model


def _fine_modules(model) -> list[FINEConcat]:
    return [m for m in model.model.model if isinstance(m, FINEConcat)]


def _layer_outputs(model, x: torch.Tensor) -> list:
    """Output of every layer, in execution order (ultralytics' _predict_once; RT-DETR's head gets batch=None)."""
    y = []
    for m in model.model.model:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        x = m(x)
        y.append(x)
    return y


_tensors = output_tensors


def _check_forward(model, name: str, hw: tuple[int, int]) -> None:
    """Each fusion row reads the table's layers; a two-input row's strided slice of the upsampled map is the map the
    upsampler read, bit for bit; FINE keeps low's shape at a 2x level step; at init the row is upstream's Concat."""
    stages = catalogue()[_file_of(name)].stages
    fusions = _fine_modules(model)
    with torch.no_grad():
        y = _layer_outputs(model, torch.rand(1, 3, *hw))
    assert [(fm.i, *fm.fine_from) for fm in fusions] == [s[:3] for s in stages], name
    for fm in fusions:
        up, (low, high) = fm.f[0] % fm.i, fm.fine_from
        assert (fm.fine.c_low, fm.fine.c_high) == (y[low].shape[1], y[high].shape[1])  # channels of this width
        assert y[low].shape[2:] == (y[high].shape[2] * 2, y[high].shape[3] * 2)
        if len(fm.f) == 2:  # nearest upsampling: the row recovers high from its own input, bit for bit
            assert fm.up == 2 and torch.equal(y[up][..., ::2, ::2], y[high]), name
        assert torch.equal(y[fm.i], torch.cat((y[up], y[low]), 1)), name  # W_O = 0: upstream's Concat, bit for bit
    assert _tensors(y[-1]) and all(t.shape[0] == 1 for t in _tensors(y[-1]))  # the head ran


def _file_of(model_name: str) -> str:
    return next(name for name in catalogue() if model_name in scales(name))


@functools.cache
def _built(model_name: str):
    """One live eval-mode build per model for the read-only tests (a build costs up to ~1 s on 2 cores)."""
    return _live(build(model_name))


def _placed_as_the_rule_says(model, stages: tuple[Stage, ...]) -> None:
    """One fusion row per top-down stage, at the stage's row, reading its low and high; k by the placement rule
    (1, 2, 4 from the top stage down: each stage's tokens on the coarsest high map's grid), r = 2, and the head dim
    of :func:`head_dim_for` (16 wherever 16 divides C; yolov9m's 360 channels: 24)."""
    fusions = _fine_modules(model)
    assert [(fm.i, *fm.fine_from) for fm in fusions] == [tuple(s) for s in stages]
    assert [fm.fine.k for fm in fusions] == placement_ks(len(stages))
    assert [(fm.fine.r, fm.fine.head_dim) for fm in fusions] == [(2, head_dim_for(fm.fine.c_low)) for fm in fusions]


@pytest.mark.parametrize(("name", "model_name"), ALL_SCALES, ids=[n for _, n in ALL_SCALES])
def test_every_scale_builds_with_fine_where_the_rule_puts_it(name, model_name):
    """Build-only (the glue's build-time probe already ran the baseline layers and each FINE at 128 px). At each
    file's first scale, every layer of the FINE model is the upstream model's (``i``, ``f``, type) except the
    fusion rows, which keep ``i`` and their first two inputs (YOLOv6 adds high as a third); the save list is the
    same."""
    torch.manual_seed(0)
    model = build(model_name)
    _placed_as_the_rule_says(model, SHIPPED[name].stages)
    if len(scales(name)) > 1:  # the scale letter of the name reached ultralytics (yolov8s-fine -> scale s)
        assert model.model.yaml["scale"] == model_name[len(name.split("-")[0])]
    if model_name != scales(name)[0]:
        return
    base, fine = build(baseline_name(model_name)).model, model.model
    rows = {s.row for s in SHIPPED[name].stages}
    assert len(base.model) == len(fine.model) and base.save == fine.save
    for b, f in zip(base.model, fine.model):
        if b.i in rows:
            assert (f.i, f.f[:2], type(b).__name__, f.type) == (b.i, b.f, "Concat", "fine_yolo.nn.fusion.FINEConcat")
        else:
            assert (f.i, f.f, f.type) == (b.i, b.f, b.type)


def test_the_rule_gives_the_papers_ks_and_yolov9ms_head_dim():
    """Paper §5.3.2: k=1 at P4<-P5, k=2 at P3<-P4 in every two-stage model; yolov9m's P4 (360 channels) gets d=24;
    a P2 stage gets k=4 (tokens on the stride-32 grid), a P6 model 1, 2, 4 (the stride-64 grid)."""
    v9m = _fine_modules(build("yolov9m-fine.yaml"))
    assert [(m.fine.c_low, m.fine.k, m.fine.head_dim, m.fine.heads) for m in v9m] == [(360, 1, 24, 15),
                                                                                     (240, 2, 16, 15)]
    p2 = _fine_modules(build("yolov8n-p2-fine.yaml"))
    assert [(m.i, m.fine.k, m.fine.token_stride) for m in p2] == [(11, 1, 2), (14, 2, 4), (17, 4, 8)]
    p6 = _fine_modules(build("yolo26n-p6-fine.yaml"))
    assert [(m.i, m.fine.k) for m in p6] == [(14, 1), (17, 2), (20, 4)]


def test_the_catalogue_is_every_installed_yaml_with_a_top_down_stage():
    names = set(catalogue())
    assert set(SHIPPED) <= names
    variants = {"yolov8-p2", "yolov8-p6", "yolov8-ghost", "yolov8-ghost-p2", "yolov8-ghost-p6", "yolov8-seg-p6",
                "yolov8-pose-p6", "yolo26-p2", "yolo26-p6", "yolov5-p6", "yolov3", "yolov3-spp", "yolov3-tiny"}
    assert {f"{v}-fine.yaml" for v in variants} <= names
    assert not {n for n in names if "-cls" in n or "world" in n or n.startswith("yoloe")}
    assert [len(catalogue()[f"{v}-fine.yaml"].stages) for v in ("yolov8-p2", "yolo26-p6", "yolov3-tiny")] == [3, 3, 1]


@pytest.mark.parametrize("model_name", REPRESENTATIVES)
def test_one_model_per_family_and_task_runs_at_a_small_rectangular_size(model_name):
    _check_forward(_built(model_name), model_name, (128, 192))


@pytest.mark.parametrize("model_name", FORWARD_640)
def test_one_model_per_family_and_task_runs_at_640(model_name):
    _check_forward(_built(model_name), model_name, (640, 640))


@pytest.mark.parametrize("name", list(catalogue()))
def test_rendered_yaml_is_upstream_with_fusion_rows_at_every_top_down_stage(name):
    """Structurally (so any ultralytics in the declared range passes): upstream's rows, one for one, except that each
    top-down stage's Concat reads as FINEConcat with empty args (the rule fills them at build; a learned upsampler,
    YOLOv6's: high as a third input), at exactly the upstream YAML's top-down fusion stages."""
    rendered = yaml.safe_load(fine_yaml_path(name).read_text(encoding="utf-8"))
    upstream = yaml.safe_load(upstream_text(name))
    stages = catalogue()[name].stages
    rows, up_rows = rendered["backbone"] + rendered["head"], upstream["backbone"] + upstream["head"]
    assert len(rows) == len(up_rows) and len(rendered["backbone"]) == len(upstream["backbone"])
    assert {i for i, r in enumerate(rows) if r != up_rows[i]} == {s.row for s in stages}
    for s in stages:
        third = [s.high] if name.startswith("yolov6") else []
        assert up_rows[s.row][1:] == [1, "Concat", [1]]
        assert rows[s.row] == [up_rows[s.row][0] + third, 1, "FINEConcat", []]
    assert {**rendered, "backbone": upstream["backbone"], "head": upstream["head"]} == upstream  # nc, scales, ...
    assert top_down_stages(upstream) == list(stages)


def test_fusion_module_is_eq_3_with_high_from_the_slice_or_a_third_input():
    """Concat(up, FINE(low, high)): with high given as a third input or recovered as up[..., ::2, ::2] from a nearest
    2x upsampling, the same numbers bit for bit; at the identity start, upstream's Concat(up, low)."""
    torch.manual_seed(0)
    m = FINEConcat(16, 32, k=2).eval()
    high, low = torch.randn(1, 32, 6, 8), torch.randn(1, 16, 12, 16)
    up = torch.nn.Upsample(None, 2, "nearest")(high)
    with torch.no_grad():
        assert torch.equal(m([up, low]), torch.cat((up, low), 1))  # W_O = 0
        torch.nn.init.normal_(m.fine.out.weight)
        out = m([up, low])
        assert out.shape == (1, 32 + 16, 12, 16) and not torch.equal(out[:, 32:], low)
        assert torch.equal(out, m([up, low, high])) and torch.equal(out, torch.cat((up, m.fine(low, high)), 1))


def test_rendered_rows_keep_upstreams_comment_and_say_what_fine_reads():
    v8 = fine_yaml_path("yolov8-fine.yaml").read_text(encoding="utf-8")
    assert "  - [[-1, 6], 1, FINEConcat, []] # cat backbone P4 + FINE(low=6, high=9)\n" in v8
    assert "  - [[-1, 4], 1, FINEConcat, []] # cat backbone P3 + FINE(low=4, high=12)\n" in v8
    v6 = fine_yaml_path("yolov6-fine.yaml").read_text(encoding="utf-8")  # ConvTranspose2d: high is a third input
    assert "[[-1, 6, 10], 1, FINEConcat, []]" in v6 and "[[-1, 4, 15], 1, FINEConcat, []]" in v6


def test_fine_yamls_render_by_name_or_path_into_a_content_addressed_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINE_YOLO_CACHE", str(tmp_path / "cache"))
    first = fine_yaml_path("yolov8-p2-fine.yaml")
    assert first.parent.parent == tmp_path / "cache" and first.name == "yolov8-p2-fine.yaml"
    assert fine_yaml_path("yolov8n-p2-fine.yaml") == first  # the scale letter is ultralytics' business
    assert first.read_text(encoding="utf-8").startswith("# fine_yolo: yolov8-p2-fine.yaml = ultralytics v8/yolov8-p2")
    mine = tmp_path / "mine.yaml"
    mine.write_text(upstream_text("yolov8-fine.yaml") + "# mine\n")
    rendered = fine_yaml_path(str(tmp_path / "mine-fine.yaml"))
    assert rendered.name == "mine-fine.yaml" and rendered.read_text().endswith("# mine\n")
    assert fine_yaml_path("nothing-like-it-fine.yaml") is None and fine_yaml_path("yolov8.yaml") is None
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images\nnames: {0: a}\n")  # a data YAML is no model
    assert fine_yaml_path(str(tmp_path / "data-fine.yaml")) is None
    with pytest.raises(FineYamlError, match=r"v8/yolov8-cls.yaml: no top-down fusion stage"):
        fine_yaml_path("yolov8-cls-fine.yaml")


def test_top_down_stages_are_upsampled_concats_only():
    """yolov6 upsamples with ConvTranspose2d; the bottom-up (PAN) Concats read strided convs and are not stages."""
    v6 = yaml.safe_load(Path(upstream_path("yolov6-fine.yaml")).read_text())
    assert top_down_stages(v6) == [Stage(12, 6, 10), Stage(17, 4, 15)]  # read off v6/yolov6.yaml
    rtdetr = yaml.safe_load(Path(upstream_path("rtdetr-l-fine.yaml")).read_text())
    assert top_down_stages(rtdetr) == [Stage(15, 14, 12), Stage(20, 19, 17)]  # -2: the upsample


def upstream_path(name: str) -> str:
    from ultralytics.utils import ROOT

    return str(ROOT / "cfg" / "models" / catalogue()[name].upstream)


def test_models_doc_placement_tables_are_current():
    """docs/models.md prints the placement table and what is not covered (`python scripts/placement_tables.py`)."""
    text = MODELS_DOC.read_text(encoding="utf-8")
    assert placement_table() in text, "docs/models.md placement table is stale: paste `scripts/placement_tables.py`"
    assert not_covered_table() in text, "docs/models.md not-covered table is stale"


def test_placement_table_lists_every_file_once():
    table = placement_table()
    rows = table.splitlines()[2:]
    assert len(catalogue()) == 51 and len(rows) == 42  # yolov9{t,s,m,c}, yolov10{n..x}, rtdetr-resnet{101,50} share
    assert ("| YOLOv9 | detect | `yolov9{t,s,m,c}-fine.yaml` | `v9/yolov9{t,s,m,c}.yaml` | 2 "
            "| 11: 6 ← 9 · 14: 4 ← 12 |") in rows
    assert ("| RT-DETR | detect | `rtdetr-resnet{101,50}-fine.yaml` | `rt-detr/rtdetr-resnet{101,50}.yaml` | 2 "
            "| 10: 9 ← 7 · 15: 14 ← 12 |") in rows
    assert ("| YOLOv8 | detect | `yolov8{n,s,m,l,x}-p2-fine.yaml` | `v8/yolov8-p2.yaml` | 3 "
            "| 11: 6 ← 9 · 14: 4 ← 12 · 17: 2 ← 15 |") in rows


@pytest.mark.parametrize("fine", REPRESENTATIVES)
def test_every_output_read_by_index_is_saved(fine):
    """RT-DETR's predict (like _predict_once) keeps y[i] only for i in save: every input read other than through the
    -1 chain must be in it, or a layer receives None."""
    net = _built(fine).model
    read = {m.i + x if x < 0 else x for m in net.model for x in ([m.f] if isinstance(m.f, int) else m.f) if x != -1}
    assert read <= set(net.save)


@pytest.mark.parametrize("fine", REPRESENTATIVES + OTHERS)
def test_baseline_checkpoint_transfers_every_tensor_and_predicts_identically(tmp_path, fine):
    from ultralytics.utils.torch_utils import intersect_dicts

    torch.manual_seed(0)
    base = baseline_name(fine)
    ckpt = tmp_path / base.replace(".yaml", "-baseline.pt")  # not yolov5n.pt: ultralytics would fetch yolov5nu.pt
    _live(build(base)).save(ckpt)  # O(1) activations; fp16 weights, the way ultralytics stores checkpoints
    baseline = build(str(ckpt))  # what pretrained=<baseline>.pt would give
    model = build(fine)
    _placed_as_the_rule_says(model, catalogue()[_file_of(fine)].stages)
    b_sd, f_sd = baseline.model.float().state_dict(), model.model.state_dict()
    # every baseline tensor exists under the same name and shape; only FINE's tensors are new, inside the fusion rows
    assert all(k in f_sd and f_sd[k].shape == v.shape for k, v in b_sd.items())
    rows = {str(s.row) for s in catalogue()[_file_of(fine)].stages}
    assert {tuple(k.split(".")[1:3]) for k in f_sd if k not in b_sd} == {(row, "fine") for row in rows}
    assert len(intersect_dicts(b_sd, f_sd)) == len(b_sd)  # ultralytics' name-and-shape matching takes them all
    model.load(str(ckpt))  # ultralytics' own transfer ("Transferred a/b items")
    f_sd = model.model.state_dict()
    assert all(torch.equal(v, f_sd[k]) for k, v in b_sd.items())
    x = torch.rand(1, 3, 128, 192)  # a multiple of 64: P6 models too
    b_net, f_net = baseline.model.float().eval(), model.model.float().eval()
    with torch.no_grad():
        yb, yf = _tensors(b_net(x)), _tensors(f_net(x))
    assert len(yb) == len(yf) > 0
    assert all(torch.equal(a, b) for a, b in zip(yb, yf))  # bit for bit: every head here is deterministic in eval


def test_same_seed_gives_the_baseline_weights_and_function():
    """Baseline layers are built first, so with one seed a FINE model starts as exactly its baseline (the demo's
    controlled comparison relies on it)."""
    torch.manual_seed(0)
    base = YOLO("yolov8n.yaml", verbose=False).model.eval()
    torch.manual_seed(0)
    fine = YOLO("yolov8n-fine.yaml", verbose=False).model.eval()
    f_sd = fine.state_dict()
    assert all(torch.equal(v, f_sd[k]) for k, v in base.state_dict().items())
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        assert torch.equal(base(x)[0], fine(x)[0])


@pytest.mark.parametrize(
    ("name", "file", "scale", "task"),  # scale: what ultralytics reads off the name ("" for b, l: per-file)
    [
        ("yolov8s-fine.yaml", "yolov8-fine.yaml", "s", "detect"),
        ("yolov12s-fine.yaml", "yolo12-fine.yaml", "s", "detect"),
        ("yolo12s-fine.yaml", "yolo12-fine.yaml", "s", "detect"),
        ("yolov10b-fine.yaml", "yolov10b-fine.yaml", "", "detect"),
        ("yolov11s-fine.yaml", "yolo11-fine.yaml", "s", "detect"),
        ("yolov26m-fine.yaml", "yolo26-fine.yaml", "m", "detect"),
        ("yolov26n-seg-fine.yaml", "yolo26-seg-fine.yaml", "n", "segment"),
        ("yolo11n-pose-fine.yaml", "yolo11-pose-fine.yaml", "n", "pose"),
        ("yolov9m-fine.yaml", "yolov9m-fine.yaml", "m", "detect"),
        ("rtdetr-l-fine.yaml", "rtdetr-l-fine.yaml", "", "detect"),
    ],
)
def test_bare_names_and_alternate_spellings_resolve_from_any_directory(tmp_path, monkeypatch, name, file, scale, task):
    monkeypatch.chdir(tmp_path)
    model = build(name)
    assert len(_fine_modules(model)) == 2 and model.task == task
    # the FINE YAML rendered from the upstream file was read, with the scale of the name the user typed
    rendered = yaml.safe_load(fine_yaml_path(file).read_text(encoding="utf-8"))
    assert model.model.yaml["head"] == rendered["head"] and model.model.yaml.get("scale") == scale


def test_rtdetr_yaml_builds_through_rtdetr_not_yolo():
    """ultralytics' YOLO() cannot build an RT-DETR YAML (FINE or not); RTDETR() can, and the yolo command picks it
    from the name."""
    with pytest.raises(Exception, match="does not support '_new' mode"):
        YOLO("rtdetr-l-fine.yaml", verbose=False)
    assert type(build("rtdetr-l-fine.yaml")).__name__ == "RTDETR"


def _yaml(tmp_path, rows: list[str]) -> str:
    text = fine_yaml_path("yolov8-fine.yaml").read_text(encoding="utf-8")
    head = text[text.index("head:") :]
    new_head = "head:\n" + "".join(f"  - {r}\n" for r in rows)
    path = tmp_path / "yolov8n-bad.yaml"
    path.write_text(text.replace(head, new_head), encoding="utf-8")
    return str(path)


V8_HEAD = [
    "[-1, 1, nn.Upsample, [None, 2, 'nearest']]",
    "[[-1, 6], 1, FINEConcat, [1]]",
    "[-1, 3, C2f, [512]]",
    "[-1, 1, nn.Upsample, [None, 2, 'nearest']]",
    "[[-1, 4], 1, Concat, [1]]",
    "[-1, 3, C2f, [256]]",
    "[-1, 1, Conv, [256, 3, 2]]",
    "[[-1, 12], 1, Concat, [1]]",
    "[-1, 3, C2f, [512]]",
    "[-1, 1, Conv, [512, 3, 2]]",
    "[[-1, 9], 1, Concat, [1]]",
    "[-1, 3, C2f, [1024]]",
    "[[15, 18, 21], 1, Detect, [nc]]",
]


@pytest.mark.parametrize(
    ("row", "text", "message"),  # V8_HEAD[row] replaced by text; the message names YAML row 10 + row
    [
        (1, "[-1, 1, FINEConcat, [1]]", r"YAML row 11 .*reads \[up, low\] or \[up, low, high\]"),
        (1, "[[-1, 6, 9, 4], 1, FINEConcat, [1]]", r"YAML row 11 .*reads \[up, low\] or \[up, low, high\]"),
        (1, "[[-1, 6, 30], 1, FINEConcat, [1]]", r"YAML row 11 .*input 30 does not name an earlier layer"),
        (1, "[[-1, 6], 1, FINEConcat, [0]]", r"YAML row 11 .*positive integers"),
        (1, "[[-1, 6], 1, FINEConcat, [1, 2, 16, 1]]", r"YAML row 11 .*\[k, r, head_dim\]"),
        (1, "[[-1, 6], 1, FINEConcat, [1, 2, 48]]", r"YAML row 11 .*not divisible by head_dim=48"),
        (1, "[[-1, 6], 2, FINEConcat, [1]]", r"YAML row 11 .*cannot be repeated"),
        (1, "[[-1, 6], 1, FINEConcat, [16]]", r"YAML row 11 .*at least one token"),
        (1, "[[6, -1], 1, FINEConcat, [1]]", r"YAML row 11 .*input 6 \(layer 6, C2f\) is not a nearest nn.Upsample"),
        (0, "[-1, 1, nn.Upsample, [None, 2, 'bilinear']]", r"YAML row 11 .*\(layer 10, Upsample\) is not a nearest"),
        (1, "[[-1, 4], 1, FINEConcat, [1]]", r"YAML row 11 .*\(layer 10, 8x8\) and low \(layer 4, 16x16\) differ"),
        (1, "[[-1, 6, 4], 1, FINEConcat, [1]]",
         r"YAML row 11 .*high input \(layer 4, 16x16 at a 128px probe\) must be r=2 times coarser than low input "
         r"\(layer 6, 8x8\)"),
        (1, "[[6, 9], 1, FINE, [1]]", r"YAML row 11 .*FINE is not a row of its own; write the top-down fusion row"),
    ],
)
def test_bad_fusion_rows_fail_at_build_naming_the_row(tmp_path, row, text, message):
    rows = list(V8_HEAD)
    rows[row] = text
    with pytest.raises(FINERowError, match=message):
        YOLO(_yaml(tmp_path, rows), verbose=False)


MINE = """\
# a head of the test's own: a lateral conv before the upsample, a learned upsampler (ultralytics' ConvTranspose),
# no P5 output
nc: 3
scales:
  n: [0.33, 0.25, 1024]
backbone:
  - [-1, 1, Conv, [64, 3, 2]] # 0-P1/2
  - [-1, 1, Conv, [128, 3, 2]] # 1-P2/4
  - [-1, 1, C2f, [128, True]]
  - [-1, 1, Conv, [256, 3, 2]] # 3-P3/8
  - [-1, 2, C2f, [256, True]]
  - [-1, 1, Conv, [512, 3, 2]] # 5-P4/16
  - [-1, 2, C2f, [512, True]]
  - [-1, 1, Conv, [1024, 3, 2]] # 7-P5/32
  - [-1, 1, C2f, [1024, True]]
  - [-1, 1, SPPF, [1024, 5]] # 9
head:
  - [-1, 1, Conv, [256, 1, 1]] # 10 lateral conv
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 6], 1, Concat, [1]] # 12 cat backbone P4
  - [-1, 1, C2f, [256]] # 13 (P4/16)
  - [-1, 1, ConvTranspose, [128, 2, 2]] # 14 learned upsampler
  - [[-1, 4], 1, Concat, [1]] # 15 cat backbone P3
  - [-1, 1, C2f, [128]] # 16 (P3/8)
  - [[16, 13], 1, Detect, [nc]] # Detect(P3, P4)
"""


def _mine(tmp_path, text: str = MINE) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_fine_yolo_yaml_turns_a_users_yaml_into_a_fine_one_that_transfers_bit_exact(tmp_path):
    mine = _mine(tmp_path)
    proc = subprocess.run([script("fine-yolo"), "yaml", f"model={mine}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "mine-fine.yaml"
    assert f"wrote {out}" in proc.stdout
    assert "| 12 | (11, 6), high = layer 10 | 1 | 2 | 16 | 128 |" in proc.stdout  # a lateral conv: high is its output
    assert "| 15 | (14, 4), high = layer 13 | 2 | 2 | 16 | 64 |" in proc.stdout  # ConvTranspose: high, third input
    rows = yaml.safe_load(out.read_text())["head"]
    assert rows[2] == [[-1, 6], 1, "FINEConcat", []] and rows[5] == [[-1, 4, 13], 1, "FINEConcat", []]
    again = subprocess.run([script("fine-yolo"), "yaml", f"model={mine}"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and f"fine-yolo yaml: {out} exists; pass overwrite=True to replace it" in again.stderr
    # the baseline's own checkpoint (mine.pt) transfers into mine-fine.yaml bit-exact, FINE at the identity
    torch.manual_seed(0)
    ckpt = tmp_path / "mine.pt"
    _live(build(str(mine))).save(ckpt)
    baseline, model = build(str(ckpt)), build(str(out))
    model.load(str(ckpt))
    b_sd, f_sd = baseline.model.float().state_dict(), model.model.state_dict()
    assert all(torch.equal(v, f_sd[k]) for k, v in b_sd.items())
    assert {k.split(".")[1] for k in f_sd if k not in b_sd} == {"12", "15"}
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        yb, yf = _tensors(baseline.model.float().eval()(x)), _tensors(model.model.float().eval()(x))
    assert len(yb) == len(yf) > 0 and all(torch.equal(a, b) for a, b in zip(yb, yf))


def test_fine_yolo_yaml_refuses_with_a_sentence_naming_the_row(tmp_path):
    low_first = r"mine.yaml: YAML row 15 \[\[4, -1\], 1, 'Concat', \[1\]\] lists the low map \(layer 4\) before the"
    with pytest.raises(FineYamlError, match=low_first):
        write_fine_yaml(str(_mine(tmp_path, MINE.replace("[[-1, 4], 1, Concat", "[[4, -1], 1, Concat"))))
    flat = MINE[: MINE.index("head:")] + "head:\n  - [[4, 6, 9], 1, Detect, [nc]]\n"
    with pytest.raises(FineYamlError, match=r"mine.yaml: no top-down fusion stage .* nowhere to put FINE"):
        write_fine_yaml(str(_mine(tmp_path, flat)))
    assert not (tmp_path / "mine-fine.yaml").exists()
