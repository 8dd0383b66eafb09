"""The shipped FINE YAMLs inside ultralytics: placement, build at every scale, upstream's layer list index for index,
forward, the strided slice that recovers high, identity at init, names, checkpoint transfer for every family and task,
bare names and alternate spellings, bad rows."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import yaml
from conftest import output_tensors
from ultralytics import YOLO

from fine_yolo.assets import cfg_dir
from fine_yolo.glue.fine_rows import FINERowError
from fine_yolo.models import (
    FINE_MODELS,
    HEAD_DIM,
    baseline_name,
    build,
    fine_row,
    not_shipped_table,
    placement_table,
    render_fine_yaml,
    scales,
    top_down_stages,
    upstream_text,
)
from fine_yolo.nn import FINEConcat

MODELS_DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"  # the placement tables live there
ALL_SCALES = [(name, n) for name in FINE_MODELS for n in scales(name)]


def _first_per(key) -> list[str]:
    """The first scale of the first shipped file for each value of ``key(FineModel)``, in table order."""
    first: dict = {}
    for name, m in FINE_MODELS.items():
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
    y, x = [], torch.rand(2, 3, 64, 96)
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
    stages = FINE_MODELS[_file_of(name)].stages
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
    return next(name for name in FINE_MODELS if model_name in scales(name))


@functools.cache
def _built(model_name: str):
    """One live eval-mode build per model for the read-only tests (a build costs up to ~1 s on 2 cores)."""
    return _live(build(model_name))


@pytest.mark.parametrize(("name", "model_name"), ALL_SCALES, ids=[n for _, n in ALL_SCALES])
def test_every_scale_builds_with_fine_where_the_table_puts_it(name, model_name):
    """Build-only (the glue's build-time probe already ran the baseline layers and each FINE at 256 px)."""
    model = build(model_name)
    fusions = _fine_modules(model)
    stages = FINE_MODELS[name].stages
    # paper §5.3.2: k=1 at P4<-P5, k=2 at P3<-P4, r=2, head dim 16 (yolov9m's P4: 24, the table says why)
    assert [(fm.fine.k, fm.fine.r, fm.fine.head_dim) for fm in fusions] == [(s.k, 2, s.head_dim) for s in stages]
    assert [(fm.i, *fm.fine_from) for fm in fusions] == [s[:3] for s in stages]
    if len(scales(name)) > 1:  # the scale letter of the name reached ultralytics (yolov8s-fine -> scale s)
        assert model.model.yaml["scale"] == model_name[len(name.split("-")[0])]


@pytest.mark.parametrize("model_name", REPRESENTATIVES)
def test_one_model_per_family_and_task_runs_at_a_small_rectangular_size(model_name):
    _check_forward(_built(model_name), model_name, (128, 192))


@pytest.mark.parametrize("model_name", FORWARD_640)
def test_one_model_per_family_and_task_runs_at_640(model_name):
    _check_forward(_built(model_name), model_name, (640, 640))


@pytest.mark.parametrize("name", FINE_MODELS)
def test_shipped_yaml_is_upstream_with_fusion_rows_at_every_top_down_stage(name):
    """Structurally (so any ultralytics in the declared range passes): upstream's rows, one for one, except that each
    top-down stage's Concat reads as FINEConcat with FINE's args (YOLOv6's learned upsampler: high as a third input),
    at exactly the upstream YAML's top-down fusion stages, coarsest first."""
    shipped = yaml.safe_load((cfg_dir() / "models" / name).read_text(encoding="utf-8"))
    upstream = yaml.safe_load(upstream_text(name))
    stages = FINE_MODELS[name].stages
    rows, up_rows = shipped["backbone"] + shipped["head"], upstream["backbone"] + upstream["head"]
    assert len(rows) == len(up_rows) and len(shipped["backbone"]) == len(upstream["backbone"])
    assert {i for i, r in enumerate(rows) if r != up_rows[i]} == {s.row for s in stages}
    for s in stages:
        args = [s.k] if s.head_dim == HEAD_DIM else [s.k, 2, s.head_dim]
        third = [s.high] if name.startswith("yolov6") else []
        assert up_rows[s.row][1:] == [1, "Concat", [1]]
        assert rows[s.row] == [up_rows[s.row][0] + third, 1, "FINEConcat", args]
    assert {**shipped, "backbone": upstream["backbone"], "head": upstream["head"]} == upstream  # nc, scales, ...
    assert top_down_stages(upstream) == [s[:3] for s in stages]
    assert [s.k for s in stages] == [1, 2]
    assert yaml.safe_load(render_fine_yaml(name, upstream_text(name))) == shipped  # the script writes the same model


@pytest.mark.parametrize("name", FINE_MODELS)
def test_fine_model_layers_are_upstreams_index_for_index(name):
    """Every layer of the FINE model is the upstream model's (``i``, ``f``, type) except the fusion rows, which keep
    ``i`` and their first two inputs (YOLOv6 adds high as a third); the save list differs by nothing."""
    fine_name = scales(name)[0]
    torch.manual_seed(0)
    base = build(baseline_name(fine_name)).model
    fine = build(fine_name).model
    rows = {s.row for s in FINE_MODELS[name].stages}
    assert len(base.model) == len(fine.model) and base.save == fine.save
    for b, f in zip(base.model, fine.model):
        if b.i in rows:
            assert (f.i, f.f[:2], type(b).__name__, f.type) == (b.i, b.f, "Concat", "fine_yolo.nn.fusion.FINEConcat")
        else:
            assert (f.i, f.f, f.type) == (b.i, b.f, b.type)


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


def test_fine_row_text():
    from fine_yolo.models import Stage

    assert fine_row(Stage(11, 6, 9, 1), [-1, 6]) == "[[-1, 6], 1, FINEConcat, [1]]"
    assert fine_row(Stage(11, 6, 9, 1, 24), [-1, 6]) == "[[-1, 6], 1, FINEConcat, [1, 2, 24]]"
    assert fine_row(Stage(12, 6, 10, 1), [-1, 6], nearest=False) == "[[-1, 6, 10], 1, FINEConcat, [1]]"


def test_top_down_stages_are_upsampled_concats_only():
    """yolov6 upsamples with ConvTranspose2d; the bottom-up (PAN) Concats read strided convs and are not stages."""
    v6 = yaml.safe_load(Path(upstream_path("yolov6-fine.yaml")).read_text())
    assert top_down_stages(v6) == [(12, 6, 10), (17, 4, 15)]  # (concat row, low, high) read off v6/yolov6.yaml
    rtdetr = yaml.safe_load(Path(upstream_path("rtdetr-l-fine.yaml")).read_text())
    assert top_down_stages(rtdetr) == [(15, 14, 12), (20, 19, 17)]  # [[-2, -1], 1, Concat]: -2 is the upsample


def upstream_path(name: str) -> str:
    from ultralytics.utils import ROOT

    return str(ROOT / "cfg" / "models" / FINE_MODELS[name].upstream)


def test_shipped_files_are_exactly_the_table():
    assert sorted(p.name for p in (cfg_dir() / "models").glob("*-fine.yaml")) == sorted(FINE_MODELS)


def test_models_doc_placement_tables_are_current():
    """docs/models.md prints the placement table and what is not shipped (`python scripts/make_fine_yamls.py table`)."""
    text = MODELS_DOC.read_text(encoding="utf-8")
    assert placement_table() in text, "docs/models.md placement table is stale: paste `make_fine_yamls.py table`"
    assert not_shipped_table() in text, "docs/models.md not-shipped table is stale"


def test_placement_table_lists_every_file_once():
    table = placement_table()
    rows = table.splitlines()[2:]
    assert len(FINE_MODELS) == 31 and len(rows) == 23  # yolov9{t,s,c}, yolov10{n..x}, rtdetr-resnet{50,101} share
    assert ("| YOLOv9 | detect | `yolov9m-fine.yaml` | `v9/yolov9m.yaml` | 11: 6 ← 9, k=1, d=24 "
            "| 14: 4 ← 12, k=2 |") in rows
    assert ("| RT-DETR | detect | `rtdetr-resnet{50,101}-fine.yaml` | `rt-detr/rtdetr-resnet{50,101}.yaml` "
            "| 10: 9 ← 7, k=1 | 15: 14 ← 12, k=2 |") in rows
    assert ("| YOLO26 | semantic | `yolo26{n,s,m,l,x}-sem-fine.yaml` | `26/yolo26-sem.yaml` | 12: 6 ← 10, k=1 "
            "| 15: 4 ← 13, k=2 |") in rows


@pytest.mark.parametrize("fine", REPRESENTATIVES)
def test_every_output_read_by_index_is_saved(fine):
    """RT-DETR's predict (like _predict_once) keeps y[i] only for i in save: every input read other than through the
    -1 chain must be in it, or a layer receives None."""
    net = _built(fine).model
    read = {m.i + x if x < 0 else x for m in net.model for x in ([m.f] if isinstance(m.f, int) else m.f) if x != -1}
    assert read <= set(net.save)


@pytest.mark.parametrize("fine", REPRESENTATIVES)
def test_baseline_checkpoint_transfers_every_tensor_and_predicts_identically(tmp_path, fine):
    from ultralytics.utils.torch_utils import intersect_dicts

    torch.manual_seed(0)
    base = baseline_name(fine)
    ckpt = tmp_path / base.replace(".yaml", "-baseline.pt")  # not yolov5n.pt: ultralytics would fetch yolov5nu.pt
    _live(build(base)).save(ckpt)  # O(1) activations; fp16 weights, the way ultralytics stores checkpoints
    baseline = build(str(ckpt))  # what pretrained=<baseline>.pt would give
    model = build(fine)
    b_sd, f_sd = baseline.model.float().state_dict(), model.model.state_dict()
    # every baseline tensor exists under the same name and shape; only FINE's tensors are new, inside the fusion rows
    assert all(k in f_sd and f_sd[k].shape == v.shape for k, v in b_sd.items())
    rows = {str(s.row) for s in FINE_MODELS[_file_of(fine)].stages}
    assert {tuple(k.split(".")[1:3]) for k in f_sd if k not in b_sd} == {(row, "fine") for row in rows}
    assert len(intersect_dicts(b_sd, f_sd)) == len(b_sd)  # ultralytics' name-and-shape matching takes them all
    model.load(str(ckpt))  # ultralytics' own transfer ("Transferred a/b items")
    f_sd = model.model.state_dict()
    assert all(torch.equal(v, f_sd[k]) for k, v in b_sd.items())
    x = torch.rand(1, 3, 128, 160)
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
    # the shipped file was read (its header names it), with the scale of the name the user typed
    shipped = yaml.safe_load((cfg_dir() / "models" / file).read_text(encoding="utf-8"))
    assert model.model.yaml["head"] == shipped["head"] and model.model.yaml.get("scale") == scale


def test_rtdetr_yaml_builds_through_rtdetr_not_yolo():
    """ultralytics' YOLO() cannot build an RT-DETR YAML (FINE or not); RTDETR() can, and the yolo command picks it
    from the name."""
    with pytest.raises(Exception, match="does not support '_new' mode"):
        YOLO("rtdetr-l-fine.yaml", verbose=False)
    assert type(build("rtdetr-l-fine.yaml")).__name__ == "RTDETR"


def _yaml(tmp_path, rows: list[str]) -> str:
    text = (cfg_dir() / "models" / "yolov8-fine.yaml").read_text(encoding="utf-8")
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
        (1, "[[-1, 4], 1, FINEConcat, [1]]", r"YAML row 11 .*\(layer 10, 16x16\) and low \(layer 4, 32x32\) differ"),
        (1, "[[-1, 6, 4], 1, FINEConcat, [1]]",
         r"YAML row 11 .*high input \(layer 4, 32x32 at a 256px probe\) must be r=2 times coarser than low input "
         r"\(layer 6, 16x16\)"),
        (1, "[[6, 9], 1, FINE, [1]]", r"YAML row 11 .*FINE is not a row of its own; write the top-down fusion row"),
    ],
)
def test_bad_fusion_rows_fail_at_build_naming_the_row(tmp_path, row, text, message):
    rows = list(V8_HEAD)
    rows[row] = text
    with pytest.raises(FINERowError, match=message):
        YOLO(_yaml(tmp_path, rows), verbose=False)
