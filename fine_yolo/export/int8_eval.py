"""``fine-yolo int8``: post-training INT8 of a trained checkpoint with ONNX Runtime (QDQ) and OpenVINO (NNCF), and
pycocotools AP of every variant next to FP32 on the same split.

    fine-yolo int8 model=runs/detect/train/weights/best.pt data=my.yaml imgsz=640 keep=none,fine
    fine-yolo int8 model=best.pt data=my.yaml imgsz=640 sensitivity=True     # + every FINE group left out alone

Steps: ultralytics exports the FP32 ONNX (``simplify=True``) and OpenVINO IR of ``model`` at ``imgsz`` into ``out``;
``calib`` images of ``calib_split`` (default ``train``, all images) are letterboxed as the predictor does
(:func:`fine_yolo.export.int8.calibration_arrays`); for each ``keep`` recipe (``none``: everything ultralytics'
rules quantise; ``fine``: FINE left in float; ``fine11``...: one group left in float, the per-layer sensitivity
``sensitivity=True`` adds) both quantisers write an INT8 model (:mod:`fine_yolo.export.int8`). Each FP32 and INT8
file is then validated by ultralytics (``YOLO(file).val(save_json=True)``, :func:`fine_yolo.eval.predictions.
val_predictions`) and scored with pycocotools (:func:`fine_yolo.eval.coco.evaluate`): the same evidence tools as
``fine-yolo compare``. ``YOLO(ir).val`` runs the OpenVINO IR at the plugin's default precision (bf16 on AMX CPUs):
its "FP32" row is the FP32 IR as deployed, and ONNX Runtime's FP32 row is the float32 reference.

``engine=True`` (on a machine with an NVIDIA GPU and TensorRT) builds a TensorRT engine from each QDQ file with
ultralytics' ``onnx2engine``: INT8 where the Q/DQ pairs are, FP16 elsewhere, so ``keep=fine`` keeps FINE in FP16.

Output: a markdown table (AP50:95, AP50, and the INT8 drop against the same runtime's FP32 row, in points), JSON
``out/int8.json``, and ``out/trt_layer_precisions.txt`` (FINE's nodes as ``name:fp16`` for ``trtexec
--layerPrecisions``; the QDQ files with ``keep=fine`` are the explicit-quantisation recipe for TensorRT).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from fine_yolo.args import Command, Option, split_list
from fine_yolo.errors import UsageError
from fine_yolo.tables import markdown_table, num, signed

RUNTIMES = ("onnx", "openvino")


def _export(model: str, fmt: str, imgsz: int, out: Path) -> Path:
    from fine_yolo.export.engine import export_model

    path = Path(export_model(model, fmt, check=False, verbose=False, imgsz=imgsz, device="cpu", dynamic=False,
                             **({"simplify": True} if fmt == "onnx" else {})))
    dest = out / ("fp32.onnx" if fmt == "onnx" else "fp32_openvino_model")
    if dest.is_dir():
        shutil.rmtree(dest)
    shutil.move(str(path), dest)
    return dest


def evaluate_file(path: Path, data: str, imgsz: int, split: str, project: Path, name: str) -> dict[str, Any]:
    """pycocotools AP of one exported file on ``split`` (ultralytics' val predictions, conf 0.001)."""
    from fine_yolo.eval.coco import AP_KEYS, evaluate
    from fine_yolo.eval.predictions import val_predictions

    val = val_predictions(path, data, split=split, imgsz=imgsz, device="cpu", project=project,
                          name=name, batch=1, workers=0)
    if json.loads(Path(val["pred"]).read_text()) == []:  # nothing detected: every AP is 0 (pycocotools refuses it)
        coco = dict.fromkeys(AP_KEYS, 0.0)
    else:
        coco = dict(evaluate(val["pred"], val["gt"], cats="auto", verbose=False)["metrics"])
    return {"coco": coco, "val_map50_95": val["map50_95"], "val_map50": val["map50"]}


def run_int8(model: str, data: str, imgsz: int = 640, runtimes: tuple[str, ...] = RUNTIMES,
             keep: tuple[str, ...] = ("none", "fine"), sensitivity: bool = False, calib: int = 0,
             calib_split: str = "train", seed: int = 0, split: str = "val", evaluate: bool = True,
             engine: bool = False, device: str = "0", out: str | Path = "runs/fine_int8") -> dict[str, Any]:
    """Export, quantise and (``evaluate``) score every variant; return the result dict (module doc).

    ``engine=True`` also builds a TensorRT engine from each QDQ file on CUDA ``device`` (checked before anything
    else runs: without a GPU and TensorRT it stops with one sentence)."""
    from tqdm import tqdm

    from fine_yolo.export.int8 import (
        calibration_arrays,
        calibration_files,
        engine_from_qdq,
        fine_nodes,
        quantize_onnx,
        quantize_openvino,
        trt_layer_precisions,
    )
    if engine:
        from fine_yolo.export.preflight import engine_preflight

        engine_preflight(model, device, imgsz)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fp32 = {rt: _export(model, rt, imgsz, out) for rt in runtimes}
    groups = fine_nodes(fp32.get("onnx") or fp32["openvino"])
    recipes = list(dict.fromkeys([*keep, *(groups if sensitivity else [])]))
    if not groups:  # a baseline: nothing to keep, one INT8 variant
        recipes = ["none"]
    files = calibration_files(data, calib_split, calib, seed)
    arrays = calibration_arrays(files, imgsz)
    variants: list[dict[str, Any]] = [{"runtime": rt, "precision": "fp32", "keep": None, "path": str(p)}
                                      for rt, p in fp32.items()]
    for rt in runtimes:
        for r in tqdm(recipes, desc=f"INT8 {rt}", leave=False):
            tag = f"int8_keep-{r}"
            if rt == "onnx":
                info = quantize_onnx(fp32[rt], out / f"{tag}.onnx", arrays, keep=r)
                if engine:  # INT8 where the Q/DQ pairs are, FP16 elsewhere (FINE too, with keep=fine)
                    info["engine"] = str(engine_from_qdq(info["path"], imgsz, device))
            else:
                info = quantize_openvino(fp32[rt], out / f"{tag}_openvino_model", arrays, keep=r)
            variants.append({"runtime": rt, "precision": "int8", "keep": r, **info})
    trt_list = None
    if groups and "onnx" in fp32:
        trt_list = out / "trt_layer_precisions.txt"
        trt_list.write_text(",".join(trt_layer_precisions(fp32["onnx"], "fine")) + "\n")
    if evaluate:
        for v in tqdm(variants, desc="val + pycocotools", leave=False):
            name = f"{v['runtime']}_{v['precision']}" + (f"_keep-{v['keep']}" if v["keep"] else "")
            v["metrics"] = evaluate_file(Path(v["path"]), data, imgsz, split, out / "eval", name)
    return {"args": {"model": model, "data": data, "imgsz": imgsz, "runtimes": list(runtimes), "keep": recipes,
                     "calib": len(files), "calib_split": calib_split, "seed": seed, "split": split},
            "fine_groups": {g: len(n) for g, n in groups.items()}, "variants": variants,
            "trt_layer_precisions": str(trt_list) if trt_list else None, "seconds": time.perf_counter() - t0}


def markdown(result: dict[str, Any]) -> str:
    """The variants as a table: AP50:95, AP50 (points) and the INT8 drop against the same runtime's FP32 row."""
    a = result["args"]
    ref = {v["runtime"]: v["metrics"]["coco"] for v in result["variants"]
           if v["precision"] == "fp32" and "metrics" in v}
    rows = []
    for v in result["variants"]:
        m = v.get("metrics", {}).get("coco")
        base = ref.get(v["runtime"])
        what = "FP32" if v["precision"] == "fp32" else f"INT8, keep={v['keep']}"
        if v["runtime"] == "openvino" and v["precision"] == "fp32":
            what = "FP32 IR (run at the plugin's default precision)"
        rows.append([{"onnx": "ONNX Runtime", "openvino": "OpenVINO"}[v["runtime"]], what,
                     num(m and 100 * m["AP50:95"], ".1f"), num(m and 100 * m["AP50"], ".1f"),
                     signed(m and base and 100 * (m["AP50:95"] - base["AP50:95"]), ".1f")
                     if v["precision"] == "int8" else None])
    head = (f"**{Path(a['model']).name}** at {a['imgsz']} px, {a['split']} split; INT8 calibrated on {a['calib']} "
            f"{a['calib_split']} images")
    return "\n".join([head, "", markdown_table(["runtime", "model", "AP50:95", "AP50", "INT8 - FP32 (AP50:95)"],
                                               rows)])


def _run(args: dict[str, Any], extra: dict[str, Any]) -> int:
    runtimes = tuple(split_list(args["runtime"], "runtime"))
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad:
        raise UsageError(f"runtime={args['runtime']}: {', '.join(bad)} is not one of {', '.join(RUNTIMES)}")
    out = Path(args["out"] or f"runs/fine_int8/{Path(args['model']).stem}")
    result = run_int8(args["model"], args["data"], imgsz=args["imgsz"], runtimes=runtimes,
                      keep=tuple(split_list(args["keep"], "keep")), sensitivity=args["sensitivity"],
                      calib=args["calib"], calib_split=args["calib_split"], seed=args["seed"], split=args["split"],
                      evaluate=args["eval"], engine=args["engine"], device=args["device"], out=out)
    if args["eval"]:
        print(markdown(result))
    path = Path(args["json"] or out / "int8.json")
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nmodels and JSON: {path}")
    return 0


COMMAND = Command(
    options={
        "model": Option("", "trained checkpoint (.pt) or YAML", required=True),
        "data": Option("", "dataset YAML (calibration and evaluation)", required=True),
        "imgsz": Option(640, "export, calibration and evaluation size"),
        "runtime": Option("onnx,openvino", "onnx (ONNX Runtime QDQ) and/or openvino (NNCF)"),
        "keep": Option("none,fine", "INT8 recipes: FINE groups left in float (none, fine, fine<row>: fine11, ...)"),
        "sensitivity": Option(False, "also each FINE group alone left in float (quantise all but one)"),
        "calib": Option(0, "calibration images (0: the whole split)"),
        "calib_split": Option("train", "split the calibration images come from"),
        "seed": Option(0, "which calibration images when calib < the split's size"),
        "split": Option("val", "split evaluated"),
        "eval": Option(True, "validate and score every file (False: only write them)"),
        "engine": Option(False, "also build a TensorRT engine from each QDQ file (explicit quantisation; GPU)"),
        "device": Option("0", "CUDA device of engine=True"),
        "out": Option("", "output folder (default runs/fine_int8/<model stem>)"),
        "json": Option("", "result JSON (default out/int8.json)"),
    },
    run=_run,
    example="fine-yolo int8 model=best.pt data=fine-synth.yaml imgsz=256 sensitivity=True",
    description="INT8 (ONNX Runtime QDQ, OpenVINO NNCF) of a checkpoint, FINE optionally kept in float, with "
                "pycocotools AP of every variant next to FP32.",
)
