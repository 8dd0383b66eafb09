"""`fine-yolo bench`: statistics, the interleaved loop, the environment probe (fake Jetson tree), the report, and a
small real run through PyTorch and ONNX Runtime on CPU. TensorRT timing is tested where a GPU and TensorRT exist."""

from __future__ import annotations

import json
import math
import platform
import statistics

import pytest

from fine_yolo.bench.env import clocks_locked, cpu_freqs, cpu_name, gpu_devfreq, jetson_info, warnings_for
from fine_yolo.bench.report import markdown
from fine_yolo.bench.stats import interleave, speed_ratio, summarize

# --- statistics ------------------------------------------------------------------------------------------------------


def test_summarize_known_samples():
    s = summarize([10.0, 12.0, 11.0, 30.0, 10.5])
    assert (s.n, s.median, s.min, s.max) == (5, 11.0, 10.0, 30.0)
    assert s.mean == pytest.approx(14.7)
    assert s.fps == pytest.approx(1000 / 11.0)
    # sorted 10, 10.5, 11, 12, 30; linear interpolation at (n-1) q = 3.6 and 3.96: 12 + 0.6*18, 12 + 0.96*18
    assert s.p90 == pytest.approx(22.8) and s.p99 == pytest.approx(29.28)
    assert s.std == pytest.approx(math.sqrt((4.7**2 + 2.7**2 + 3.7**2 + 15.3**2 + 4.2**2) / 5))  # population std
    with pytest.raises(ValueError):
        summarize([])


def test_speed_ratio_of_paired_samples():
    base = [100.0 + (i % 5) for i in range(200)]
    fine = [b * 1.02 for b in base]  # FINE 2% slower in every round
    r = speed_ratio(base, fine)
    assert r.of_medians == pytest.approx(1 / 1.02)
    assert r.paired_median == pytest.approx(1 / 1.02)
    assert r.ci95[0] <= r.of_medians <= r.ci95[1]
    assert r.ci95[1] - r.ci95[0] < 0.02
    with pytest.raises(ValueError, match="paired"):
        speed_ratio([1.0, 2.0], [1.0])


def test_speed_ratio_interval_is_the_bootstrap_of_rounds():
    """Half the rounds have FINE 10% slower, half 30%: a resample's FINE median is 110 or 130 (120 only on an exact
    tie, p ~ 0.06), so the 2.5th/97.5th percentiles are exactly 100/130 and 100/110. A seed reproduces the interval;
    50 000 rounds (resampled in chunks) of a constant ratio give that ratio exactly."""
    base = [100.0] * 200
    fine = [110.0 if i % 2 else 130.0 for i in range(200)]
    r = speed_ratio(base, fine, n_boot=2000, seed=1)
    assert r.paired_median == pytest.approx((100 / 110 + 100 / 130) / 2)  # median of an even count: mean of the two
    assert 100 / 130 <= r.ci95[0] < r.ci95[1] <= 100 / 110
    assert r.ci95[0] == pytest.approx(100 / 130) and r.ci95[1] == pytest.approx(100 / 110)
    assert speed_ratio(base, fine, n_boot=2000, seed=1) == r
    big = speed_ratio([100.0] * 50_000, [125.0] * 50_000, n_boot=200)
    assert big.of_medians == big.ci95[0] == big.ci95[1] == pytest.approx(0.8)


def test_interleave_runs_a_b_a_b_after_warmup():
    calls: list[str] = []

    def runner(name, ms):
        def run():
            calls.append(name)
            return ms

        return run

    out = interleave({"baseline": runner("A", 1.0), "fine": runner("B", 2.0)}, iters=4, warmup=2, progress=False)
    assert calls == ["A", "B"] * 6  # 2 warm-up rounds, then 4 timed rounds, strictly alternating
    assert out == {"baseline": [1.0] * 4, "fine": [2.0] * 4}


