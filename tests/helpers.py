"""Helpers shared by several test modules (``from helpers import ...``): a test module never imports another one.

Parity tolerances (ONNX Runtime, OpenVINO against PyTorch) are derived, not guessed. An exported graph and PyTorch
are two float32 evaluations of the same function that differ only in summation order and kernels (oneDNN/ATen with
AVX2, AVX-512 or AMX; MLAS in ONNX Runtime); the standard rounding bound (gamma_n ~ n*u per length-n dot product,
u = float32 eps) is the same for both. Their distance from the exact value is therefore measured, not assumed: the
model is run once more in float64 (``float64_twin``), and per output group (boxes, class scores, task extras)

    floor = max( max|PyTorch float32 - float64|,  u * max(1, max|float64|) )
    check:  max|export - float64| <= SPREAD * floor.

The floor carries what a fixed ``atol`` would have to guess: the output's scale, the decoding it went through (boxes
and keypoints are multiplied by strides up to 32, so is their error) and the network's conditioning.
``u * max(1, scale)`` is one float32 ulp of the group's range (1 for sigmoid scores). ``SPREAD`` allows for one
float32 implementation's worst element being a few times worse than another's; each test asserts that FINE moves
the checked output by ``FINE_MARGIN`` times the tolerance, so an export that loses FINE fails. The measurements
behind both numbers (kernel families forced down, thread counts, planted bugs) are in docs/parity_tolerances.md.

Run the parity tests with ``FINE_YOLO_TEST_ORT_THREADS=1`` (ONNX Runtime's intra-op threads; 0 or unset: its
default), ``OMP_NUM_THREADS=1`` (torch) or ``ATEN_CPU_CAPABILITY=avx2|default`` with ``ONEDNN_MAX_CPU_ISA=AVX2`` to
check another kernel family.
"""

from __future__ import annotations

import ast
import copy
import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from conftest import output_tensors

from fine_yolo.nn import FINE

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # u: 2**-23
SPREAD = 8.0  # an export's error may be this many times PyTorch's own float32 error (measured: up to 2.6)
FINE_MARGIN = 10.0  # FINE's effect on a checked output must exceed its tolerance this many times


# --- the package's own imports (tests/test_layers.py, tests/test_glue.py) ------------------------------------------


def modules(root: Path, package: str = "fine_yolo") -> dict[str, Path]:
    """Dotted name -> file of every module of ``package`` under ``root``."""
    return {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
            for p in sorted((root / package).rglob("*.py"))}


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Package modules that module ``name`` imports: ``from a import b`` is module ``a.b`` when that exists, else
    ``a``; ``import a.b`` is ``a.b``; relative imports are resolved."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in found if m in known and m != name}


# --- the FINE block, literally ---------------------------------------------------------------------------------------


def conv_bias(conv: torch.nn.Conv2d) -> torch.Tensor:
    """The convolution's bias, zeros where it has none (K/V and eq. 10; test_block_checkpoints attaches one)."""
    return conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)


