"""The ablation variants of the FINE block (paper Tables 3, 4, 6 and Fig. 5) against per-pixel, per-head references
written here with plain loops; identity at init; shapes; errors; YAML rows; ONNX export with ONNX Runtime parity and
the offline TensorRT check."""

from __future__ import annotations

import math

import onnx
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    FINE_MARGIN,
    assert_block_parity,
    assert_parity,
    detection_groups,
    fine_effect,
    float64_twin,
    live_model,
    ort_run,
    reference_fine,
)

from fine_yolo.glue.fine_rows import FINERowError
from fine_yolo.nn import FINE
from fine_yolo.nn.attention import AREAS, WINDOW

VARIANTS = [("vanilla", "avg"), ("window", "avg"), ("area", "avg"), ("linear", "avg"), ("aats", "max"),
            ("aats", "dwconv")]


def _random(c_low=32, c_high=64, k=1, r=2, head_dim=16, attention="aats", pool="avg") -> FINE:
    torch.manual_seed(0)
    m = FINE(c_low, c_high, k, r, head_dim, attention=attention, pool=pool, zero_init=False).double()
    with torch.no_grad():  # non-trivial weights and biases everywhere (the pools' too), so that each is tested
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m


def _qkv(m: FINE, low, high):
    """Eq. 10 then eq. 5 on the full maps, token-major: q (B, N, C), k, v (B, N_h, C) and the high map's size."""
    c = m.c_low
    f_high = F.conv2d(high, m.proj_high.weight) if m.c_high != m.c_low else high
    w = m.kv.weight[:, :, 0, 0]
    q = low.flatten(2).transpose(1, 2) @ m.q.weight[:, :, 0, 0].T + m.q.bias
    kv = f_high.flatten(2).transpose(1, 2) @ w.T
    return q, kv[..., :c], kv[..., c:], f_high.shape[-2:]


