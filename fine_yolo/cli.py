"""The ``fine-yolo`` console script: FINE's own subcommands, otherwise exactly ``yolo``.

``fine-yolo train model=yolov8s-fine.yaml data=coco.yaml`` behaves like ``yolo train ...``, and knows FINE even with
the start-up hook disabled (``FINE_YOLO_HOOK=0``): importing this module imports fine_yolo, which registers FINE.
FINE's own subcommands take the same ``key=value`` arguments as ``yolo`` (:mod:`fine_yolo.args`); each lives in its
own module as a ``COMMAND`` and is imported only when called, so ``fine-yolo --help`` stays fast.
:meth:`fine_yolo.args.Command.main` turns errors into messages and exit codes: a
:class:`fine_yolo.errors.FineYoloError` becomes ``fine-yolo <name>: <message>`` and its ``exit_code`` (2 for usage
errors, 1 otherwise).
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> (module defining COMMAND, one-line summary)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("fine_yolo.demo", "seed-controlled yolov8n-fine vs yolov8n on the embedded data (CPU, offline)"),
    "yaml": ("fine_yolo.models", "write the FINE YAML of any model YAML (yours, or ultralytics' by name)"),
    "compare": ("fine_yolo.compare.command", "paired, seed-controlled FINE vs baseline training and evaluation"),
    "errors": ("fine_yolo.eval.errors", "TP/FP/FN (paper Table 5) and TIDE error types of one or two models"),
    "synth": ("fine_yolo.data.synthetic", "generate the embedded context-dependent dataset"),
    "visdrone": ("fine_yolo.data.visdrone", "convert a downloaded VisDrone2019-DET tree to YOLO format"),
    "coco-eval": ("fine_yolo.eval.coco", "COCO AP of a predictions.json with pycocotools"),
    "check-onnx": ("fine_yolo.export.trt_check", "offline TensorRT 10.3 compatibility check of an ONNX file"),
    "export": ("fine_yolo.export.engine", "`yolo export`, with a clear answer when TensorRT is absent"),
    "bench": ("fine_yolo.bench.latency", "interleaved baseline-vs-FINE latency benchmark"),
    "int8": ("fine_yolo.export.int8_eval", "INT8 (ONNX Runtime QDQ, OpenVINO NNCF) and its AP; FINE kept in float"),
    "attention-cost": ("fine_yolo.analysis.attention_cost", "AATS vs vanilla attention cost (paper Table 3)"),
    "ablate": ("fine_yolo.analysis.ablate", "the paper's ablations (Tables 3, 4, 6, Fig. 5): cost, and AP with data="),
    "flops": ("fine_yolo.analysis.complexity", "params and GFLOPs (attention included) of models side by side"),
    "heatmaps": ("fine_yolo.analysis.heatmaps", "F_high, F_low, M and F_low_aligned of every FINE block (Fig. 8)"),
    "erf": ("fine_yolo.analysis.erf", "effective receptive fields of the AATS tokens for r = 1, 2, 4 (Fig. 6, App. F)"),
    "reproduce": ("fine_yolo.recipes", "the paper's training recipes: table1 (COCO), table8 (VisDrone), finetune"),
}


def _usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = ["usage: fine-yolo <subcommand> key=value ...   (fine-yolo <subcommand> help: its keys)", "",
             "FINE subcommands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines += ["", "Anything else goes to ultralytics, e.g. `fine-yolo train model=yolov8s-fine.yaml data=coco.yaml`."]
    return "\n".join(lines)


def _offline_defaults() -> None:
    # FINE's own subcommands never download: ultralytics would fetch fonts/assets and pip-install missing packages.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    # NNCF (`fine-yolo int8`, OpenVINO int8 export) reports usage unless this, its own switch, is set; it changes
    # nothing else in NNCF. OpenVINO's model converter has no such switch (README, "Offline use").
    os.environ.setdefault("NNCF_CI", "1")


def run_subcommand(name: str, argv: list[str]) -> int:
    """Parse ``argv`` for subcommand ``name`` and run it; errors become a message on stderr and an exit code."""
    module, summary = SUBCOMMANDS[name]
    command = importlib.import_module(module).COMMAND
    return command.main(argv, f"fine-yolo {name}", summary, before_run=_offline_defaults)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fine-yolo`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] in {"-h", "--help", "help"} and len(argv) == 1):
        print(_usage())
        return 0
    if argv[0] in SUBCOMMANDS:
        return run_subcommand(argv[0], argv[1:])
    # Everything else is ultralytics' own CLI (FINE is registered: this module's package installed the hook).
    from ultralytics.cfg import entrypoint

    sys.argv = ["yolo", *argv]
    entrypoint()
    return 0


if __name__ == "__main__":
    sys.exit(main())
