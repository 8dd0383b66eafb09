"""`fine-yolo ablate`: the variant lists and YAMLs, the cost tables end to end through the console script on a tiny
model, and the accuracy part's plan and summary (which runs it makes, what it reports) without training."""

from __future__ import annotations

import copy
import json
import subprocess

import pytest
import yaml
from conftest import offline_env, script

from fine_yolo.analysis import ablate
from fine_yolo.analysis.ablate import Stage
from fine_yolo.errors import UsageError

# yolov8n's FINE rows: P4 <- P5 (C = 128, k = 1), P3 <- P4 (C = 64, k = 2); r = 2, d = 16
V8N = [Stage(128, 1, 2, 16), Stage(64, 2, 2, 16)]


def test_tables_and_their_variants_in_the_papers_order():
    assert ablate.parse_tables("all") == ["3", "5", "4", "6"]
    assert ablate.parse_tables("6,3") == ["3", "6"]
    assert [v.name for v in ablate.table_variants("3")] == ["vanilla", "window", "area", "linear", "aats"]
    assert [v.name for v in ablate.table_variants("5")] == ["r1k1", "r1k2", "r2k1", "r2k2", "r4k1", "r4k2", "shipped"]
    assert [v.name for v in ablate.table_variants("4")] == ["d256", "d64", "d32", "d16", "d8", "d4", "d2"]
    assert [v.name for v in ablate.table_variants("6")] == ["dwconv", "max", "avg"]
    assert [v.name for v in ablate.select(["3", "6"], "vanilla,max")] == ["vanilla", "max"]
    with pytest.raises(UsageError, match=r"table=7' must be one of 3, 4, 5, 6, all"):
        ablate.parse_tables("7")
    with pytest.raises(UsageError, match=r"no variant d16 in table\(s\) 3 \(known: vanilla, window"):
        ablate.select(["3"], "aats,d16")


@pytest.mark.parametrize(("name", "expected"), [
    ("window", [[1, 2, 16, "window", "avg"], [1, 2, 16, "window", "avg"]]),  # no token sampling: k=1 at both stages
    ("aats", [[1, 2, 16, "aats", "avg"], [2, 2, 16, "aats", "avg"]]),  # the model as shipped
    ("r4k1", [[1, 4, 16, "aats", "avg"], [1, 4, 16, "aats", "avg"]]),  # Fig. 5: the same k at every stage
    ("shipped", [[1, 2, 16, "aats", "avg"], [2, 2, 16, "aats", "avg"]]),
    ("d256", [[1, 2, 128, "aats", "avg"], [2, 2, 64, "aats", "avg"]]),  # d = min(256, C): one head per stage
    ("d2", [[1, 2, 2, "aats", "avg"], [2, 2, 2, "aats", "avg"]]),
    ("dwconv", [[1, 2, 16, "aats", "dwconv"], [2, 2, 16, "aats", "dwconv"]]),
])
def test_variant_rows_per_stage(name, expected):
    v = next(v for t in ablate.TABLES for v in ablate.table_variants(t) if v.name == name)
    assert [v.stage_args(s) for s in V8N] == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("window", [[1, 2, 16, "window", "avg"], [1, 2, 16, "window", "avg"]]),
    ("d256", [[1, 2, 128, "aats", "avg"], [2, 2, 64, "aats", "avg"]]),  # per stage: P4 <- P5 first, then P3 <- P4
])
def test_variant_yaml_rewrites_only_the_fine_rows(name, expected):
    base = ablate.model_yaml("yolov8n-fine.yaml")  # ultralytics' dict: yolov8-fine.yaml at scale n
    assert base["scale"] == "n" and base["yaml_file"] == "yolov8n-fine.yaml"
    shipped = copy.deepcopy(base)
    v = next(v for t in ablate.TABLES for v in ablate.table_variants(t) if v.name == name)
    out = ablate.variant_yaml(base, v, V8N)
    assert base == shipped  # the model's dict is not modified
    assert set(out) == set(base) - {"yaml_file"} and out["scale"] == "n" and out["scales"] == base["scales"]
    rows_a, rows_b = base["backbone"] + base["head"], out["backbone"] + out["head"]
    assert len(rows_a) == len(rows_b) == 23
    fine = [i for i, r in enumerate(rows_a) if r[2] == "FINEConcat"]
    assert fine == [11, 14] and [rows_a[i][3] for i in fine] == [[], []]  # the placement rule's
    assert [rows_b[i] for i in fine] == [[[-1, 6], 1, "FINEConcat", expected[0]],
                                         [[-1, 4], 1, "FINEConcat", expected[1]]]
    assert [r for i, r in enumerate(rows_b) if i not in fine] == [r for i, r in enumerate(rows_a) if i not in fine]
    with pytest.raises(ablate.AblateError, match="found 2 FINE rows .* 3 FINE blocks"):
        ablate.variant_yaml(base, v, [*V8N, V8N[0]])