def test_interleave_blocks_settle_after_each_switch_then_time_block_runs():
    calls: list[str] = []
    counter = {"A": 0, "B": 0}

    def runner(name):
        def run():
            calls.append(name)
            counter[name] += 1
            return float(counter[name])  # the run's ordinal: shows which runs were kept

        return run

    out = interleave({"baseline": runner("A"), "fine": runner("B")}, iters=5, warmup=1, block=3, progress=False)
    # 1 warm-up round; then turns of 1 settling + 3 timed runs until each has >= 5 samples (2 rounds -> 6 samples)
    assert calls == ["A", "B"] + (["A"] * 4 + ["B"] * 4) * 2
    assert out["baseline"] == [3.0, 4.0, 5.0, 7.0, 8.0, 9.0]  # runs 2 and 6 settled, untimed
    assert out["fine"] == [3.0, 4.0, 5.0, 7.0, 8.0, 9.0]
    with pytest.raises(ValueError, match="block"):
        interleave({"a": runner("A")}, block=0, progress=False)


_MMAP_PROBE = """
import ctypes, sys
from fine_yolo.bench.env import steady_malloc
if sys.argv[1] == "steady":
    assert steady_malloc() == "glibc mallopt: mmap threshold 32 MiB, no trim"
libc = ctypes.CDLL("libc.so.6")
class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                               "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo2().hblkhd
ptr = libc.malloc(8 * 1024 * 1024)
print(libc.mallinfo2().hblkhd - before)  # bytes mmap'ed for the block
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_steady_malloc_keeps_large_blocks_on_the_heap():
    """In fresh processes: an 8 MB block is mmap'ed by default and comes from the heap after steady_malloc()."""
    import subprocess
    import sys

    def mmapped(mode: str) -> int:
        proc = subprocess.run([sys.executable, "-c", _MMAP_PROBE, mode], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout.split()[-1])

    assert mmapped("default") >= 8 * 1024 * 1024
    assert mmapped("steady") == 0


def test_interleave_runs_at_least_the_seconds_asked():
    import time

    def sleeper():
        time.sleep(0.01)
        return 10.0

    start = time.perf_counter()
    out = interleave({"a": sleeper}, iters=1, seconds=0.1, warmup=0, progress=False)
    assert time.perf_counter() - start >= 0.1 and len(out["a"]) >= 2  # kept going past iters=1 for 0.1 s
    assert len(interleave({"a": sleeper}, iters=3, seconds=0.1, warmup=0, progress=False, max_iters=3)["a"]) == 3


# --- environment -----------------------------------------------------------------------------------------------------


def _write(root, rel, text):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def _fake_jetson(root, gpu_min, gpu_max, cpu_min, cpu_max):
    _write(root, "etc/nv_tegra_release", "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic\n")
    _write(root, "proc/device-tree/model", "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00")
    _write(root, "var/lib/nvpmodel/status", "pmode:0002 fmode:quiet")
    g = "sys/class/devfreq/17000000.gpu/"
    for name, val in (("name", "17000000.gpu"), ("cur_freq", str(gpu_max)), ("min_freq", str(gpu_min)),
                      ("max_freq", str(gpu_max)), ("governor", "nvhost_podgov")):
        _write(root, g + name, val + "\n")
    for i in range(2):
        c = f"sys/devices/system/cpu/cpu{i}/cpufreq/"
        for name, val in (("scaling_governor", "schedutil"), ("scaling_cur_freq", str(cpu_max)),
                          ("scaling_min_freq", str(cpu_min)), ("scaling_max_freq", str(cpu_max))):
            _write(root, c + name, val + "\n")


def test_jetson_with_locked_clocks(tmp_path):
    _fake_jetson(tmp_path, 1020000000, 1020000000, 1728000, 1728000)
    j = jetson_info(tmp_path, run_nvpmodel=False)
    assert j["model"].startswith("NVIDIA Jetson Orin Nano") and j["l4t"].startswith("# R36")
    assert j["power_mode"] == "pmode:0002 fmode:quiet"
    assert j["gpu_clock"] == {"node": "17000000.gpu", "cur_hz": 1020000000, "min_hz": 1020000000,
                              "max_hz": 1020000000, "governor": "nvhost_podgov"}
    assert [c["max_khz"] for c in j["cpu_clock"]] == [1728000, 1728000]
    assert j["clocks_locked"] is True
    assert warnings_for({"jetson": j, "loadavg": [0.1, 0, 0], "cpu_count": 6}) == []


