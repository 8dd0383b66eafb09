"""The start-up hook touches only FINE: each patch's private seam is checked (a changed signature fails here, not as one
warning at run time), a plain model gets ultralytics' own functions (identity), `yolo export format=engine` of a plain
model is upstream's, `import fine_yolo` is the one registration, and the offline font needs no patch."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import offline_env

from fine_yolo import _hook
from fine_yolo.glue.font import FONTS, offline_fonts, place_fonts


def _plain_signature(func) -> str:
    """``func``'s signature without annotations (what a seam in PATCHES states)."""
    sig = inspect.signature(func)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def seam_mismatches(module, seams: tuple[str, ...]) -> list[str]:
    """Each seam ``Owner.attr(signature)`` of ``module`` that is missing or whose function (ultralytics' own, under our
    wrapper) has another signature, as a sentence; [] when all hold."""
    problems = []
    for seam in seams:
        path, _, expected = seam.partition("(")
        obj = module
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            problems.append(f"{module.__name__}.{path} does not exist")
            continue
        original = obj.__wrapped__ if getattr(obj, "__fine_yolo__", False) else obj
        if (found := _plain_signature(original)) != "(" + expected:
            problems.append(f"{module.__name__}.{path}{found} is not the seam {seam}")
    return problems


def test_every_seam_exists_with_its_signature_and_the_hook_applied_it_without_warnings():
    import ultralytics

    assert len(_hook.PATCHES) >= 4
    for target, glue, seams, why in _hook.PATCHES:
        module = importlib.import_module(target)
        assert seams and why and callable(importlib.import_module(glue).patch), glue
        assert seam_mismatches(module, seams) == [], f"ultralytics {ultralytics.__version__}"
        for seam in seams:  # the hook (installed by `import fine_yolo`) wrapped every seam
            obj = module
            for part in seam.partition("(")[0].split("."):
                obj = getattr(obj, part)
            assert getattr(obj, "__fine_yolo__", False), f"{target}.{seam} is not patched"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a failing patch is a RuntimeWarning at run time, an error here
            _hook.apply(target, module)  # idempotent: wrap_once keeps the one wrapper


def test_a_changed_seam_is_reported():
    def check_file(file, suffix=""):  # an ultralytics release that dropped arguments
        return file

    fake = SimpleNamespace(__name__="ultralytics.utils.checks", check_file=check_file)
    assert seam_mismatches(fake, ("check_file(file, suffix='', download=True)", "check_font(font='Arial.ttf')")) == [
        "ultralytics.utils.checks.check_file(file, suffix='') is not the seam "
        "check_file(file, suffix='', download=True)",
        "ultralytics.utils.checks.check_font does not exist",
    ]


def test_a_fresh_process_applies_the_hook_with_warnings_as_errors(tmp_path):
    targets = sorted({row[0] for row in _hook.PATCHES})
    code = "import importlib\n" + "".join(f"importlib.import_module({t!r})\n" for t in targets)
    code += "import ultralytics.nn.tasks as t; print(t.parse_model.__fine_yolo__)"
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], cwd=tmp_path,
                          env=offline_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "True", proc.stderr[-3000:]


# Functions a plain model goes through: the hook's seams (PATCHES) wrap them, every other one is ultralytics' own.
RELEVANT = ("ultralytics.utils.checks:check_font", "ultralytics.data.utils:check_font",
            "ultralytics.utils.plotting:check_font", "ultralytics.cfg:entrypoint",
            "ultralytics.utils.checks:check_file", "ultralytics.nn.tasks:parse_model",
            "ultralytics.engine.exporter:Exporter.__call__", "ultralytics.engine.exporter:Exporter.export_onnx",
            "ultralytics.engine.trainer:BaseTrainer.save_model")
SEAMS = tuple(f"{target}:{seam.partition('(')[0]}" for target, _, seams, _ in _hook.PATCHES for seam in seams)