def test_model_yaml_names_a_bad_model():
    with pytest.raises(UsageError, match="model=yolov8n-fine.pt': ablate rewrites a FINE model YAML's rows"):
        ablate.model_yaml("yolov8n-fine.pt")
    with pytest.raises(UsageError, match="model=nope-fine.yaml': no such model YAML"):
        ablate.model_yaml("nope-fine.yaml")


def test_variant_yamls_build_at_the_models_scale_with_the_variants_fine(tmp_path):
    """yolov8s (not the YAML's first scale n, which a lost scale would build): every variant file keeps the scale
    letter in its name, builds with the model's FINE channels and carries the variant's arguments per block."""
    from ultralytics.nn.tasks import guess_model_scale, yaml_model_load

    from fine_yolo.models import build
    from fine_yolo.nn import FINE

    model = "yolov8s-fine.yaml"
    stages = ablate.read_stages(model)
    assert stages == [Stage(256, 1, 2, 16), Stage(128, 2, 2, 16)]
    variants = ablate.select(["3", "4", "5", "6"], "window,d256,r4k1,max")
    base = ablate.model_yaml(model)
    paths = ablate.write_yamls(base, variants, stages, tmp_path)
    assert paths == {v.name: tmp_path / "yaml" / f"yolov8s-fine-{v.name}.yaml" for v in variants}
    shipped = [(m.c_low, m.c_high) for m in build(model).model.modules() if isinstance(m, FINE)]
    assert shipped == [(256, 512), (128, 256)]
    for v in variants:
        path = paths[v.name]
        assert path.read_text().startswith(f"# fine-yolo ablate: {model} with FINE rows as variant {v.name} (")
        assert guess_model_scale(path) == "s" and yaml.safe_load(path.read_text())["scale"] == "s"
        loaded = yaml_model_load(path)  # the file as ultralytics reads it is the variant's dict
        assert {k: x for k, x in loaded.items() if k != "yaml_file"} == ablate.variant_yaml(base, v, stages)
        fines = [m for m in build(str(path)).model.modules() if isinstance(m, FINE)]
        assert [(m.c_low, m.c_high) for m in fines] == shipped
        assert [[m.k, m.r, m.head_dim, m.attention, m.pool] for m in fines] == [v.stage_args(s) for s in stages]
    assert [v.stage_args(s) for s in stages for v in variants if v.name == "d256"] == [
        [1, 2, 256, "aats", "avg"], [2, 2, 128, "aats", "avg"]]


def test_accuracy_plan_shares_the_baseline_runs_and_trains_each_distinct_model_once(tmp_path):
    variants = ablate.select(["3", "6"], "")
    paths = {v.name: tmp_path / f"yolov8n-fine-{v.name}.yaml" for v in variants}
    plan, arms = ablate.accuracy_plan("yolov8n.yaml", variants, V8N, paths, [0, 1], tmp_path / "acc",
                                      {"data": "d.yaml", "epochs": 3, "imgsz": 64, "batch": 4})
    # avg builds exactly what aats builds: trained once, under the first name
    assert arms == {"vanilla": "vanilla", "window": "window", "area": "area", "linear": "linear", "aats": "aats",
                    "dwconv": "dwconv", "max": "max", "avg": "aats"}
    names = [r.name for r in plan.runs]
    assert names[:2] == ["seed0-baseline", "seed1-baseline"] and len(names) == 2 + 7 * 2
    assert "seed1-dwconv" in names and not any(n.endswith("-avg") for n in names)
    base = plan.run(0, "baseline")
    for r in plan.runs:  # every run: the same train arguments but the model and the name
        assert {k: v for k, v in r.args.items() if k not in ("model", "name", "seed")} == \
            {k: v for k, v in base.args.items() if k not in ("model", "name", "seed")}
        assert r.args["name"] == r.name and r.run_dir == tmp_path.resolve() / "acc" / "runs" / r.name
    assert plan.run(1, "window").args["model"] == str(paths["window"]) and base.args["model"] == "yolov8n.yaml"