def test_jetson_with_scaling_clocks_warns(tmp_path):
    _fake_jetson(tmp_path, 306000000, 1020000000, 115200, 1728000)
    j = jetson_info(tmp_path, run_nvpmodel=False)
    assert j["clocks_locked"] is False
    (w,) = warnings_for({"jetson": j, "loadavg": [0.1, 0, 0], "cpu_count": 6})
    assert w == ("Jetson clocks are not locked (governors scale them with load): run `sudo nvpmodel -m 0` (the maximum "
                 "mode of your board, see `nvpmodel -q`) and `sudo jetson_clocks` before timing.")


def test_not_a_jetson(tmp_path):
    _write(tmp_path, "proc/cpuinfo", "processor\t: 0\nmodel name\t: AMD EPYC 9B14\n")
    assert cpu_name(tmp_path) == "AMD EPYC 9B14"
    assert jetson_info(tmp_path, run_nvpmodel=False) is None
    assert gpu_devfreq(tmp_path) is None and cpu_freqs(tmp_path) == []
    assert clocks_locked(None, []) is None
    (w,) = warnings_for({"jetson": None, "loadavg": [3.5, 3, 3], "cpu_count": 2})
    assert w == ("the machine is busy (1-min load average 3.5 on 2 CPUs): absolute latencies are inflated; the "
                 "interleaved baseline/FINE ratio is what stays comparable.")


# --- report ----------------------------------------------------------------------------------------------------------


def _fake_result():
    def model(name, med, params, gflops):
        net = summarize([med, med * 1.01, med * 0.99, med * 1.2])
        return {"name": name, "params": params, "gflops": gflops, "network": net.to_dict(),
                "e2e": summarize([med + 5, med + 6]).to_dict()}

    return {
        "args": {"model": "yolov8s-fine.yaml", "baseline": "yolov8s.yaml", "imgsz": 640},
        "backend_desc": "ONNX Runtime CPUExecutionProvider, 2 intra-op threads",
        "env": {"cpu": "AMD EPYC", "torch": "2.x", "onnxruntime": "1.x", "tensorrt": None, "cuda": None,
                "jetson": None},
        "warnings": ["the machine is busy"],
        "models": {"baseline": model("yolov8s", 100.0, 11_166_560, 28.6),
                   "fine": model("yolov8s-fine", 102.0, 11_654_208, 29.2)},
        "ratio": {"network": speed_ratio([100.0, 101.0], [102.0, 103.0]).to_dict(),
                  "e2e": speed_ratio([105.0], [107.0]).to_dict()},
    }


def test_markdown_report_like_table_1():
    text = markdown(_fake_result())
    lines = text.splitlines()
    assert lines[0].startswith("**yolov8s.yaml vs yolov8s-fine.yaml** — ONNX Runtime")
    header = next(ln for ln in lines if ln.startswith("| model |"))
    assert all(c in header for c in ("params", "GFLOPs", "latency median (ms)", "p90", "p99", "FPS", "end-to-end"))
    base = next(ln for ln in lines if ln.startswith("| yolov8s |"))
    assert "| 11.17M | 28.6 | 100.50 |" in base and "| 10.0 |" in base  # FPS = 1000 / 100.5, one decimal
    ratio = next(ln for ln in lines if "baseline / FINE" in ln)
    assert "**0.980**" in ratio and "95% CI" in ratio and "| 0.981 |" in ratio  # 100.5 / 102.5; e2e 105 / 107
    assert "> warning: the machine is busy" in text


@pytest.mark.parametrize("argv, message", [
    (["device=gpu"], "device=gpu is not cpu"),
    (["block=0"], "block=0 must be >= 1"),
    (["iters=0"], "iters=0 must be >= 1"),
    (["malloc=jemalloc"], "'malloc=jemalloc' must be one of steady, default"),
    (["format=tflite"], "format=tflite is not one of"),
    (["model=x-fine.onnx", "baseline=x.onnx"], "x-fine.onnx is an exported file"),
])
def test_bench_bad_arguments_are_usage_errors_before_any_work(argv, message, tmp_path, capsys):
    from fine_yolo.cli import run_subcommand

    args = ["model=yolov8n-fine.yaml", "format=torch", f"out={tmp_path}"]
    assert run_subcommand("bench", args + argv) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing prepared or exported