def test_import_fine_yolo_registers_and_a_plain_model_keeps_ultralytics_own_functions(tmp_path):
    """Hook off: ultralytics first, its functions recorded; then `import fine_yolo` (the one entry point) teaches it
    FINE; every function a plain model goes through is the same object, or (a seam) wraps that very object."""
    untouched = tuple(ref for ref in RELEVANT if ref not in SEAMS)
    assert "ultralytics.utils.checks:check_font" in untouched and "ultralytics.cfg:entrypoint" in untouched
    code = textwrap.dedent(f"""
        import importlib
        from ultralytics import YOLO

        def get(ref):
            module, _, path = ref.partition(":")
            obj = importlib.import_module(module)
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj

        before = {{ref: get(ref) for ref in {RELEVANT + SEAMS!r}}}
        try:
            YOLO("yolov8n-fine.yaml", verbose=False)
            raise SystemExit("ultralytics knew FINE before fine_yolo was imported")
        except Exception:  # upstream alone does not know the name
            pass
        import fine_yolo
        fine = YOLO("yolov8n-fine.yaml", verbose=False)
        plain = YOLO("yolov8n.yaml", verbose=False)
        assert any(type(m).__name__ == "FINE" for m in fine.model.modules())
        assert not any("fine_yolo" in type(m).__module__ for m in plain.model.modules())
        for ref in {untouched!r}:
            assert get(ref) is before[ref], ref
            assert not getattr(get(ref), "__fine_yolo__", False), ref
        for ref in {SEAMS!r}:
            assert get(ref).__fine_yolo__ and get(ref).__wrapped__ is before[ref], ref
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=offline_env(FINE_YOLO_HOOK="0"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "ok", proc.stdout[-2000:] + proc.stderr[-3000:]


def _yolo_export_engine(tmp_path: Path, hook: str) -> tuple[int, str]:
    """`yolo export model=yolov8n.yaml format=engine` (ultralytics' console-script function, this interpreter) with the
    start-up hook on or off: its exit status and the exception it ends with."""
    from importlib.metadata import entry_points

    (yolo,) = entry_points(group="console_scripts", name="yolo")
    module, func = yolo.value.split(":")
    work = tmp_path / f"hook{hook}"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())", "export",
         "model=yolov8n.yaml", "format=engine", "imgsz=64"],
        cwd=work, env=offline_env(FINE_YOLO_HOOK=hook), capture_output=True, text=True, timeout=300,
    )
    errors = [line for line in proc.stderr.splitlines() if re.match(r"[A-Za-z_.]*(Error|Exception): ", line)]
    return proc.returncode, errors[-1] if errors else proc.stderr[-2000:]


def test_yolo_export_engine_of_a_plain_model_is_upstream(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("with a CUDA GPU ultralytics may build the engine: this compares the CPU-only answer")
    on, off = _yolo_export_engine(tmp_path, "1"), _yolo_export_engine(tmp_path, "0")
    assert on == off and on[0] != 0, (on, off)
    assert on[1].startswith("ValueError: Invalid CUDA 'device=0' requested"), on  # ultralytics' own (8.4.190) answer


def test_place_fonts_puts_dejavu_where_check_font_looks_and_never_overwrites(tmp_path, monkeypatch):
    import ultralytics.utils as utils
    import ultralytics.utils.checks as checks
    import ultralytics.utils.downloads as downloads

    placed = place_fonts(tmp_path / "cfg")
    assert [p.name for p in placed] == list(FONTS) and place_fonts(tmp_path / "cfg") == []
    assert placed[0].read_bytes()[:4] == b"\x00\x01\x00\x00"  # a TrueType file
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "Arial.ttf").write_bytes(b"the user's")
    assert place_fonts(tmp_path / "own") == [tmp_path / "own" / "Arial.Unicode.ttf"]
    assert (tmp_path / "own" / "Arial.ttf").read_bytes() == b"the user's"
    (tmp_path / "file").write_text("")  # not a directory: nothing placed, no error
    assert place_fonts(tmp_path / "file") == []

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access: {args}")

    # This session's config dir got its fonts from conftest: ultralytics' own check_font (uncached) finds them.
    monkeypatch.setattr(downloads, "is_url", no_network)
    assert checks.check_font is not None and not getattr(checks.check_font, "__fine_yolo__", False)
    lookup = inspect.unwrap(checks.check_font)
    assert [lookup(f) for f in FONTS] == [utils.USER_CONFIG_DIR / f for f in FONTS]
    # offline_fonts: ultralytics' config dir, offline only.
    monkeypatch.setattr(utils, "USER_CONFIG_DIR", tmp_path / "user")
    monkeypatch.setattr(utils, "ONLINE", True)
    assert offline_fonts() == []
    monkeypatch.setattr(utils, "ONLINE", False)
    assert offline_fonts() == [tmp_path / "user" / f for f in FONTS]