def _result(ap: float) -> dict:
    coco = {"AP50:95": ap, "AP50": 2 * ap, "AP75": ap / 2, "APs": ap, "APm": None, "APl": None}
    return {"coco": coco, "errors": {"images": 4, "tp": 10, "fp": 2, "fn": 3, "precision": 10 / 12,
                                     "recall": 10 / 13, "f1": 20 / 25}}


def test_accuracy_summary_pairs_each_variant_with_the_shared_baseline(tmp_path):
    variants = ablate.select(["6"], "")
    paths = {v.name: tmp_path / f"{v.name}.yaml" for v in variants}
    plan, arms = ablate.accuracy_plan("yolov8n.yaml", variants, V8N, paths, [0, 1, 2], tmp_path,
                                      {"data": "d.yaml", "epochs": 1})
    ap = {"baseline": [0.30, 0.31, 0.29], "dwconv": [0.32, 0.33, 0.30], "max": [0.30, 0.30, 0.30],
          "avg": [0.29, 0.31, 0.29]}
    results = {f"seed{s}-{arm}": _result(v[s]) for arm, v in ap.items() for s in range(3)}
    summary = ablate.accuracy_summary(plan, arms, results)
    assert set(summary) == {"dwconv", "max", "avg"} and arms == {"dwconv": "dwconv", "max": "max", "avg": "avg"}
    e = summary["dwconv"]["AP50:95"]
    assert e["baseline"] == ap["baseline"] and e["fine"] == ap["dwconv"]
    # d = [2, 2, 1] points: mean 5/3, sd 0.57735, t_{0.975,2} = 4.3027 -> half width 1.4343
    assert e["paired"]["mean"] == pytest.approx(0.05 / 3)
    assert e["paired"]["low"] == pytest.approx(0.05 / 3 - 0.014343, abs=1e-5)
    assert e["verdict"] == "AP50:95 +1.7 [+0.2, +3.1] points: FINE higher (better) at 3 seeds (95% t-interval " \
                           "excludes 0)"
    assert summary["avg"]["AP50:95"]["fine"] == ap["avg"] and summary["max"]["AP50:95"]["fine"] == ap["max"]
    # max: d = [0, -1, +1] points: mean 0, sd 1, half width 4.3027 / sqrt(3) = 2.484
    assert ablate.ap_cells(summary["max"]) == ["30.0", "0.0", "[-2.5, +2.5]"]
    assert "no measurable difference" in summary["max"]["AP50:95"]["verdict"]
    # with aats in the list, avg builds the same model: its rows are aats's runs
    both = ablate.select(["3", "6"], "aats,avg")
    plan, arms = ablate.accuracy_plan("yolov8n.yaml", both, V8N, {v.name: tmp_path / f"{v.name}.yaml" for v in both},
                                      [0, 1, 2], tmp_path, {"data": "d.yaml", "epochs": 1})
    results = {f"seed{s}-{arm}": _result(v[s]) for arm, v in {"baseline": ap["baseline"], "aats": ap["dwconv"]}.items()
               for s in range(3)}
    summary = ablate.accuracy_summary(plan, arms, results)
    assert arms == {"aats": "aats", "avg": "aats"} and summary["avg"] == summary["aats"]


def test_dry_run_prints_every_run_once_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "abl"
    args, extra = ablate.COMMAND.parse(["model=yolov8n-fine.yaml", "table=6", "data=fine-synth.yaml", "seeds=2",
                                        "epochs=2", "imgsz=64", f"out={out}", "dry_run=True", "lr0=0.02"])
    assert ablate.COMMAND.run(args, extra) == 0
    text = capsys.readouterr().out
    lines = text[text.index("# seed0-baseline"):].splitlines()
    assert [line for line in lines if line.startswith("#")] == [
        "# seed0-baseline", "# seed1-baseline", "# seed0-dwconv", "# seed1-dwconv", "# seed0-max", "# seed1-max",
        "# seed0-avg", "# seed1-avg"]
    cmds = [line for line in lines if line.startswith("yolo train")]
    assert cmds[0].startswith("yolo train model=yolov8n.yaml ") and " seed=0 " in cmds[0]
    assert f"model={out / 'yaml' / 'yolov8n-fine-dwconv.yaml'}" in cmds[2] and " lr0=0.02 " in cmds[2]
    assert all(" epochs=2 imgsz=64 " in c and " deterministic=True " in c for c in cmds)
    assert not (out / "accuracy").exists()  # nothing trained
    dw = yaml.safe_load((out / "yaml" / "yolov8n-fine-dwconv.yaml").read_text())
    assert [r[3] for r in dw["head"] if r[2] == "FINEConcat"] == [[1, 2, 16, "aats", "dwconv"],
                                                                  [2, 2, 16, "aats", "dwconv"]]


