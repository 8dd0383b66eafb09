"""The shipped FINE YAMLs inside ultralytics: build, channels, indices, checkpoint transfer, bad rows."""

from __future__ import annotations

import os

import pytest
import torch
import yaml
from ultralytics import YOLO

from fine_yolo.assets import cfg_dir
from fine_yolo.glue.fine_rows import FINERowError
from fine_yolo.models import FINE_MODELS, baseline_name, render_fine_yaml, upstream_text
from fine_yolo.nn import FINE

SCALED = [f"yolov8{s}-fine.yaml" for s in "nsmlx"] + [f"yolov10{s}-fine.yaml" for s in "nsmblx"]
SCALED += [f"yolo12{s}-fine.yaml" for s in "nsmlx"]


def _fine_modules(model) -> list[FINE]:
    return [m for m in model.model.model if isinstance(m, FINE)]


def _layer_shapes(model, x: torch.Tensor) -> list[torch.Size]:
    """Output shape of every layer, in execution order (mirrors ultralytics' _predict_once)."""
    y, shapes = [], []
    for m in model.model.model:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        x = m(x)
        y.append(x)
        shapes.append(x.shape if isinstance(x, torch.Tensor) else None)
    return shapes


@pytest.mark.parametrize("name", SCALED)
def test_every_model_builds_and_runs_at_640_and_rectangular(name):
    model = YOLO(name, verbose=False)
    model.model.eval()
    fines = _fine_modules(model)
    assert len(fines) == 2
    with torch.no_grad():
        for hw in ((640, 640), (320, 480)):
            x = torch.rand(1, 3, *hw)
            shapes = _layer_shapes(model, x)
            for fm in fines:
                low_pos, high_pos = fm.f
                # channels inferred from the layers FINE reads, at this width scale
                assert (fm.c_low, fm.c_high) == (shapes[low_pos][1], shapes[high_pos][1])
                assert shapes[fm.i] == shapes[low_pos]  # output keeps low's shape
                assert shapes[low_pos][2] == 2 * shapes[high_pos][2]
            assert shapes[-1] is None or shapes[-1][0] == 1  # the head ran
    # paper §5.3.2: k=1 at P4<-P5, k=2 at P3<-P4; head dim 16
    assert [(fm.k, fm.r, fm.head_dim) for fm in fines] == [(1, 2, 16), (2, 2, 16)]


@pytest.mark.parametrize("name", FINE_MODELS)
def test_shipped_yaml_is_upstream_plus_fine_rows(name):
    """Structurally (so any ultralytics in the declared range passes): upstream rows, plus two FINE rows."""
    shipped = yaml.safe_load((cfg_dir() / "models" / name).read_text(encoding="utf-8"))
    upstream = yaml.safe_load(upstream_text(name))
    rendered = yaml.safe_load(render_fine_yaml(name, upstream_text(name)))
    fine_rows = [r for r in shipped["head"] if r[2] == "FINE"]
    assert [r[:2] + r[3:] for r in fine_rows] == [[[low, high], 1, [k]] for low, high, k in FINE_MODELS[name][1]]
    assert {**shipped, "head": [r for r in shipped["head"] if r[2] != "FINE"]} == upstream
    assert rendered == shipped  # scripts/make_fine_yamls.py would write the same model


@pytest.mark.parametrize(
    ("fine", "base"),
    [(f"{b}-fine.yaml", f"{b}.yaml") for b in ("yolov8n", "yolov10n", "yolo12n")],
)
def test_baseline_indices_and_state_dict_names_are_kept(fine, base):
    f_sd = YOLO(fine, verbose=False).model.state_dict()
    b_sd = YOLO(base, verbose=False).model.state_dict()
    # every baseline tensor exists under the same name and shape; only FINE's tensors are new
    assert all(k in f_sd and f_sd[k].shape == v.shape for k, v in b_sd.items())
    new = {k.split(".")[1] for k in f_sd if k not in b_sd}
    assert new == {"fine0", "fine1"}


@pytest.mark.parametrize("base", ["yolov8n.yaml", "yolov10n.yaml", "yolo12n.yaml"])
def test_baseline_checkpoint_transfers_and_predicts_identically(tmp_path, base, capsys):
    torch.manual_seed(0)
    baseline = YOLO(base, verbose=False)
    ckpt = tmp_path / base.replace(".yaml", ".pt")
    baseline.save(ckpt)  # fp16 weights, the way ultralytics stores checkpoints
    baseline = YOLO(ckpt)  # what pretrained=yolov8n.pt would give
    fine = YOLO(baseline_name_to_fine(base), verbose=False)
    fine.load(str(ckpt))  # ultralytics' own name-and-shape transfer
    n_base = len(baseline.model.state_dict())
    n_fine = len(fine.model.state_dict())
    assert n_fine - n_base == sum(len(m.state_dict()) for m in _fine_modules(fine))
    x = torch.rand(2, 3, 256, 320)
    b_net, f_net = baseline.model.float().eval(), fine.model.float().eval()
    with torch.no_grad():
        yb, yf = b_net(x), f_net(x)
    yb, yf = (yb[0], yf[0]) if isinstance(yb, (list, tuple)) else (yb, yf)
    if isinstance(yb, dict):
        yb, yf = yb["one2one"][0], yf["one2one"][0]
    assert torch.equal(yb, yf)


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


