"""What the benchmark ran on: versions, CPU/GPU, and on a Jetson the power mode and whether the clocks are locked.

Latency on a Jetson depends on ``nvpmodel`` (power mode) and on DVFS: unless ``sudo jetson_clocks`` has pinned the
CPU, GPU and memory clocks at their maximum, the governors scale them with load and a 5 ms network is timed at
whatever clock the last idle gap left. Everything here is read from ``/proc``, ``/sys`` and ``/etc`` (paths taken
relative to ``root`` so tests can use a fake tree); nothing needs root, and anything unreadable is simply absent.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

# devfreq node names of the integrated GPU on Jetson boards (Orin: ga10b, Xavier: gv11b, TX2: gp10b, Nano: gm20b).
_JETSON_GPU_NAMES = ("ga10b", "gv11b", "gp10b", "gm20b", "gpu")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip().strip("\x00")
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).split()[0])
    except (TypeError, ValueError, IndexError):
        return None


def cpu_name(root: Path = Path("/")) -> str:
    """CPU model name from /proc/cpuinfo (``model name`` on x86, ``Hardware``/``Model`` on ARM), else platform's."""
    text = _read(root / "proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def jetson_info(root: Path = Path("/"), run_nvpmodel: bool = True) -> dict[str, Any] | None:
    """Jetson model, L4T release, power mode and clock state; ``None`` when this is not a Jetson."""
    release = _read(root / "etc/nv_tegra_release")
    model = _read(root / "proc/device-tree/model")
    if release is None and not (model and "jetson" in model.lower()):
        return None
    info: dict[str, Any] = {"model": model, "l4t": release.splitlines()[0] if release else None}
    mode = _read(root / "var/lib/nvpmodel/status")  # nvpmodel's own state file, e.g. "pmode:0000 fmode:quiet"
    if run_nvpmodel and shutil.which("nvpmodel"):
        try:
            out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=5).stdout
            lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
            mode = " / ".join(lines[:2]) if lines else mode  # "NV Power Mode: 15W / 0"
        except (OSError, subprocess.SubprocessError):
            pass
    info["power_mode"] = mode
    info["gpu_clock"] = gpu_devfreq(root)
    info["cpu_clock"] = cpu_freqs(root)
    emc = _int(_read(root / "sys/kernel/debug/bpmp/debug/clk/emc/rate"))
    info["emc_hz"] = emc
    info["clocks_locked"] = clocks_locked(info["gpu_clock"], info["cpu_clock"])
    return info


def gpu_devfreq(root: Path = Path("/")) -> dict[str, Any] | None:
    """The integrated GPU's devfreq node: current/min/max frequency (Hz) and governor."""
    base = root / "sys/class/devfreq"
    if not base.is_dir():
        return None
    for node in sorted(base.iterdir()):
        name = (_read(node / "name") or node.name).lower()
        if any(g in name or g in node.name.lower() for g in _JETSON_GPU_NAMES):
            return {
                "node": node.name,
                "cur_hz": _int(_read(node / "cur_freq")),
                "min_hz": _int(_read(node / "min_freq")),
                "max_hz": _int(_read(node / "max_freq")),
                "governor": _read(node / "governor"),
            }
    return None


def cpu_freqs(root: Path = Path("/")) -> list[dict[str, Any]]:
    """Per online CPU: cpufreq governor and current/min/max scaling frequency (kHz)."""
    out = []
    base = root / "sys/devices/system/cpu"
    if not base.is_dir():
        return out
    for cpu in sorted(base.glob("cpu[0-9]*"), key=lambda p: int(p.name[3:])):
        f = cpu / "cpufreq"
        if not f.is_dir():
            continue
        out.append({
            "cpu": cpu.name,
            "governor": _read(f / "scaling_governor"),
            "cur_khz": _int(_read(f / "scaling_cur_freq")),
            "min_khz": _int(_read(f / "scaling_min_freq")),
            "max_khz": _int(_read(f / "scaling_max_freq")),
        })
    return out