def test_bad_arguments_name_themselves():
    with pytest.raises(UsageError, match="dry_run=True prints the training commands .* give data="):
        ablate.COMMAND.run(*ablate.COMMAND.parse(["model=yolov8n-fine.yaml", "table=6", "dry_run=True"]))
    with pytest.raises(UsageError, match="unknown argument.*lr0.*only with data="):
        ablate.COMMAND.run(*ablate.COMMAND.parse(["model=yolov8n-fine.yaml", "lr0=0.1"]))
    with pytest.raises(UsageError, match="model=nope-fine.yaml': no such model YAML"):
        ablate.COMMAND.run(*ablate.COMMAND.parse(["model=nope-fine.yaml", "table=6"]))


def test_cost_tables_end_to_end_through_the_console_script(tmp_path):
    """Table 3 and 6 (four variants) on yolov8n at 64 px, in a fresh process; values checked against hand counts."""
    out = tmp_path / "abl"
    cmd = [script("fine-yolo"), "ablate", "model=yolov8n-fine.yaml", "table=3,6", "variants=vanilla,aats,dwconv,max",
           "imgsz=64", "iters=2", f"out={out}", f"json={tmp_path / 'a.json'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    doc = json.loads((tmp_path / "a.json").read_text())
    assert set(doc) == {"settings", "baseline", "variants", "tables", "paper", "accuracy"}
    assert doc["tables"] == {"3": ["vanilla", "aats"], "6": ["dwconv", "max"]} and doc["accuracy"] is None
    v, base = doc["variants"], doc["baseline"]
    for row in v.values():
        assert {"params", "gflops", "d_params", "d_gflops", "fine_gflops", "fine_peak_mb", "latency_ms",
                "speed_ratio", "speed_ratio_ci95", "stage_args", "blocks"} <= set(row)
        # the model's extra GFLOPs are its FINE blocks' (block-level and model-level counts agree)
        assert row["d_gflops"] == pytest.approx(row["fine_gflops"], rel=0.02)
        assert row["speed_ratio"] == pytest.approx(base["latency_ms"] / row["latency_ms"])
    # FINE's parameters by hand: per stage q (C^2 + C), kv (2 C^2), out (C^2 + C), eq. 10 (2C x C, c_high = 2C)
    per_stage = [4 * c * c + 2 * c + 2 * c * c for c in (128, 64)]
    assert v["aats"]["d_params"] == sum(per_stage) == v["vanilla"]["d_params"] == v["max"]["d_params"]
    assert v["dwconv"]["d_params"] - v["aats"]["d_params"] == 128 * 2**2 + 64 * (4**2 + 2**2)  # depthwise kernels
    assert v["vanilla"]["gflops"] > v["aats"]["gflops"] and v["vanilla"]["fine_peak_mb"] > v["aats"]["fine_peak_mb"]
    assert [b["module"] for b in v["vanilla"]["blocks"]] == [
        "c_low=128, c_high=256, k=1, r=2, heads=8, attention=vanilla", "c_low=64, c_high=128, k=1, r=2, heads=4, "
        "attention=vanilla"]
    md = (out / "ablate.md").read_text()
    assert "## Table 3: attention strategy" in md and "## Table 6: AATS downsampling operator" in md
    assert "| vanilla | O(HlWl x HhWh) |" in md and "+1223.48" in md and "+6.14K" in md  # the paper beside ours
    assert doc["paper"]["3"]["rows"]["aats"]["d_gflops"] == 1.2
    assert (out / "ablate.png").stat().st_size > 10_000
    assert md.strip() in proc.stdout


def test_module_entry_point_prints_help_and_one_sentence_errors(capsys):
    """`python -m fine_yolo.analysis.ablate help` prints the keys; a bad argument is one sentence, exit code 2."""
    from fine_yolo.analysis.ablate import main

    assert main(["help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("python -m fine_yolo.analysis.ablate\n") and "\nkeys (key=value):\n" in out
    assert "\n  table       3, 4, 5 (Fig. 5), 6, all, or a comma list (default 'all')\n" in out
    assert main(["bogus"]) == 2
    assert capsys.readouterr().err.strip() == "python -m fine_yolo.analysis.ablate: argument 'bogus' is not key=value"
