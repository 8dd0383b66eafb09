"""The ``fine-yolo`` console script: FINE's own subcommands, otherwise exactly ``yolo``.

``fine-yolo train model=yolov8s-fine.yaml data=coco.yaml`` behaves like ``yolo train ...`` with FINE registered
explicitly (useful when the start-up hook is disabled with ``FINE_YOLO_HOOK=0``). FINE's own subcommands take the
same ``key=value`` arguments as ``yolo``. Each subcommand lives in its own module and is imported only when called,
so ``fine-yolo --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

# name -> ("module:function", one-line help). Each function takes the raw argv list after the subcommand name and
# returns a process exit code.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("fine_yolo.demo:main", "train/val/export yolov8n-fine and its baseline on the embedded data (CPU)"),
    "synth": ("fine_yolo.data.synthetic:main", "generate the embedded context-dependent dataset"),
    "visdrone": ("fine_yolo.data.visdrone:main", "convert a downloaded VisDrone2019-DET tree to YOLO format"),
    "coco-eval": ("fine_yolo.eval.coco:main", "COCO AP of a predictions.json with pycocotools"),
    "check-onnx": ("fine_yolo.export.trt_check:main", "offline TensorRT 10.3 compatibility check of an ONNX file"),
    "export": ("fine_yolo.export.engine:main", "`yolo export`, with a clear answer when TensorRT is absent"),
    "bench": ("fine_yolo.bench.latency:main", "interleaved baseline-vs-FINE latency benchmark"),
    "attention-cost": ("fine_yolo.analysis.attention_cost:main", "AATS vs vanilla attention cost (paper Table 3)"),
    "flops": ("fine_yolo.analysis.complexity:main", "params and GFLOPs (attention included) of models side by side"),
}


class UsageError(ValueError):
    """A command-line argument is missing or malformed; the message names it."""


def parse_kv(argv: list[str], defaults: dict[str, object] | None = None, required: tuple[str, ...] = ()) -> dict:
    """Parse ``yolo``-style ``key=value`` arguments into a dict, typed after ``defaults``.

    A value is converted to the type of its default (bool accepts true/false/1/0/yes/no). Unknown keys, a token
    without ``=`` and missing ``required`` keys raise :class:`UsageError` naming the offending token.
    """
    defaults = dict(defaults or {})
    out: dict[str, object] = dict(defaults)
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise UsageError(f"argument '{token}' is not key=value")
        if defaults and key not in defaults and key not in required:
            raise UsageError(f"unknown argument '{key}' (known: {', '.join(sorted({*defaults, *required}))})")
        default = defaults.get(key)
        if isinstance(default, bool):
            low = value.lower()
            if low not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise UsageError(f"argument '{key}={value}' must be true or false")
            out[key] = low in {"1", "true", "yes", "on"}
        elif isinstance(default, int) and not isinstance(default, bool):
            try:
                out[key] = int(value)
            except ValueError:
                raise UsageError(f"argument '{key}={value}' must be an integer") from None
        elif isinstance(default, float):
            try:
                out[key] = float(value)
            except ValueError:
                raise UsageError(f"argument '{key}={value}' must be a number") from None
        else:
            out[key] = value
    missing = [k for k in required if out.get(k) in (None, "")]
    if missing:
        raise UsageError(f"missing required argument(s): {', '.join(f'{k}=...' for k in missing)}")
    return out


def _usage() -> str:
    lines = ["usage: fine-yolo <subcommand> key=value ...", "", "FINE subcommands:"]
    lines += [f"  {name:<15} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Anything else goes to ultralytics, e.g. `fine-yolo train model=yolov8s-fine.yaml data=coco.yaml`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fine-yolo`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in {"-h", "--help", "help"} and len(argv) == 1:
        print(_usage())
        return 0
    if argv and argv[0] in SUBCOMMANDS:
        target, _ = SUBCOMMANDS[argv[0]]
        module, _, func = target.partition(":")
        from fine_yolo.export.engine import EngineUnavailableError

        try:
            return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
        except UsageError as e:
            print(f"fine-yolo {argv[0]}: {e}", file=sys.stderr)
            return 2
        except EngineUnavailableError as e:  # a TensorRT step this machine cannot run: one sentence, no traceback
            print(f"fine-yolo {argv[0]}: {e}", file=sys.stderr)
            return 1
    # Everything else is ultralytics' own CLI, with FINE registered first.
    from fine_yolo.ultralytics_glue import register

    register()
    from ultralytics.cfg import entrypoint

    sys.argv = ["yolo", *argv]
    entrypoint()
    return 0


if __name__ == "__main__":
    sys.exit(main())