def reference_fine(m: FINE, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Eq. 4-10 written out literally, per head, in the paper's order, with ``m``'s weights (and biases, if any)."""
    c, d, rk = m.c_low, m.head_dim, m.r * m.k
    # eq. 10: project the high-level map first (the paper's order), then eq. 4: AATS average pooling
    f_high = F.conv2d(high, m.proj_high.weight, conv_bias(m.proj_high)) if m.c_high != m.c_low else high
    f_high_hat = F.avg_pool2d(f_high, m.k) if m.k > 1 else f_high
    f_low_hat = F.avg_pool2d(low, rk)
    b, _, h, w = f_low_hat.shape
    x_low = f_low_hat.flatten(2).transpose(1, 2)  # (B, N_low, C) = Flatten(F^_low)
    x_high = f_high_hat.flatten(2).transpose(1, 2)  # (B, N_high, C)
    w_q, b_q = m.q.weight[:, :, 0, 0], conv_bias(m.q)
    w_k, w_v = m.kv.weight[:c, :, 0, 0], m.kv.weight[c:, :, 0, 0]
    b_k, b_v = conv_bias(m.kv)[:c], conv_bias(m.kv)[c:]
    w_o, b_o = m.out.weight[:, :, 0, 0], conv_bias(m.out)
    q, k, v = x_low @ w_q.T + b_q, x_high @ w_k.T + b_k, x_high @ w_v.T + b_v  # eq. 5
    heads = []
    for i in range(c // d):  # eq. 6, head by head
        s = slice(i * d, (i + 1) * d)
        attn = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(d), dim=-1)
        heads.append(attn @ v[..., s])
    o = torch.cat(heads, dim=-1) @ w_o.T + b_o  # eq. 7: concat, W_O
    m_hat = o.transpose(1, 2).reshape(b, c, h, w)  # reshape to (H/rk, W/rk)
    mod = m_hat.repeat_interleave(rk, 2).repeat_interleave(rk, 3)  # eq. 8: nearest upsampling by rk
    # trailing rows/cols outside every token get M = 0 (the documented choice for sizes rk does not divide)
    mod = F.pad(mod, (0, low.shape[3] - mod.shape[3], 0, low.shape[2] - mod.shape[2]))
    return low * mod + low  # eq. 9


def random_fine(c_low: int = 32, c_high: int = 64, k: int = 1, **kw) -> FINE:
    """A float64 FINE with every parameter (biases too) perturbed by N(0, 0.1), so that all of them are tested."""
    torch.manual_seed(0)
    m = FINE(c_low, c_high, k=k, zero_init=False, **kw).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m


# --- models whose FINE blocks matter ---------------------------------------------------------------------------------


def live_model(name: str, imgsz: int, std: float = 0.05, head: bool = False):
    """``name`` (a FINE YAML or checkpoint) built with O(1) activations and FINE blocks that visibly modulate.

    At PyTorch's initialisation with BatchNorm's default running statistics, activations shrink ~3x per layer
    (yolov8n's FINE inputs are ~1e-5 and ~1e-8 at 160 px), so FINE, however its weights are set, changes the output
    by ~1e-11 and any parity check of it passes trivially. Re-estimating every BatchNorm's statistics on one batch
    (what training would do) restores unit-scale activations; W_O ~ N(0, std) then makes FINE move boxes by pixels.
    With ``head`` the head's BatchNorms are re-estimated too (one training-mode forward of the whole model: FINE
    moves yolov8n's boxes by ~35 px at 160 px instead of ~1.4); without, every layer but the head (RT-DETR's head
    cannot run its training path without targets).
    """
    from fine_yolo.models import build

    torch.manual_seed(0)
    model = build(name)
    net = model.model.float()
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics outright
    net.train()
    y, x = [], torch.rand(4, 3, imgsz, imgsz)
    with torch.no_grad():
        if head:
            net(x)
        for m in [] if head else net.model[:-1]:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x)
    net.eval()
    for m in net.modules():
        if isinstance(m, FINE):
            torch.nn.init.normal_(m.out.weight, std=std)
    return model


def without_fine(net: torch.nn.Module, fn):
    """``fn()`` evaluated with every FINE's W_O zeroed (each block is then the identity), weights restored after."""
    fines = [m for m in net.modules() if isinstance(m, FINE)]
    saved = [m.out.weight.detach().clone() for m in fines]
    try:
        with torch.no_grad():
            for m in fines:
                m.out.weight.zero_()
            return fn()
    finally:
        with torch.no_grad():
            for m, w in zip(fines, saved):
                m.out.weight.copy_(w)


def fine_effect(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """How much FINE moves the first output: |out - out with every W_O zeroed| (the identity block)."""
    with torch.no_grad():
        out = output_tensors(net(x))[0]
    return (out - without_fine(net, lambda: output_tensors(net(x))[0])).abs()


# --- derived parity tolerances ---------------------------------------------------------------------------------------


def float64_twin(net: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of ``net`` (same weights) whose heads rebuild their cached anchors in float64."""
    twin = copy.deepcopy(net).double()
    for m in twin.modules():
        for cache in ("shape", "shapes"):  # Detect's / RTDETRDecoder's anchor-cache keys
            if hasattr(m, "anchors") and hasattr(m, cache):
                setattr(m, cache, None)
    return twin


class _TopKReplay:
    """Stands in for ultralytics' ``Detect._grouped_topk`` (RT-DETR's query selection and final top-k, every
    end-to-end head's top-k): records the selected indices while recording, returns the recorded ones (with the
    values they select) after ``replay()``."""

    def __init__(self, topk):
        self.topk, self.indices, self.replaying, self.calls = topk, [], False, 0

    def __call__(self, x: torch.Tensor, k, groups: int = 8):
        if not self.replaying:
            values, index = self.topk(x, k, groups)
            self.indices.append(index)
            return values, index
        index = self.indices[self.calls]
        self.calls += 1
        return x.gather(1, index), index

    def replay(self) -> None:
        self.replaying, self.calls = True, 0


@contextmanager
def same_top_k():
    """Make a float64 twin select the rows its float32 model selected: a top-k is discontinuous (a float32 rounding
    can swap two near-tied rows), so without this a float64 reference of a top-k output compares different rows."""
    from ultralytics.nn.modules.head import Detect

    original = Detect.__dict__["_grouped_topk"]
    replay = _TopKReplay(original.__func__)
    Detect._grouped_topk = staticmethod(replay)
    try:
        yield replay
    finally:
        Detect._grouped_topk = original


def _np(t) -> np.ndarray:
    return t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def float32_floor(ref32, ref64) -> float:
    """PyTorch's own float32 error on this output (against float64), at least one float32 ulp of its range."""
    ref32, ref64 = _np(ref32).astype(np.float64), _np(ref64).astype(np.float64)
    return max(float(np.abs(ref32 - ref64).max()), FLOAT32_EPS * max(1.0, float(np.abs(ref64).max())))


def parity_tolerance(ref32, ref64) -> float:
    """The largest error an exported float32 graph may have on this output: ``SPREAD`` x its float32 floor."""
    return SPREAD * float32_floor(ref32, ref64)


def assert_parity(got, ref32, ref64, what: str = "output") -> float:
    """``max|got - ref64| <= parity_tolerance(ref32, ref64)``; returns the tolerance (for the FINE-effect check)."""
    got, ref64 = _np(got).astype(np.float64), _np(ref64).astype(np.float64)
    assert got.shape == ref64.shape, (what, got.shape, ref64.shape)
    tol = parity_tolerance(ref32, ref64)
    err = float(np.abs(got - ref64).max())
    assert err <= tol, (f"{what}: max|export - float64| = {err:.3g} > {tol:.3g} = {SPREAD:g} x PyTorch's float32 "
                        f"error {float32_floor(ref32, ref64):.3g} (scale {float(np.abs(ref64).max()):.3g})")
    return tol


def assert_block_parity(got, m: FINE, low: torch.Tensor, high: torch.Tensor) -> None:
    """An exported (or recorded) FINE block's output against PyTorch's, to the derived tolerance, with the block's
    whole contribution ``|out - low|`` at least ``FINE_MARGIN`` times that tolerance (so dropping ``F_low * M`` or
    ``+ F_low``, or mixing up heads, fails)."""
    with torch.no_grad():
        ref32 = m(low, high)
        ref64 = float64_twin(m)(low.double(), high.double())
    tol = assert_parity(got, ref32, ref64, "FINE block output")
    effect = float((ref32 - low).abs().max())
    assert effect > FINE_MARGIN * tol, (effect, tol)


def detection_groups(n: int, nc: int) -> dict[str, slice]:
    """The channel groups of a decoded (B, 4 + nc + extra, anchors) head output: each has its own scale/decoding."""
    groups = {"boxes": slice(0, 4), "scores": slice(4, 4 + nc)}
    if n > 4 + nc:  # mask coefficients, keypoints (pixels and visibility) or the OBB angle
        groups["extra"] = slice(4 + nc, n)
    return groups


def ort_session(model, **kw):
    """A CPU ONNX Runtime session for a path or serialised model; ``FINE_YOLO_TEST_ORT_THREADS`` sets its intra-op
    threads (unset or 0: ONNX Runtime's default), so the parity tests can be checked at 1 thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("FINE_YOLO_TEST_ORT_THREADS", "0") or 0)
    return ort.InferenceSession(str(model) if isinstance(model, os.PathLike) else model, options,
                                providers=["CPUExecutionProvider"], **kw)


def ort_run(model, *inputs) -> list[np.ndarray]:
    """Run ``model`` (path or serialised bytes) on ``inputs`` (tensors, in the graph's input order)."""
    sess = ort_session(model)
    feeds = {i.name: _np(t) for i, t in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feeds)


# The FINE models trained, exported and checked in depth (one file per family, task and placement before FINE YAMLs
# were rendered on demand); every other catalogued YAML (P2/P6, ghost, yolov3, the new task heads) is built at its
# smallest scale and checked for placement and bit-exact transfer (tests/test_yolo_models.py).
IN_DEPTH = (
    "yolov5-fine.yaml", "yolov6-fine.yaml", "yolov8-fine.yaml", "yolov8-seg-fine.yaml", "yolov8-pose-fine.yaml",
    "yolov8-obb-fine.yaml", *(f"yolov9{s}-fine.yaml" for s in "tsmce"), *(f"yolov10{s}-fine.yaml" for s in "nsmblx"),
    "yolo11-fine.yaml", "yolo11-seg-fine.yaml", "yolo11-pose-fine.yaml", "yolo11-obb-fine.yaml", "yolo12-fine.yaml",
    "yolo26-fine.yaml", "yolo26-seg-fine.yaml", "yolo26-pose-fine.yaml", "yolo26-obb-fine.yaml", "yolo26-sem-fine.yaml",
    "rtdetr-l-fine.yaml", "rtdetr-x-fine.yaml", "rtdetr-resnet50-fine.yaml", "rtdetr-resnet101-fine.yaml",
)


def in_depth() -> dict:
    """``IN_DEPTH`` as ``{fine name: fine_yolo.models.FineModel}``, in that order."""
    from fine_yolo.models import catalogue

    return {name: catalogue()[name] for name in IN_DEPTH}


def placement_ks(n_stages: int) -> list[int]:
    """The k of each stage, top first, by the placement rule when every stage is one level below the previous."""
    return [2**i for i in range(n_stages)]
