"""Test-session settings: everything offline, ultralytics' state in a temporary directory."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

# Before anything imports ultralytics: no downloads, no pip installs, settings/fonts/datasets in a throwaway dir.
_STATE = Path(tempfile.mkdtemp(prefix="fine_yolo_tests_"))
atexit.register(shutil.rmtree, _STATE, ignore_errors=True)  # leave no state behind
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", str(_STATE / "config"))
os.environ.setdefault("MPLBACKEND", "Agg")

# With PYTHONDONTWRITEBYTECODE set (as on some CI machines) each of the ~50 Python processes the suite starts compiles
# ultralytics and fine_yolo from source again: ~1 s of a 5-6 s one-epoch `yolo train` (2-core AMD EPYC, 2026-12-04).
# Their bytecode goes to a cache in this session's throwaway directory instead; nothing is written beside any source.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(_STATE / "pycache"))
    sys.pycache_prefix, sys.dont_write_bytecode = os.environ["PYTHONPYCACHEPREFIX"], False

# The cores shared out among pytest-xdist's workers, before anything imports torch: each worker (and every subprocess
# it starts, which inherits the variable) gets cores // workers threads. With torch's default of one thread per core,
# two workers on two cores oversubscribe them and OpenMP's spin-waiting burns the difference: the README's
# `-n 2` suite took 500-551 s with it and 451 s without (2-core AMD EPYC, 2026-12-04). Set OMP_NUM_THREADS yourself
# to run the parity tests at another thread count (tests/helpers.py); FINE_YOLO_TEST_ORT_THREADS does the same for
# ONNX Runtime's intra-op threads.
_THREADS = str(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
os.environ.setdefault("OMP_NUM_THREADS", _THREADS)
os.environ.setdefault("FINE_YOLO_TEST_ORT_THREADS", _THREADS)

# Offline, ultralytics' check_font would try the network for Arial; a stand-in font where it looks first (its
# USER_CONFIG_DIR, $YOLO_CONFIG_DIR/Ultralytics) keeps every test and its subprocesses off the network.
from fine_yolo.glue.font import place_fonts  # noqa: E402

place_fonts(Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics")


# What takes longest (seconds of one worker in the README's `-n 2` run, 2-core AMD EPYC, 2026-12-04), handed out
# first so that no worker starts one of them while the other is nearly done: groups by name, single tests by node-id
# prefix. Everything else follows in collection order and fills the gaps.
LONGEST_FIRST = ("local_comparison",  # ~110: the toy demo, then what reads it (compare, SLURM, yolo val/predict)
                 "tests/test_families_train.py",  # ~55: one process trains 18 models, another predicts
                 "tests/test_slurm.py",  # ~35 beyond the job array, mostly waiting for SLURM
                 "tests/test_cli_e2e.py", "tests/test_trt_check.py", "tests/test_openvino.py", "tests/test_int8.py",
                 "tests/test_checkpoints.py", "tests/test_gpu_check.py",
                 "tests/test_families_export.py::test_onnx_export_matches_pytorch_and_passes_the_tensorrt_check[rtdetr",
                 "tests/test_families_export.py::test_onnx_export_matches_pytorch_and_passes_the_tensorrt_check[yolov9")


def _group(item) -> str | None:
    """The xdist group of a test that shares an expensive fixture: ``local_comparison`` (the session's toy demo), else
    its file when it uses a module- or session-scoped fixture of this suite; None (distributed test by test) when it
    shares nothing."""
    if "local_comparison" in getattr(item, "fixturenames", ()):
        return "local_comparison"
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        if defs and defs[-1].scope in ("module", "package", "session") and defs[-1].baseid:  # ours, not a plugin's
            return item.nodeid.split("::")[0]
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks into the node ids
def pytest_collection_modifyitems(config, items) -> None:
    """Groups for pytest-xdist's ``--dist loadgroup`` (the README's ``-n 2``): the tests of a file that share a module
    fixture (a training, an export) run in one worker, so it runs once; the tests that share the session's toy demo
    (``local_comparison``) form one group, so it too runs once; every other test goes to whichever worker is free.
    The longest work goes first (:data:`LONGEST_FIRST`). Without xdist the marks do nothing."""

    def rank(item) -> int:
        key = _group(item) or item.nodeid
        return next((i for i, p in enumerate(LONGEST_FIRST) if key.startswith(p)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: each file keeps its own order
    for item in items:
        group = _group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def script(name: str) -> str:
    """This environment's console script ``name`` (else the one on PATH)."""
    sibling = Path(sys.executable).parent / name
    return str(sibling) if sibling.is_file() else shutil.which(name) or name


@pytest.fixture(scope="session")
def local_comparison(tmp_path_factory) -> SimpleNamespace:
    """``fine-yolo demo`` at toy size, run once per session: a 1-epoch shared yolov8n baseline, then ``fine-yolo
    compare`` of yolov8n-fine vs yolov8n from it (launcher=local, device=cpu, 2 seeds x 1 epoch at 64 px on 6+4
    fine-synth images) and the ONNX check of seed 0. test_cli_e2e checks what the demo prints and writes,
    test_compare the comparison and a rerun of the ``fine-yolo compare`` line the demo printed, test_slurm a SLURM
    job array of the same runs. Fields: cwd, root (the data), data (its YAML), demo (the demo's project), project
    (the comparison's), cmd (that ``fine-yolo compare`` argv), proc (the demo's process)."""
    import shlex

    from fine_yolo.data.synthetic import CLASS_NAMES, generate

    tmp = tmp_path_factory.mktemp("local_comparison")
    root = tmp / "data"
    generate(root, seed=0, n_train=6, n_val=4, imgsz=128)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    data = tmp / "tiny.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    demo = [script("fine-yolo"), "demo", f"data={data}", "base_epochs=1", "epochs=1", "seeds=2", "imgsz=64",
            "batch=2", f"project={tmp / 'demo'}"]
    proc = subprocess.run(demo, cwd=tmp, env=offline_env(), capture_output=True, text=True, timeout=600)
    step = "fine-yolo demo: 2/3 "  # the demo prints its comparison as a line a shell can rerun
    lines = [line[len(step):] for line in proc.stdout.splitlines() if line.startswith(step)]
    cmd = [script("fine-yolo"), *shlex.split(lines[0])[1:]] if lines else []
    return SimpleNamespace(cwd=tmp, root=root, data=data, demo=tmp / "demo", project=tmp / "demo" / "compare",
                           cmd=cmd, proc=proc)


def offline_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: offline ultralytics, this session's config dir, plus ``extra``."""
    env = dict(os.environ)
    env.update({"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def output_tensors(out) -> list:
    """Every tensor in a (nested) model output, in a fixed order (dict keys sorted)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in output_tensors(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in output_tensors(v)]
    return []
