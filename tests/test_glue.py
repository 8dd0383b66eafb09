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


def test_fine_model_keeps_every_layer_index_as_ultralytics_wrote_it():
    """Nothing is remapped: yolov8n-fine's Detect reads [15, 18, 21] as yolov8n's does, every layer keeps its upstream
    index and ``from``, and only the two fusion rows (11, 14) change type, keeping their upstream inputs."""
    from ultralytics import YOLO

    base = YOLO("yolov8n.yaml", verbose=False).model.model
    fine = YOLO("yolov8n-fine.yaml", verbose=False).model.model
    assert fine[-1].f == base[-1].f == [15, 18, 21] and fine[-1].i == 22
    assert [(m.i, m.f) for m in fine] == [(m.i, m.f) for m in base]
    assert [i for i, (b, f) in enumerate(zip(base, fine)) if type(b) is not type(f)] == [11, 14]
    assert [(type(fine[i]).__name__, fine[i].fine_from) for i in (11, 14)] == [("FINEConcat", [6, 9]),
                                                                             ("FINEConcat", [4, 12])]


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