def clocks_locked(gpu: dict[str, Any] | None, cpus: list[dict[str, Any]]) -> bool | None:
    """True when GPU and every CPU have min == max frequency (what ``jetson_clocks`` sets); None when unreadable."""
    checks = []
    if gpu and gpu.get("min_hz") and gpu.get("max_hz"):
        checks.append(gpu["min_hz"] == gpu["max_hz"])
    for c in cpus:
        if c.get("min_khz") and c.get("max_khz"):
            checks.append(c["min_khz"] == c["max_khz"])
    return all(checks) if checks else None


STEADY_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling for the dynamic threshold on 64-bit


def steady_malloc() -> str | None:
    """Fix glibc malloc's thresholds for this process; return a description, or None where it does not apply.

    glibc serves large blocks (a 640x640 YOLO's activations are 1-13 MB) with fresh ``mmap`` pages and hands freed
    heap back to the OS, so an eager PyTorch forward pays page faults that depend on the *history* of allocations,
    and two models timed in one process pay different amounts. Measured here on yolov8s at 640 (PyTorch CPU, 2
    threads): the baseline ran at 369 ms by default and 301 ms with fixed thresholds, and a FINE model whose FINE
    layers were replaced by a pass-through, i.e. the baseline's compute, ran 4% slower than the baseline by default
    and at its speed with fixed thresholds. ``mallopt`` (same effect as ``MALLOC_MMAP_THRESHOLD_=33554432
    MALLOC_TRIM_THRESHOLD_=...`` set before start) keeps blocks up to 32 MB on the heap and never trims it. ONNX
    Runtime and TensorRT use their own arenas and are unaffected.
    """
    import ctypes
    import ctypes.util

    if platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        ok = libc.mallopt(m_mmap_threshold, STEADY_MMAP_THRESHOLD) == 1
        ok = libc.mallopt(m_trim_threshold, 2**31 - 1) == 1 and ok
    except (OSError, AttributeError):
        return None
    return "glibc mallopt: mmap threshold 32 MiB, no trim" if ok else None


def environment(root: Path = Path("/"), device: str = "cpu") -> dict[str, Any]:
    """Everything that decides a latency number: software versions, CPU, GPU, load and, on a Jetson, clocks."""
    import onnx
    import torch
    import ultralytics

    env: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(root),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "ultralytics": ultralytics.__version__,
        "onnx": onnx.__version__,
    }
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    try:
        env["loadavg"] = list(os.getloadavg())
    except OSError:
        env["loadavg"] = None
    from fine_yolo.export.trt_runtime import tensorrt_version

    env["tensorrt"] = tensorrt_version()
    env["cuda"] = torch.version.cuda
    from fine_yolo.devices import cuda_index

    index = cuda_index(device)
    if torch.cuda.is_available() and index is not None:
        env["gpu"] = torch.cuda.get_device_name(index)
        env["cudnn"] = torch.backends.cudnn.version()
    else:
        env["gpu"] = None
    env["jetson"] = jetson_info(root)
    return env


def warnings_for(env: dict[str, Any]) -> list[str]:
    """Conditions that make the numbers unreliable, one sentence each."""
    out = []
    j = env.get("jetson")
    if j is not None:
        if j.get("clocks_locked") is False:
            out.append("Jetson clocks are not locked (governors scale them with load): run `sudo nvpmodel -m 0` "
                       "(the maximum mode of your board, see `nvpmodel -q`) and `sudo jetson_clocks` before timing.")
        elif j.get("clocks_locked") is None:
            out.append("Jetson clock state unreadable: make sure `sudo jetson_clocks` ran before timing.")
    load, n = env.get("loadavg"), env.get("cpu_count") or 1
    if load and load[0] > 0.5 * n:
        out.append(f"the machine is busy (1-min load average {load[0]:.1f} on {n} CPUs): absolute latencies are "
                   "inflated; the interleaved baseline/FINE ratio is what stays comparable.")
    return out