def _finish(m: FINE, heads_out: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Eq. 7 (W_O on the concatenated heads, (B, N, C)), eq. 8 with factor 1, eq. 9."""
    o = heads_out @ m.out.weight[:, :, 0, 0].T + m.out.bias
    return low * o.transpose(1, 2).reshape(low.shape) + low


def reference_local(m: FINE, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Window / area / vanilla attention pixel by pixel: each low pixel (y, x) sits over high pixel (y//s, x//s); it
    attends, per head, to the high pixels of the same 7x7 window (window), the same strip of ceil(H_h/4) rows (area)
    or all of them (vanilla)."""
    _, c, h, w = low.shape
    d = m.head_dim
    q, k, v, (hh, wh) = _qkv(m, low, high)
    s = h // hh
    strip = math.ceil(hh / AREAS)
    ii, jj = torch.meshgrid(torch.arange(hh), torch.arange(wh), indexing="ij")
    ii, jj = ii.flatten(), jj.flatten()
    out = torch.zeros_like(q)
    for y in range(h):
        for x in range(w):
            i, j = y // s, x // s
            if m.attention == "window":
                keys = (ii // WINDOW == i // WINDOW) & (jj // WINDOW == j // WINDOW)
            elif m.attention == "area":
                keys = ii // strip == i // strip
            else:
                keys = torch.ones_like(ii, dtype=torch.bool)
            n = y * w + x
            for head in range(c // d):
                sl = slice(head * d, (head + 1) * d)
                scores = q[:, n, None, sl] @ k[:, keys, sl].transpose(1, 2) / math.sqrt(d)  # (B, 1, n_keys)
                out[:, n, sl] = (torch.softmax(scores, dim=-1) @ v[:, keys, sl])[:, 0]
    return _finish(m, out, low)


def reference_linear(m: FINE, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Linear attention written as the explicit kernel sum (Katharopoulos et al. eq. 4), per head, per query:
    out_i = sum_j sim(q_i, k_j) v_j / sum_j sim(q_i, k_j), sim(q, k) = phi(q).phi(k), phi = elu + 1."""
    d = m.head_dim
    q, k, v, _ = _qkv(m, low, high)
    phi = lambda t: F.elu(t) + 1  # noqa: E731
    heads = []
    for head in range(m.c_low // d):
        sl = slice(head * d, (head + 1) * d)
        sim = phi(q[..., sl]) @ phi(k[..., sl]).transpose(1, 2)  # (B, N, N_h): the quadratic form
        heads.append((sim @ v[..., sl]) / (sim.sum(-1, keepdim=True) + 1e-6))
    return _finish(m, torch.cat(heads, -1), low)


def reference_pool(m: FINE, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """AATS with max / depthwise-conv pooling, the paper's order (eq. 10 projection, then eq. 4 Down()), then eq. 5-9
    per head."""
    c, d, rk = m.c_low, m.head_dim, m.r * m.k
    f_high = F.conv2d(high, m.proj_high.weight) if m.c_high != m.c_low else high

    def down(x, f, module):
        if f == 1:
            return x
        if m.pool == "max":
            return F.max_pool2d(x, f)
        return F.conv2d(x, module.weight, stride=f, groups=c)

    low_t, high_t = down(low, rk, m.pool_low), down(f_high, m.k, m.pool_high)
    b, _, h, w = low_t.shape
    x_low, x_high = low_t.flatten(2).transpose(1, 2), high_t.flatten(2).transpose(1, 2)
    q = x_low @ m.q.weight[:, :, 0, 0].T + m.q.bias
    kv = x_high @ m.kv.weight[:, :, 0, 0].T
    heads = []
    for i in range(c // d):
        sl, sv = slice(i * d, (i + 1) * d), slice(c + i * d, c + (i + 1) * d)
        heads.append(torch.softmax(q[..., sl] @ kv[..., sl].transpose(1, 2) / math.sqrt(d), -1) @ kv[..., sv])
    o = torch.cat(heads, -1) @ m.out.weight[:, :, 0, 0].T + m.out.bias
    mod = o.transpose(1, 2).reshape(b, c, h, w).repeat_interleave(rk, 2).repeat_interleave(rk, 3)
    mod = F.pad(mod, (0, low.shape[3] - mod.shape[3], 0, low.shape[2] - mod.shape[2]))
    return low * mod + low


def _reference(m: FINE, low, high):
    if m.attention == "linear":
        return reference_linear(m, low, high)
    if m.attention == "aats":
        return reference_pool(m, low, high)
    return reference_local(m, low, high)


@pytest.mark.parametrize(("attention", "pool"), VARIANTS)
@pytest.mark.parametrize(("hw_low", "hw_high", "c_high"), [
    ((18, 20), (9, 10), 64),  # 7 divides neither side: two padded windows per axis; 4 areas of 3 rows, last padded
    ((16, 8), (8, 4), 32),  # equal channels (no eq. 10); 4 areas of 2 rows; one (padded) window
])
def test_variant_matches_its_per_head_reference(attention, pool, hw_low, hw_high, c_high):
    k = 2 if attention == "aats" else 1  # k=2: the high map is pooled too (after the projection, for max/dwconv)
    m = _random(c_high=c_high, k=k, attention=attention, pool=pool)
    torch.manual_seed(1)
    low, high = torch.randn(1, 32, *hw_low).double(), torch.randn(1, c_high, *hw_high).double()
    out = m(low, high)
    assert out.shape == low.shape
    torch.testing.assert_close(out, _reference(m, low, high), rtol=0, atol=1e-10)
    assert m.token_stride == (2 * k if attention == "aats" else 1)
    assert m._gain(low, high).shape == (1, 32, hw_low[0] // m.token_stride, hw_low[1] // m.token_stride)


def test_the_local_references_are_not_all_the_same_function():
    """Window, area and vanilla must differ where their key sets differ (else the reference test proves little)."""
    torch.manual_seed(1)
    low, high = torch.randn(1, 32, 18, 20).double(), torch.randn(1, 64, 9, 10).double()
    outs = {a: _random(attention=a)(low, high) for a in ("vanilla", "window", "area")}
    for a, b in (("vanilla", "window"), ("vanilla", "area"), ("window", "area")):
        assert (outs[a] - outs[b]).abs().max() > 1e-3, (a, b)


def test_vanilla_is_aats_without_pooling_and_dwconv_starts_as_the_average():
    torch.manual_seed(1)
    low, high = torch.randn(2, 32, 12, 16).double(), torch.randn(2, 64, 6, 8).double()
    vanilla, aats11 = _random(attention="vanilla"), _random(k=1, r=1)
    aats11.load_state_dict(vanilla.state_dict())
    torch.testing.assert_close(vanilla(low, high), aats11(low, high), rtol=0, atol=1e-12)
    torch.testing.assert_close(vanilla(low, high), reference_fine(aats11, low, high), rtol=0, atol=1e-10)
    torch.manual_seed(0)
    avg = FINE(32, 64, k=2, zero_init=False).double()
    dw = FINE(32, 64, k=2, pool="dwconv", zero_init=False).double()
    dw.load_state_dict(avg.state_dict(), strict=False)  # every weight but the pools'
    assert {n for n, _ in dw.named_parameters()} - {n for n, _ in avg.named_parameters()} == \
        {"pool_low.weight", "pool_high.weight"}
    torch.testing.assert_close(dw(low, high), avg(low, high), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("c_low", "k", "expected"), [(256, 1, 256 * 4), (128, 2, 128 * (16 + 4)), (32, 1, 32 * 4)])
def test_dwconv_pooling_parameters_by_hand(c_low, k, expected):
    """Depthwise kernel = stride: C (rk)^2 on low, C k^2 on high when k > 1 (paper Table 6: 256 x (4 + 16 + 4) =
    6.14K over its k=1 and k=2 stages)."""
    base = sum(p.numel() for p in FINE(c_low, 2 * c_low, k).parameters())
    dw = sum(p.numel() for p in FINE(c_low, 2 * c_low, k, pool="dwconv").parameters())
    assert dw - base == expected
    assert sum(p.numel() for p in FINE(c_low, 2 * c_low, k, pool="max").parameters()) == base
    for attention in ("vanilla", "window", "area", "linear"):  # same projections: same parameters (Table 3)
        assert sum(p.numel() for p in FINE(c_low, 2 * c_low, attention=attention).parameters()) == \
            sum(p.numel() for p in FINE(c_low, 2 * c_low).parameters())


@pytest.mark.parametrize(("attention", "pool"), VARIANTS)
def test_identity_at_init_and_every_parameter_learns(attention, pool):
    torch.manual_seed(0)
    k = 2 if attention == "aats" else 1
    m = FINE(32, 64, k=k, attention=attention, pool=pool)
    low, high = torch.randn(2, 32, 16, 16), torch.randn(2, 64, 8, 8)
    assert torch.equal(m(low, high), low)  # W_O = 0, b_O = 0: the gain is exactly 1
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    target = torch.randn_like(low)
    for _ in range(2):
        opt.zero_grad()
        F.mse_loss(m(low, high), target).backward()
        opt.step()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not torch.equal(m(low, high), low)


@pytest.mark.parametrize("r", [1, 2, 4])
@pytest.mark.parametrize("k", [1, 2])
def test_every_swept_r_and_k_runs_and_matches_the_reference(r, k):
    """Fig. 5: r in {1, 2, 4} x k in {1, 2}, on maps 2x apart (adjacent levels) as in the paper's sweep."""
    m = _random(k=k, r=r)
    torch.manual_seed(1)
    low, high = torch.randn(1, 32, 16, 24).double(), torch.randn(1, 64, 8, 12).double()
    torch.testing.assert_close(m(low, high), reference_fine(m, low, high), rtol=0, atol=1e-10)
    assert m._gain(low, high).shape[-2:] == (16 // (r * k), 24 // (r * k))


@pytest.mark.parametrize("head_dim", [2, 4, 8, 16, 32, 64, 128, 256])
def test_every_swept_head_dim_runs_and_matches_the_reference(head_dim):
    """Table 4: C = 256, d = 256 / h for h in {1, 2, 4, ..., 128}."""
    torch.manual_seed(0)
    m = FINE(256, 256, head_dim=head_dim, zero_init=False).double()
    torch.nn.init.normal_(m.out.weight, std=0.05)
    low, high = torch.randn(1, 256, 8, 8).double(), torch.randn(1, 256, 4, 4).double()
    assert m.heads == 256 // head_dim
    torch.testing.assert_close(m(low, high), reference_fine(m, low, high), rtol=0, atol=1e-10)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"attention": "swin"}, r"attention='swin' is not one of aats, vanilla, window, area, linear"),
    ({"pool": "mean"}, r"pool='mean' is not one of avg, max, dwconv"),
    ({"attention": "window", "k": 2}, r"attention='window' samples no tokens .* got k=2, r=2, pool='avg'"),
    ({"attention": "vanilla", "pool": "max"}, r"k, r and pool must keep their defaults"),
    ({"attention": "linear", "r": 4}, r"samples no tokens"),
])
def test_bad_variant_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FINE(32, 64, **kwargs)


@pytest.mark.parametrize("attention", ["window", "area"])
def test_window_and_area_need_maps_an_integer_factor_apart(attention):
    m = FINE(32, 64, attention=attention)
    with pytest.raises(ValueError, match=r"integer multiple of the high map on both axes; got low 17x16, high 8x8"):
        m(torch.randn(1, 32, 17, 16), torch.randn(1, 64, 8, 8))


# --- YAML rows ------------------------------------------------------------------------------------------------------

def _v8n_yaml(tmp_path, p4_args: str, p3_args: str, name: str = "yolov8n-variant.yaml") -> str:
    """yolov8n-fine.yaml with the two fusion rows' FINE args replaced."""
    text = _shipped_v8_text()
    text = text.replace("[[-1, 6], 1, FINEConcat, []]", f"[[-1, 6], 1, FINEConcat, {p4_args}]")
    text = text.replace("[[-1, 4], 1, FINEConcat, []]", f"[[-1, 4], 1, FINEConcat, {p3_args}]")
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _shipped_v8_text() -> str:
    from ultralytics.utils.checks import check_yaml

    from fine_yolo.glue import register

    register()
    return open(check_yaml("yolov8-fine.yaml")).read()


def _fines(model) -> list[FINE]:
    return [m for m in model.model.modules() if isinstance(m, FINE)]


@pytest.mark.parametrize(("p4", "p3", "expected"), [
    ("[1, 2, 16, window]", "[1, 2, 16, area]", [("window", "avg", 1, 2), ("area", "avg", 1, 2)]),
    ("[1, {attention: linear}]", "[{attention: vanilla}]", [("linear", "avg", 1, 2), ("vanilla", "avg", 1, 2)]),
    ("[1, 2, 16, aats, dwconv]", "[2, {pool: max}]", [("aats", "dwconv", 1, 2), ("aats", "max", 2, 2)]),
    ("[1, 4]", "[2, 1]", [("aats", "avg", 1, 4), ("aats", "avg", 2, 1)]),  # Fig. 5: r != the stride ratio 2
])
def test_yaml_rows_select_variants_and_the_model_runs(tmp_path, p4, p3, expected):
    from ultralytics import YOLO

    model = YOLO(_v8n_yaml(tmp_path, p4, p3), verbose=False)
    fines = _fines(model)
    assert [(m.attention, m.pool, m.k, m.r) for m in fines] == expected
    net = model.model.eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 128, 128))
    assert out[0].shape == (1, 84, 336)


