"""FINE's initialisation on fine-synth (docs/fine_synth_study.md, "Does the identity start hold FINE back?").

All variants fine-tune ``yolov8n-fine.yaml`` for 10 epochs from one 20-epoch ``yolov8n`` checkpoint (``base=``), seeds
0-4, exactly like the FINE arm of ``fine-yolo compare ... pretrained=BASE epochs=10`` (the same train arguments), so
each is paired with that comparison's baseline arm (``baseline_eval=`` its ``PROJECT/eval``):

    trajectory  the shipped identity start (W_O = 0, b_O = 0); logs b_O and ||W_O|| and the param-group learning
                rates after every optimizer step of seed 0 (``trajectory.json``)
    default     W_O and b_O at PyTorch's default initialisation (``FINE(..., zero_init=False)``): no identity start
    sharp       the identity start, with W_Q, b_Q and W_K scaled by 4.5 so the attention logits spread by ~1
                instead of ~0.05 (near-uniform softmax)

    python research/fine_synth_init_experiment.py run variant=default base=BASE.pt out=runs/why/init
    python research/fine_synth_init_experiment.py report variant=default out=runs/why/init baseline_eval=P/eval

The variants change FINE only inside this process (a patched constructor), never in the package. Cost: about
2.5 minutes a run on a quiet 2-core CPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fine_yolo.args import Command, Option, split_list

SHARPEN = 4.5  # logit spread measured 0.04-0.06 on the trained blocks; x4.5 on Q and K gives ~20x the spread


def _patch(variant: str) -> None:
    import torch

    from fine_yolo.nn.fine import FINE

    original = FINE.__init__

    def init(self, c_low, c_high, k=1, r=2, head_dim=16, zero_init=True):
        original(self, c_low, c_high, k, r, head_dim, zero_init=variant != "default")
        if variant == "sharp":
            with torch.no_grad():
                self.q.weight.mul_(SHARPEN)
                self.q.bias.mul_(SHARPEN)
                self.kv.weight[: self.c_low].mul_(SHARPEN)  # the K half of the shared K/V convolution

    FINE.__init__ = init


def run(args: dict) -> None:
    from ultralytics import YOLO

    variant, out = args["variant"], Path(args["out"]).resolve()
    _patch(variant)
    common = dict(data="fine-synth.yaml", epochs=10, imgsz=256, batch=16, workers=0, device="cpu", plots=False,
                  amp=False, deterministic=True, pretrained=str(Path(args["base"]).resolve()), exist_ok=True,
                  project=str(out))
    for seed in split_list(args["seeds"], "seeds", int):
        name = f"{variant}-seed{seed}"
        if (out / name / "weights" / "best.pt").is_file():
            continue
        model = YOLO("yolov8n-fine.yaml")
        trajectory: list[dict] = []
        if variant == "trajectory" and seed == 0:
            def log(trainer, trajectory=trajectory):
                row = {"step": len(trajectory), "lr": [g["lr"] for g in trainer.optimizer.param_groups]}
                for block in ("fine11", "fine14"):  # the FINE of fusion rows 11 and 14
                    f = trainer.model.model[int(block[4:])].fine
                    row[block] = {"b_O max|.|": f.out.bias.abs().max().item(), "||W_O||": f.out.weight.norm().item()}
                trajectory.append(row)

            model.add_callback("on_train_batch_end", log)
        model.train(seed=seed, name=name, **common)
        if trajectory:
            (out / "trajectory.json").write_text(json.dumps(trajectory))


def report(args: dict) -> None:
    from fine_yolo.compare.evaluate import EvalSettings, evaluate_run
    from fine_yolo.compare.plan import RunSpec
    from fine_yolo.compare.stats import paired, verdict
    from fine_yolo.eval.errors import analyze

    out, base_eval = Path(args["out"]).resolve(), Path(args["baseline_eval"])
    settings = EvalSettings(data="fine-synth.yaml", imgsz=256, batch=16, conf=args["conf"])
    fine_ap, base_ap, fine_c, base_c = [], [], [], []
    for seed in split_list(args["seeds"], "seeds", int):
        name = f"{args['variant']}-seed{seed}"
        spec = RunSpec(seed, "fine", "yolov8n-fine.yaml", {"project": str(out), "name": name})
        r = evaluate_run(spec, settings, out / "eval", "cpu", 0)
        b = json.loads((base_eval / f"seed{seed}-baseline" / "eval.json").read_text())["result"]
        fine_ap.append(r["coco"]["AP50:95"])
        base_ap.append(b["coco"]["AP50:95"])
        eb = analyze(b["val"]["pred"], b["val"]["gt"], conf=args["conf"]).to_dict()
        fine_c.append([r["errors"][k] for k in ("tp", "fp", "fn")])
        base_c.append([eb[k] for k in ("tp", "fp", "fn")])
    print(f"{args['variant']}: FINE AP50:95 {[round(v, 4) for v in fine_ap]}, "
          f"baseline {[round(v, 4) for v in base_ap]}")
    print(verdict("AP50:95", paired(fine_ap, base_ap), scale=100, unit="points"))
    for i, name in enumerate(("TP", "FP", "FN")):
        p = paired([c[i] for c in fine_c], [c[i] for c in base_c])
        print(verdict(name, p, higher_is_better=name == "TP", unit=f"boxes at conf {args['conf']}"))


COMMAND = Command(
    options={
        "variant": Option("default", "which initialisation", choices=("trajectory", "default", "sharp")),
        "base": Option("", "run: the 20-epoch baseline checkpoint both arms start from"),
        "out": Option("runs/why/init", "run directory"),
        "seeds": Option("0,1,2,3,4", "seeds"),
        "baseline_eval": Option("", "report: the comparison's eval/ folder with the baseline arm's eval.json"),
        "conf": Option(0.1, "report: confidence threshold of the TP/FP/FN counts"),
    },
    run=lambda a, e: 0,
    example="python research/fine_synth_init_experiment.py run variant=sharp base=runs/measure/base/weights/best.pt",
    description=__doc__.split("\n\n")[0],
)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "report") or COMMAND.wants_help(argv):
        print(__doc__ + "\n" + COMMAND.usage("python research/fine_synth_init_experiment.py run|report"))
        return 0 if argv and COMMAND.wants_help(argv) else 2
    args, _ = COMMAND.parse(argv[1:])
    (run if argv[0] == "run" else report)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
