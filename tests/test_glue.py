"""The glue touches nothing it does not own: plain ultralytics behaviour is unchanged, FINE models keep ultralytics'
conventions, the start-up hook costs no imports, and the package's modules import each other without loops."""

from __future__ import annotations

import ast
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import offline_env
from helpers import imports, modules

ROOT = Path(__file__).resolve().parents[1]


def test_fine_model_keeps_every_from_index_explicit_as_ultralytics_wrote_it():
    """Detect.f of yolov8n is [15, 18, 21]; with FINE before layers 11 and 14 it must name the same layers at their
    new positions, [17, 20, 23] (never -1), so code that reads m.f (distillation, feature hooks) finds them."""
    from ultralytics import YOLO

    base = YOLO("yolov8n.yaml", verbose=False).model.model
    fine = YOLO("yolov8n-fine.yaml", verbose=False).model.model
    layers = [m for m in fine if type(m).__name__ != "FINE"]
    position = {j: m.i for j, m in enumerate(layers)}  # baseline index -> position in the FINE model
    assert fine[-1].f == [17, 20, 23] and [*fine[-1].f, fine[-1].i] == [17, 20, 23, 24]
    assert [type(fine[i]).__name__ for i in fine[-1].f] == [type(base[j]).__name__ for j in base[-1].f]
    assert (fine.fine0.f, fine.fine1.f) == ([6, 9], [4, 13])  # low, high at their positions
    for b, f in zip(base, layers):
        bf, ff = ([b.f], [f.f]) if isinstance(b.f, int) else (b.f, f.f)
        assert isinstance(f.f, type(b.f)) and len(bf) == len(ff)
        for x, y in zip(bf, ff):
            if x == -1:  # -1 stays -1 unless a FINE module now sits just before (then: the aligned map's position)
                assert y == -1 or type(fine[y]).__name__ == "FINE" or y == position[b.i - 1], (b.i, b.f, f.f)
            else:  # an explicit index stays explicit; it names the FINE-aligned map when FINE refined that layer
                assert y != -1 and y in (position[x], fine.fine0.i, fine.fine1.i), (b.i, b.f, f.f)


def test_parse_model_wrapper_passes_through_whatever_ultralytics_passes():
    from fine_yolo.glue.fine_rows import wrap_parse_model

    seen = []
    wrapped = wrap_parse_model(lambda d, ch, *args, **kwargs: seen.append((args, kwargs)) or "built")
    plain = {"backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": []}
    assert wrapped(plain, 3, False, future_keyword=1) == "built"
    assert seen == [((False,), {"future_keyword": 1})]


def _export_sha(tmp_path: Path, hook: str) -> str:
    """Export a plain yolov8n (FP16 on the CPU: the case the ONNX node-order patch handles for FINE models) in a fresh
    process with the start-up hook on or off; return the SHA-256 of the file's graph (nodes, initializers, inputs,
    outputs; the metadata holds the export date)."""
    work = tmp_path / f"hook{hook}"
    work.mkdir()
    code = ("import torch; torch.manual_seed(0); from ultralytics import YOLO; "  # the same random weights
            "print(YOLO('yolov8n.yaml').export(format='onnx', imgsz=64, half=True, simplify=False, device='cpu'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True,
                          env=offline_env(FINE_YOLO_HOOK=hook), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    onnx_file = Path(proc.stdout.strip().splitlines()[-1])
    import onnx

    proto = onnx.load(str(work / onnx_file))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)  # the FP16 path ran
    return hashlib.sha256(proto.graph.SerializeToString()).hexdigest()


@pytest.mark.slow
def test_plain_export_writes_the_same_file_with_the_hook_on_and_off(tmp_path):
    assert _export_sha(tmp_path, "1") == _export_sha(tmp_path, "0")


def _start_modules(**env: str) -> set[str]:
    code = "import sys; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=offline_env(**env)).stdout
    return set(out.split())


def test_start_up_hook_imports_nothing_but_itself_and_nothing_when_off():
    on, off = _start_modules(), _start_modules(FINE_YOLO_HOOK="0")
    assert on - off == {"fine_yolo", "fine_yolo._hook"}
    assert not any(m.startswith("fine_yolo") for m in off)


def test_pth_switch_values_match_the_hook():
    from fine_yolo import _hook

    line = (ROOT / "fine_yolo_startup.pth").read_text()
    assert line.startswith("import ") and line.count("\n") == 1  # site executes one-line `import` statements
    values = ast.literal_eval(re.search(r"not in (\(.*?\))", line).group(1))
    assert values == _hook.OFF_VALUES


def _import_graph() -> dict[str, set[str]]:
    """Module -> fine_yolo modules it imports (module level and inside functions alike; helpers' import parser)."""
    known = modules(ROOT)
    return {m: imports(m, p, known) for m, p in known.items()}


def test_no_import_loops_and_no_library_module_imports_the_cli():
    edges = _import_graph()
    assert len(edges) > 30  # the walk found the package
    loops = []
    state: dict[str, int] = {}

    def visit(v: str, stack: list[str]) -> None:
        state[v] = 1
        for w in sorted(edges[v]):
            if state.get(w) == 1:
                loops.append(" -> ".join(stack[stack.index(w):] + [v, w]) if w in stack else f"{v} -> {w}")
            elif w not in state:
                visit(w, [*stack, v])
        state[v] = 2

    for v in sorted(edges):
        if v not in state:
            visit(v, [])
    assert loops == []
    assert sorted(m for m, e in edges.items() if "fine_yolo.cli" in e and m != "fine_yolo.cli") == []


def test_a_planted_loop_is_found(monkeypatch):
    """The walk above can fail: a two-module loop is reported."""
    edges = {"a": {"b"}, "b": {"a"}}
    monkeypatch.setattr(sys.modules[__name__], "_import_graph", lambda: edges | {f"m{i}": set() for i in range(31)})
    with pytest.raises(AssertionError):
        test_no_import_loops_and_no_library_module_imports_the_cli()