@pytest.mark.parametrize(("p4", "message"), [
    ("[1, 2, 16, windows]", r"YAML row 11 .*attention='windows' is not one of aats, vanilla, window, area, linear"),
    ("[1, 2, 16, aats, mean]", r"YAML row 11 .*pool='mean' is not one of avg, max, dwconv"),
    ("[1, {attn: window}]", r"YAML row 11 .*FINE has no argument 'attn'"),
    ("[1, 2, {r: 4}]", r"YAML row 11 .*'r' is given twice"),
    ("[2, 2, 16, window]", r"YAML row 11 .*attention='window' samples no tokens"),
    ("[1, 2, 16, window, avg, 3]", r"YAML row 11 .*FINE args are \[k, r, head_dim\] followed by attention and pool"),
])
def test_bad_variant_rows_fail_at_build_naming_the_row(tmp_path, p4, message):
    from ultralytics import YOLO

    with pytest.raises(FINERowError, match=message):
        YOLO(_v8n_yaml(tmp_path, p4, "[2]"), verbose=False)


# --- ONNX -------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("attention", "pool"), VARIANTS)
def test_block_variant_exports_to_onnx_with_onnx_runtime_parity(tmp_path, attention, pool):
    torch.manual_seed(0)
    k = 2 if attention == "aats" else 1
    m = FINE(32, 64, k=k, attention=attention, pool=pool, zero_init=False).eval()
    low, high = torch.randn(1, 32, 18, 20), torch.randn(1, 64, 9, 10)
    path = tmp_path / f"{attention}_{pool}.onnx"
    torch.onnx.export(m, (low, high), str(path), input_names=["low", "high"], output_names=["out"],
                      opset_version=18, dynamo=False)
    assert_block_parity(ort_run(path, low, high)[0], m, low, high)  # tolerance derived as in tests/helpers.py