# --- a real, small run -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["torch", "onnx"])
def test_bench_runs_end_to_end_on_cpu(tmp_path, fmt, capsys):
    from fine_yolo.cli import run_subcommand

    out_json = tmp_path / "bench.json"
    rc = run_subcommand("bench", ["model=yolov8n-fine.yaml", f"format={fmt}", "imgsz=96", "iters=4", "warmup=1",
                                  "block=2", "e2e_iters=2", "threads=1", f"out={tmp_path}", f"json={out_json}",
                                  "progress=False"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| yolov8n |" in text and "| yolov8n-fine |" in text and "baseline / FINE" in text
    r = json.loads(out_json.read_text())
    assert r["args"]["baseline"] == "yolov8n.yaml" and r["args"]["threads"] == 1
    assert r["args"]["block"] == 2 and r["args"]["malloc"] == "steady"
    if platform.libc_ver()[0] == "glibc":
        assert r["env"]["malloc"] == "glibc mallopt: mmap threshold 32 MiB, no trim"
    for key in ("baseline", "fine"):
        m = r["models"][key]
        assert len(m["samples_ms"]) == 4 and len(m["e2e_samples_ms"]) == 2  # block=2: whole turns
        assert m["network"]["median"] == pytest.approx(statistics.median(m["samples_ms"]))
        assert m["network"]["fps"] == pytest.approx(1000 / m["network"]["median"])
        assert m["params"] > 3_000_000 and m["gflops"] > 0
    assert r["models"]["fine"]["params"] > r["models"]["baseline"]["params"]
    assert r["ratio"]["network"]["of_medians"] == pytest.approx(
        r["models"]["baseline"]["network"]["median"] / r["models"]["fine"]["network"]["median"])
    if fmt == "onnx":
        assert r["models"]["fine"]["artifact"].endswith(".onnx")
        assert r["models"]["fine"]["info"]["intra_op_threads"] == 1
        assert r["models"]["fine"]["info"]["providers"][0] == "CPUExecutionProvider"
    assert r["env"]["torch"] and "cpu" in r["env"]


def test_bench_usage_errors(capsys):
    from fine_yolo.cli import run_subcommand

    for argv, message in (([], "missing required argument(s): model=..."),
                          (["model=yolov8n-fine.yaml", "format=tflite", "iters=1"], "format=tflite is not one of"),
                          (["model=yolov8n.yaml", "iters=1"], "is not a FINE model name")):  # no baseline=
        assert run_subcommand("bench", argv) == 2
        assert message in capsys.readouterr().err


def test_bench_engine_without_gpu_says_so(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the answer on a machine without CUDA")
    from fine_yolo.cli import main

    assert main(["bench", "model=yolov8n-fine.yaml", "format=engine", "iters=1", f"out={tmp_path}",
                 "progress=False"]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("fine-yolo bench: format=engine needs an NVIDIA GPU") and "format=onnx" in err
    assert not any(tmp_path.iterdir())  # stopped before exporting anything


@pytest.mark.gpu
def test_bench_tensorrt_engine(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    pytest.importorskip("tensorrt", reason="needs the TensorRT Python package (JetPack or `pip install tensorrt`)")
    from fine_yolo.bench.latency import run_bench

    r = run_bench("yolov8n-fine.yaml", imgsz=160, format="engine", device="0", half=True, cuda_graph=True, iters=20,
                  warmup=5, e2e_iters=5, out=str(tmp_path), progress=False)
    assert r["models"]["fine"]["info"]["backend"] == "tensorrt"
    assert r["env"]["gpu"] and r["env"]["tensorrt"]
    assert 0 < r["models"]["fine"]["network"]["median"] < 100


def test_summary_table_like_paper_table_1():
    from fine_yolo.bench.report import summary_table

    text = summary_table([_fake_result()])
    row = text.splitlines()[2]
    assert row.startswith("| yolov8s | 11.17M | 28.6 | 10.0 | 11.65M | 29.2 | 9.8 | 0.980 |")
    assert "189 -> 177" in row  # the paper's Orin Nano FPS beside ours


def test_jetson_script_uses_only_known_bench_arguments():
    import re
    from pathlib import Path

    from fine_yolo.bench.latency import COMMAND

    script = (Path(__file__).parents[1] / "scripts" / "jetson_table1.sh").read_text()
    call = script[script.index("fine-yolo bench model=") : script.index("| tee")]
    keys = set(re.findall(r"(\w+)=", call))
    assert keys and keys <= set(COMMAND.options), keys - set(COMMAND.options)
    assert {"format", "half", "cuda_graph", "model", "baseline"} <= keys
