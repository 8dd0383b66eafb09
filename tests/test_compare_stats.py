"""fine-yolo compare's multiplicity and planning maths: Holm's step-down, paired t p-values, the noncentral-t power,
the minimum detectable difference and the seeds needed, worked out by hand or computed independently here; and the
report's order (primary verdict, Holm secondaries, MDD line) in compare.md and compare.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from fine_yolo.compare.metrics import METRIC_NAMES
from fine_yolo.compare.plan import make_plan
from fine_yolo.compare.report import markdown, mdd_line, pilot_sd, plan_seeds, plan_text, summarize, write
from fine_yolo.compare.stats import holm, mdd, paired, power, secondary_verdict, seeds_needed
from fine_yolo.errors import UsageError


def _power_by_integration(dz: float, n: int, alpha: float = 0.05) -> float:
    """P(|T'| > c) from T' = (Z + dz sqrt(n)) / sqrt(V / nu), V ~ chi2(nu), nu = n - 1, integrating over V:
    P(T' > c) = E_V[Phi(delta - c sqrt(V/nu))], P(T' < -c) = E_V[Phi(-delta - c sqrt(V/nu))]. No scipy.stats.nct."""
    nu, delta = n - 1, dz * math.sqrt(n)
    c = sps.t.ppf(1 - alpha / 2, nu)

    def f(v: float) -> float:
        s = c * math.sqrt(v / nu)
        return sps.chi2.pdf(v, nu) * (sps.norm.cdf(delta - s) + sps.norm.cdf(-delta - s))

    return integrate.quad(f, 0, np.inf, limit=200)[0]


# ------------------------------------------------------------------------------------------------------------- Holm


def test_holm_worked_by_hand():
    # sorted 0.01, 0.03, 0.04: 3 x 0.01 = 0.03; 2 x 0.03 = 0.06; 1 x 0.04 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # sorted 0.001, 0.2, 0.3, 0.5: 0.004, 0.6, 0.6, max(0.6, 0.5) = 0.6 (the step-down never lets a p fall)
    assert holm([0.5, 0.2, 0.001, 0.3]) == pytest.approx([0.6, 0.6, 0.004, 0.6])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # 2 x 0.6 = 1.2 is capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []
    with pytest.raises(ValueError, match="between 0 and 1"):
        holm([0.1, 1.5])


def test_paired_t_p_value_by_hand():
    # d = 1, 2, 3: mean 2, sd 1, t = 2 sqrt(3); with 2 dof, F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so
    # p = 1 - t / sqrt(2 + t^2) = 1 - sqrt(12/14)
    p = paired([1, 2, 3], [0, 0, 0])
    assert p.p == pytest.approx(1 - math.sqrt(6 / 7), rel=1e-9)
    assert paired([1, 1, 1], [0, 0, 0]).p == 0.0  # every seed moved the same: t is infinite
    assert paired([0, 0], [0, 0]).p == 1.0 and paired([1], [0]).p is None


def test_secondary_verdict_calls_a_direction_only_when_the_bonferroni_interval_excludes_zero():
    d = ([2, 3, 4], [0, 0, 0])
    p, wide = paired(*d), paired(*d, confidence=1 - 0.05 / 9)
    # Holm 0.03 < 0.05 but the 99.4% interval 3 -/+ 13.4 / sqrt(3) holds 0: still no measurable difference
    s = secondary_verdict("TP", p, wide, 0.03, 9, unit="boxes")
    assert s == ("TP +3.0 [-4.7, +10.7] boxes (Bonferroni 99.4%), Holm p = 0.03: no measurable difference at 3 "
                 "seeds (Holm p < 0.05 but the Bonferroni interval contains 0)")
    tight = ([10, 10.1, 9.9], [0, 0, 0])
    s = secondary_verdict("FP", paired(*tight), paired(*tight, confidence=1 - 0.05 / 2), 0.0004, 2,
                          higher_is_better=False)
    assert s.endswith("Holm p < 0.001: FINE higher (worse) at 3 seeds (Bonferroni interval excludes 0)")


# ------------------------------------------------------------------------------------------------------------ power


def test_power_is_the_noncentral_t_not_the_normal_approximation():
    # n = 5, true difference 1.5 SD: the integral above gives 0.7107; the normal approximation
    # Phi(1.5 sqrt(5) - 1.96) = Phi(1.394) = 0.918 would promise far more than 5 seeds deliver
    by_hand = _power_by_integration(1.5, 5)
    assert by_hand == pytest.approx(0.7107, abs=5e-4)
    assert power(1.5, 1.0, 5) == pytest.approx(by_hand, abs=1e-6)
    assert power(-0.9, 0.6, 5) == pytest.approx(by_hand, abs=1e-6)  # two-sided, and only the ratio counts
    assert power(0.0, 1.0, 5) == pytest.approx(0.05, abs=1e-9)
    # and a simulation of the test itself agrees (20 000 experiments of 5 seeds; SE of the estimate 0.0032)
    rng = np.random.default_rng(0)
    d = rng.normal(1.5, 1.0, size=(20_000, 5))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(5))
    assert np.mean(np.abs(t) > sps.t.ppf(0.975, 4)) == pytest.approx(by_hand, abs=0.015)


def test_minimum_detectable_difference_inverts_the_power():
    for sd, n in ((0.6, 5), (1.0, 3), (0.5, 2), (2.0, 20)):
        delta = mdd(sd, n)
        assert _power_by_integration(delta / sd, n) == pytest.approx(0.8, abs=1e-4)
    assert mdd(2.0, 5) == pytest.approx(2 * mdd(1.0, 5))  # linear in the SD
    # dz = 1 at 10 seeds has power 0.803 (G*Power's table), so the MDD at sd = 1, n = 10 lies just below 1
    assert 0.97 < mdd(1.0, 10) < 1.0


def test_seeds_needed_matches_the_hand_table_and_is_monotone():
    # paired t, two-sided 5%, 80% power (Cohen's dz -> n, as G*Power tabulates): 0.5 -> 34, 0.8 -> 15, 1.0 -> 10,
    # 1.5 -> 6, 2.0 -> 5; the paper's +0.8 AP with a seed SD of 0.6 points (dz = 1.33) -> 7
    table = {0.5: 34, 0.8: 15, 1.0: 10, 1.5: 6, 2.0: 5}
    for dz, n in table.items():
        assert seeds_needed(dz, 1.0) == n
        assert _power_by_integration(dz, n) >= 0.8 > _power_by_integration(dz, n - 1)
    assert seeds_needed(0.8, 0.6) == 7
    effects = np.linspace(0.2, 3.0, 15)
    needed = [seeds_needed(e, 1.0) for e in effects]
    assert needed == sorted(needed, reverse=True) and needed[-1] == 4  # dz = 3: 0.75 at 3 seeds, 0.97 at 4
    # dz = 4, 2, 1.33, 1, 0.8: 3 (power at 3 seeds 0.91), then the table: 5, 7, 10, 15
    assert [seeds_needed(0.8, sd) for sd in (0.2, 0.4, 0.6, 0.8, 1.0)] == [3, 5, 7, 10, 15]


def test_planning_inputs_are_refused_in_one_sentence():
    with pytest.raises(ValueError, match="nonzero"):
        seeds_needed(0.0, 1.0)
    with pytest.raises(ValueError, match="positive number"):
        seeds_needed(0.8, 0.0)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        power(1.0, 1.0, 1)
    with pytest.raises(ValueError, match="needs more than 100 seeds"):
        seeds_needed(0.01, 1.0, max_seeds=100)
    with pytest.raises(ValueError, match="'sd=-1' must be a positive SD"):
        plan_text(0.8, -1.0)
    with pytest.raises(ValueError, match="'effect=nan' must be a finite number"):
        plan_text(float("nan"), 1.0)
    with pytest.raises(ValueError, match="choose one of AP50:95, AP50, AP75"):
        plan_text(0.8, 0.6, primary="mAP")


def test_plan_text_prints_the_seeds_needed_and_a_power_table():
    text = plan_text(0.8, 0.6)
    assert text.startswith("AP50:95: a true difference of +0.8 points with SD 0.6 points of the paired differences "
                           "(sd=) needs 7 seeds for 80% power")
    rows = {int(r.split("|")[1]): r for r in text.splitlines() if r.startswith("| ") and r[2].isdigit()}
    assert sorted(rows) == [2, 3, 5, 6, 7, 10, 20]
    assert rows[7].split("|")[2].strip() == f"{_power_by_integration(0.8 / 0.6, 7):.2f}" == "0.83"
    assert rows[6].split("|")[2].strip() == "0.74"


# ----------------------------------------------------------------------------------------------------------- report

# Three seeds, baseline values 0.5 everywhere, FINE values 0.5 + the differences d; APm/APl absent (no such objects).
# Primary AP50:95: d = 0.5, 1.0, 1.5 points (stored as fractions). Secondaries (9 with a value):
#   TP d = 4, 5, 6: t = 5 sqrt(3), p = 1 - sqrt(75/77) = 0.01307;   AP75 d = 2, 3, 4 points: p = 1 - sqrt(27/29)
#   = 0.03508;   AP50 d = 1, 2, 3 points: p = 1 - sqrt(12/14) = 0.07418;   the other six d = -1, 0, 1: p = 1.
# Holm over 9: 9 x 0.01307 = 0.1176; 8 x 0.03508 = 0.2807; 7 x 0.07418 = 0.5193; the six p = 1 stay 1.
DIFFS = {"AP50:95": [0.005, 0.010, 0.015], "AP50": [0.01, 0.02, 0.03], "AP75": [0.02, 0.03, 0.04],
         "APs": [-0.01, 0, 0.01], "tp": [4, 5, 6], "fp": [-1, 0, 1], "fn": [-1, 0, 1],
         "precision": [-0.01, 0, 0.01], "recall": [-0.01, 0, 0.01], "f1": [-0.01, 0, 0.01]}
P_TP, P_AP75, P_AP50 = 1 - math.sqrt(75 / 77), 1 - math.sqrt(27 / 29), 1 - math.sqrt(12 / 14)


def _results(seeds=(0, 1, 2)) -> dict:
    out = {}
    for i, s in enumerate(seeds):
        for arm, k in (("baseline", 0), ("fine", 1)):
            v = {name: 0.5 + k * d[i % 3] for name, d in DIFFS.items()}
            coco = {n: v[n] for n in ("AP50:95", "AP50", "AP75", "APs")} | {"APm": -1.0, "APl": -1.0}
            errors = {n: v[n] for n in ("tp", "fp", "fn", "precision", "recall", "f1")} | {"images": 10}
            out[f"seed{s}-{arm}"] = {"coco": coco, "errors": errors, "curve": [0.1]}
    return out


def _plan(tmp_path, seeds=(0, 1, 2)):
    args = {"data": "fine-synth.yaml", "epochs": 3, "imgsz": 64, "batch": 2, "workers": 0}
    return make_plan("yolov8n-fine.yaml", "yolov8n.yaml", list(seeds), tmp_path / "proj", args)


def test_summary_holm_and_bonferroni_worked_by_hand(tmp_path):
    s = summarize(_plan(tmp_path), _results())
    assert [n for n in METRIC_NAMES if s[n]["role"] == "primary"] == ["AP50:95"]
    assert s["AP50:95"]["p_holm"] is None and s["APm"]["p_holm"] is None
    assert s["TP"]["paired"]["p"] == pytest.approx(P_TP, rel=1e-9)
    assert s["TP"]["p_holm"] == pytest.approx(9 * P_TP, rel=1e-9) == pytest.approx(0.1176, abs=1e-4)
    assert s["AP75"]["p_holm"] == pytest.approx(8 * P_AP75, rel=1e-9)
    assert s["AP50"]["p_holm"] == pytest.approx(7 * P_AP50, rel=1e-9) == pytest.approx(0.5193, abs=1e-4)
    assert all(s[n]["p_holm"] == 1.0 for n in ("APs", "FP", "FN", "precision", "recall", "F1"))
    # AP50's Bonferroni interval: 2 -/+ t / sqrt(3) points with t the 1 - 0.05/18 quantile of t(2), which inverts
    # F(t) = 1/2 + t / (2 sqrt(2 + t^2)): q = 1 - 0.05/9, t = q sqrt(2 / (1 - q^2)) = 13.36, half-width 7.71 points
    q = 1 - 0.05 / 9
    half = q * math.sqrt(2 / (1 - q * q)) / math.sqrt(3) / 100
    iv = s["AP50"]["interval"]
    assert (iv["low"], iv["high"]) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    assert iv["kind"] == "Bonferroni 99.4% t-interval" and iv["confidence"] == pytest.approx(q)
    assert s["AP50"]["verdict"].startswith("AP50 +2.0 [-5.7, +9.7] points (Bonferroni 99.4%), Holm p = 0.52: ")
    # primary: d = 0.5, 1, 1.5 points, sd 0.5: the 95% interval 1 -/+ 4.303 x 0.5 / sqrt(3) = [-0.24, +2.24]
    assert s["AP50:95"]["verdict"] == ("AP50:95 +1.0 [-0.2, +2.2] points: no measurable difference at 3 seeds "
                                       "(95% t-interval contains 0)")
    plan = s["AP50:95"]["planning"]
    assert plan["sd"] == pytest.approx(0.005) and plan["mdd"] == pytest.approx(mdd(0.005, 3))
    assert _power_by_integration(plan["mdd"] / 0.005, 3) == pytest.approx(0.8, abs=1e-4)
    # effect 0.8 points with sd 0.5 points: dz = 1.6, 6 seeds (power 0.88; 5 seeds: 0.76); the observed 1.0: dz 2 -> 5
    assert plan["seeds_needed"] == 6 and plan["seeds_needed_observed"] == 5
    assert _power_by_integration(1.6, 6) >= 0.8 > _power_by_integration(1.6, 5)


def test_primary_is_chosen_and_validated(tmp_path):
    s = summarize(_plan(tmp_path), _results(), primary="TP")
    assert s["TP"]["role"] == "primary" and s["TP"]["p_holm"] is None and "planning" in s["TP"]
    assert s["AP50:95"]["role"] == "secondary" and s["AP50:95"]["p_holm"] is not None
    no_value = summarize(_plan(tmp_path), _results(), primary="APm")  # the ground truth has no medium objects
    assert no_value["APm"]["verdict"].startswith("APm: no value at seed(s) 0, 1, 2")
    assert mdd_line("APm", no_value["APm"]).endswith("not computable (it has no value).")
    # 10 secondaries now: TP 10 x 0.01307, AP75 9 x 0.03508, then AP50:95 and AP50 tie at 0.07418: 8x and 7x, and
    # the step-down lifts the second to the first, so both are 8 x 0.07418 = 0.593
    assert no_value["TP"]["p_holm"] == pytest.approx(10 * P_TP)
    assert no_value["AP75"]["p_holm"] == pytest.approx(9 * P_AP75)
    assert no_value["AP50:95"]["p_holm"] == no_value["AP50"]["p_holm"] == pytest.approx(8 * P_AP50)
    with pytest.raises(ValueError, match="primary='mAP' is not a reported metric; choose one of AP50:95, AP50"):
        summarize(_plan(tmp_path), _results(), primary="mAP")


def test_compare_md_and_json_carry_the_primary_verdict_the_holm_column_and_the_mdd(tmp_path):
    plan = _plan(tmp_path)
    results = _results()
    s = summarize(plan, results)
    md = markdown(plan, s, results, "t")
    json_path, md_path = write(tmp_path, {"metrics": s}, md)
    text = md_path.read_text()
    primary = text.index(f"**Primary metric** (AP50:95, `primary=`; 95% t-interval over seeds): "
                         f"{s['AP50:95']['verdict']}")
    secondaries = text.index("## Secondary metrics (Holm-adjusted p-values)")
    mdd_at = text.index("Minimum detectable difference (AP50:95; 80% power, two-sided paired t at 0.05, noncentral t): "
                        f"{mdd(0.5, 3):.2f} points at 3 seeds, from the observed SD of the paired differences, 0.50 "
                        "points. A true difference of +0.8 points (effect=) would need 6 seeds; the observed +1.0 "
                        "points, 5 seeds.")
    assert primary < secondaries < text.index("- AP50 +2.0") < mdd_at < text.index("## Paired differences")
    assert "Holm step-down adjusted over the 9 secondary metrics" in text
    header = next(line for line in text.splitlines() if line.startswith("| metric | role |"))
    assert header.endswith("| p (paired t) | p (Holm) |")
    tp_row = next(line for line in text.splitlines() if line.startswith("| TP (boxes) |"))
    assert tp_row.endswith("| Bonferroni 99.4% t-interval | 0.013 | 0.12 |")
    doc = json.loads(json_path.read_text())["metrics"]
    assert doc["AP50:95"]["role"] == "primary" and doc["AP50:95"]["planning"]["seeds_needed"] == 6
    assert doc["AP50"]["p_holm"] == pytest.approx(7 * P_AP50, rel=1e-9)
    assert doc["TP"]["interval"]["kind"].startswith("Bonferroni")


def test_only_complete_pairs_are_reported_and_the_rest_named(tmp_path):
    plan = _plan(tmp_path, seeds=(0, 1, 2, 3))
    results = _results(seeds=(0, 1, 2, 3))
    del results["seed3-fine"]
    s = summarize(plan, results)
    assert s["AP50:95"]["seeds"] == [0, 1, 2] and s["AP50:95"]["paired"]["n"] == 3
    assert s["TP"]["p_holm"] == pytest.approx(9 * P_TP, rel=1e-9)  # the same numbers as the 3 complete seeds
    md = markdown(plan, s, results, "t", missing={"seed3-fine": "failed (exit 1), log logs/seed3-fine.log"})
    assert ("**Not reported:** 3 of 4 seed pairs are complete; only they are reported. Left out: seed3-baseline "
            "(its pair is incomplete); seed3-fine (failed (exit 1), log logs/seed3-fine.log).") in md
    assert "| 3 | baseline |" not in md
    with pytest.raises(ValueError, match="no seed has both"):
        summarize(plan, {"seed0-fine": results["seed0-fine"]})


def test_plan_seeds_reads_the_sd_of_a_finished_pilot(tmp_path):
    plan = _plan(tmp_path)
    s = summarize(plan, _results())
    write(tmp_path, {"metrics": s}, "")
    assert pilot_sd(tmp_path) == (pytest.approx(0.5), 3)  # printed unit: points
    text = plan_seeds("AP50:95", 0.8, 0.0, tmp_path)
    assert text.startswith(f"AP50:95: a true difference of +0.8 points with SD 0.5 points of the paired differences "
                           f"(observed over 3 seeds in {tmp_path / 'compare.json'}) needs 6 seeds")
    assert "SD 0.6 points" in plan_seeds("AP50:95", 0.8, 0.6, tmp_path / "nowhere")  # sd= wins, no file needed
    with pytest.raises(ValueError, match="compare.json does not exist \\(give sd=\\)"):
        plan_seeds("AP50:95", 0.8, 0.0, tmp_path / "nowhere")
    s1 = summarize(_plan(tmp_path, seeds=(0,)), _results(seeds=(0,)))
    (tmp_path / "one").mkdir()
    write(tmp_path / "one", {"metrics": s1}, "")
    with pytest.raises(ValueError, match="has no spread of paired differences to plan from \\(1 complete seed"):
        pilot_sd(tmp_path / "one")


# ---------------------------------------------------------------------------------------------------------- command


def test_plan_only_prints_the_seeds_needed_and_trains_nothing(tmp_path, capsys):
    from fine_yolo.compare.command import COMMAND

    base = ["model=yolov8n-fine.yaml", "data=d.yaml", f"project={tmp_path / 'p'}", "plan_only=True"]
    assert COMMAND.run(*COMMAND.parse([*base, "effect=0.8", "sd=0.6"])) == 0
    assert "needs 7 seeds for 80% power" in capsys.readouterr().out
    assert not (tmp_path / "p").exists()
    (tmp_path / "p").mkdir()
    write(tmp_path / "p", {"metrics": summarize(_plan(tmp_path), _results())}, "")
    assert COMMAND.run(*COMMAND.parse(base)) == 0  # effect 0.8 (default), sd 0.5 read from the pilot
    assert "SD 0.5 points of the paired differences (observed over 3 seeds in" in capsys.readouterr().out
    with pytest.raises(UsageError, match="'sd=-0.1' must be a positive SD"):
        COMMAND.run(*COMMAND.parse([*base, "sd=-0.1"]))
    with pytest.raises(UsageError, match="'primary=mAP' must be one of AP50:95, AP50, AP75, APs, APm, APl, TP, FP"):
        COMMAND.parse([*base, "primary=mAP"])