@pytest.mark.parametrize(("p4", "p3"), [
    ("[1, 2, 16, window]", "[1, 2, 16, area]"),
    ("[1, 2, 16, linear]", "[1, 2, 16, vanilla]"),
    ("[1, 2, 16, aats, dwconv]", "[2, 2, 16, aats, max]"),
])
def test_variant_models_export_through_ultralytics_and_pass_the_tensorrt_check(tmp_path, monkeypatch, p4, p3):
    """ultralytics' exporter (simplified, static 128 px) on yolov8n with the variants at both stages: ONNX Runtime
    parity with PyTorch (tolerances derived as in tests/helpers.py, on a live model: FINE moves the boxes far beyond
    them) and the offline TensorRT 10.3 check."""
    from fine_yolo.export.trt_check import check_onnx

    model = live_model(_v8n_yaml(tmp_path, p4, p3), 128, head=True)  # O(1) activations, W_O != 0 as after training
    monkeypatch.chdir(tmp_path)  # ultralytics writes a YAML model's export into the working directory
    onnx_path = model.export(format="onnx", imgsz=128, simplify=True, device="cpu")
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    net = model.model.float().eval()
    with torch.no_grad():
        ref, ref64 = net(x)[0].numpy(), float64_twin(net)(x.double())[0].numpy()
    effect = fine_effect(net, x).numpy()
    out = ort_run(onnx_path, x)[0]
    assert out.shape == ref.shape == (1, 84, 336)
    for group, rows in detection_groups(84, 80).items():
        tol = assert_parity(out[:, rows], ref[:, rows], ref64[:, rows], group)
        assert effect[:, rows].max() > FINE_MARGIN * tol, (group, effect[:, rows].max(), tol)
    report = check_onnx(onnx_path)
    assert report.ok, report.summary()
    # every FINE softmax is there (linear attention has none); those in MatMul -> Softmax -> MatMul form (a window's
    # padding mask adds an Add before the Softmax) have the form TensorRT's fused-MHA pass matches
    fine_softmax = [n.name for n in onnx.load(onnx_path).graph.node if n.op_type == "Softmax" and "fine" in n.name]
    assert len(fine_softmax) == sum("linear" not in args for args in (p4, p3)), report.summary()
    chains = [a for a in report.attention if "fine" in a.softmax.lower()]
    assert chains and all(a.fused_form for a in chains), report.summary()
