#!/usr/bin/env python
"""What the start-up hook costs every Python process: interpreter start with the hook on, off, and the hook alone.

    python scripts/bench_startup.py [runs=15] [json=startup.json]

Three measurements, interleaved so that they share the machine's state (medians of ``runs`` each):

* ``python -c pass`` with the hook on (``FINE_YOLO_HOOK`` unset) and off (``FINE_YOLO_HOOK=0``): the whole start;
* the hook alone: a fresh interpreter started with ``-S`` (no site-packages, so no ``.pth``) times executing the
  installed ``fine_yolo_startup.pth`` line itself. This is what the package adds over the same environment without
  it (the goal: within 1 ms) and what it adds when turned off (the switch is read before anything is imported);
* the modules the hook imports at start (a fresh interpreter's ``sys.modules`` with the hook on minus with it off).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from fine_yolo.args import Command, Option

PTH = Path(sysconfig.get_paths()["purelib"]) / "fine_yolo_startup.pth"
_HOOK_ALONE = """
import os, sys, time
sys.path[:0] = [{paths!r}]
line = open({pth!r}).read()
t0 = time.perf_counter()
exec(line)
print((time.perf_counter() - t0) * 1e3)
"""


def _wall_ms(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1e3


def _modules(env: dict[str, str]) -> set[str]:
    out = subprocess.run([sys.executable, "-c", "import sys; print('\\n'.join(sys.modules))"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return set(out.split())


def _run(args: dict, extra: dict) -> int:
    if not PTH.is_file():
        print(f"{PTH} is not installed: pip install -e . first", file=sys.stderr)
        return 1
    on = {k: v for k, v in os.environ.items() if k != "FINE_YOLO_HOOK"}
    off = {**on, "FINE_YOLO_HOOK": "0"}
    import fine_yolo

    package_root = str(Path(fine_yolo.__file__).resolve().parents[1])
    alone = [sys.executable, "-S", "-c", _HOOK_ALONE.format(paths=package_root, pth=str(PTH))]
    samples: dict[str, list[float]] = {"start, hook on": [], "start, hook off": [], "hook alone": [],
                                       "hook alone, off": []}
    for _ in range(args["runs"]):
        samples["start, hook on"].append(_wall_ms([sys.executable, "-c", "pass"], on))
        samples["start, hook off"].append(_wall_ms([sys.executable, "-c", "pass"], off))
        samples["hook alone"].append(float(subprocess.run(alone, env=on, check=True, capture_output=True,
                                                          text=True).stdout))
        samples["hook alone, off"].append(float(subprocess.run(alone, env=off, check=True, capture_output=True,
                                                               text=True).stdout))
    extra = sorted(_modules(on) - _modules(off))
    print(f"{'measurement':<18} {'median (ms)':>12}   ({args['runs']} runs each, interleaved)")
    for name, xs in samples.items():
        print(f"{name:<18} {statistics.median(xs):>12.3f}")
    print(f"modules the hook imports at start: {', '.join(extra) or 'none'}")
    if args["json"]:
        Path(args["json"]).write_text(json.dumps({"samples_ms": samples, "modules": extra}, indent=1))
    return 0


COMMAND = Command(
    options={"runs": Option(15, "runs per measurement"), "json": Option("", "also write the raw samples here")},
    run=_run,
    example="python scripts/bench_startup.py runs=15 json=startup.json",
    description=__doc__.split("\n\n", 2)[2],
)


if __name__ == "__main__":
    sys.exit(COMMAND.main(sys.argv[1:], "python scripts/bench_startup.py"))