def baseline_name_to_fine(base: str) -> str:
    fine = base.replace(".yaml", "-fine.yaml")
    assert baseline_name(fine) == base
    return fine


def test_bare_names_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, base in (("yolov8s-fine.yaml", "yolov8s.yaml"), ("yolov12s-fine.yaml", "yolo12s.yaml"),
                       ("yolo12s-fine.yaml", "yolo12s.yaml"), ("yolov10b-fine.yaml", "yolov10b.yaml")):
        model = YOLO(name, verbose=False)
        fine = _fine_modules(model)
        assert len(fine) == 2
        # the right scale: the baseline layers hold exactly the baseline's parameters
        n_fine = sum(p.numel() for m in fine for p in m.parameters())
        n_base = sum(p.numel() for p in YOLO(base, verbose=False).model.parameters())
        assert sum(p.numel() for p in model.model.parameters()) - n_fine == n_base, name


def _yaml(tmp_path, rows: list[str]) -> str:
    text = (cfg_dir() / "models" / "yolov8-fine.yaml").read_text(encoding="utf-8")
    head = text[text.index("head:") :]
    new_head = "head:\n" + "".join(f"  - {r}\n" for r in rows)
    path = tmp_path / "yolov8n-bad.yaml"
    path.write_text(text.replace(head, new_head), encoding="utf-8")
    return str(path)


V8_HEAD = [
    "[-1, 1, nn.Upsample, [None, 2, 'nearest']]",
    "[[6, 9], 1, FINE, [1]]",
    "[[-1, 6], 1, Concat, [1]]",
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
    ("fine_row", "message"),
    [
        ("[-1, 1, FINE, [1]]", r"YAML row 11 .*exactly two inputs \[low, high\]"),
        ("[[6, 9, 4], 1, FINE, [1]]", r"YAML row 11 .*exactly two inputs"),
        ("[[4, 9], 1, FINE, [1]]", r"YAML row 11 .*must be r=2 times coarser than low input \(layer 4, 32x32\)"),
        ("[[6, 9], 1, FINE, [0]]", r"YAML row 11 .*positive integers"),
        ("[[6, 9], 1, FINE, [1, 2, 16, 1]]", r"YAML row 11 .*\[k, r, head_dim\]"),
        ("[[6, 9], 1, FINE, [1, 2, 48]]", r"YAML row 11 .*not divisible by head_dim=48"),
        ("[[6, 9], 2, FINE, [1]]", r"YAML row 11 .*cannot be repeated"),
        ("[[6, 30], 1, FINE, [1]]", r"YAML row 11 .*input 30 does not name an earlier layer"),
        ("[[6, 9], 1, FINE, [16]]", r"YAML row 11 .*at least one token"),
        ("[[5, 9], 1, FINE, [1]]", r"YAML row 11 .*no row after it reads layer 5"),
    ],
)
def test_bad_fine_rows_fail_at_build_naming_the_row(tmp_path, fine_row, message):
    rows = list(V8_HEAD)
    rows[1] = fine_row
    with pytest.raises(FINERowError, match=message):
        YOLO(_yaml(tmp_path, rows), verbose=False)


def test_fine_row_in_last_position_is_rejected(tmp_path):
    from ultralytics.nn.tasks import DetectionModel  # YOLO() would already fail guessing the task from the last row

    rows = [*V8_HEAD, "[[6, 9], 1, FINE, [1]]"]
    with pytest.raises(FINERowError, match=r"YAML row 24 .*not last"):
        DetectionModel(_yaml(tmp_path, rows), verbose=False)


def test_font_lookup_offline_never_downloads_and_online_is_ultralytics(monkeypatch, tmp_path):
    """Offline (this test session: YOLO_OFFLINE=1), a missing font is matplotlib's DejaVu Sans and nothing touches the
    network; online, ultralytics' own check_font answers (Arial Unicode for CJK labels), and only when its download
    returns nothing does the stand-in answer."""
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.checks as checks
    import ultralytics.utils.downloads as downloads

    from fine_yolo.glue import register
    from fine_yolo.glue.font import wrap_check_font

    register()

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access: {args}")

    monkeypatch.setattr(downloads, "is_url", no_network)
    monkeypatch.setattr(downloads, "safe_download", no_network)
    for check_font in (checks.check_font, data_utils.check_font):  # the module that imported it by name too
        path = check_font("NoSuchFont-fine-yolo.ttf")
        assert path.endswith("DejaVuSans.ttf") and os.path.exists(path)
    # Offline, a font in the config dir is found where ultralytics would find it, without calling the original.
    (tmp_path / "Local.ttf").write_bytes(b"")
    offline = wrap_check_font(no_network, tmp_path, online=lambda: False)
    assert offline("Local.ttf") == str(tmp_path / "Local.ttf")
    # Online: the original decides, even for a font that is not here (it would download Arial.Unicode.ttf).
    calls = []
    online = wrap_check_font(lambda font: calls.append(font) or f"downloaded:{font}", tmp_path, online=lambda: True)
    assert online("Arial.Unicode.ttf") == "downloaded:Arial.Unicode.ttf" and calls == ["Arial.Unicode.ttf"]
    failed = wrap_check_font(lambda font: None, tmp_path, online=lambda: True)  # the download failed
    assert failed("Arial.Unicode.ttf").endswith("DejaVuSans.ttf")
