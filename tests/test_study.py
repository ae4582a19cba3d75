"""Notebook 06's study: its statistics against hand-computed cases, the verdict rule on both sides of each
boundary, the lr search's edge extension, budgets matched by measured time, the data it trains on, and the
notebook end to end."""

import dataclasses
import io
import json
import math
import re
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from s2r2lib import reproduce, results, study, synthetic, train

QUICK = study.PLANS["quick"]


# --- Statistics -----------------------------------------------------------------------------------------

def test_t_interval_uses_the_standard_error_with_student_t():
    # [1, 2, 3]: mean 2, SD 1, SE 1 / sqrt(3); t(2 df, 0.975) = 4.302653 (a t-table's value)
    mean, low, high = study.t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half), abs=1e-5)
    assert high - low < 2 * 4.302653 * 1.0  # an interval built on the SD (the seeds' spread) would be this wide
    # 90 %: t(2 df, 0.95) = 2.919986
    assert study.t_interval([1.0, 2.0, 3.0], alpha=0.1)[2] == pytest.approx(2 + 2.919986 / math.sqrt(3), abs=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        study.t_interval([1.0])


def test_t_pvalue_matches_the_closed_form_for_two_degrees_of_freedom():
    # with 2 df the t distribution's tail is 0.5 * (1 - t / sqrt(t^2 + 2)); t = 2 / (1 / sqrt(3))
    t = 2 * math.sqrt(3)
    assert study.t_pvalue([1.0, 2.0, 3.0]) == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-9)
    assert study.t_pvalue([0.5, 0.5]) == 0.0 and study.t_pvalue([0.0, 0.0]) == 1.0


def test_holm_judges_the_kth_smallest_p_at_alpha_over_m_minus_k_and_stops_at_the_first_failure():
    assert study.holm_alphas([0.001, 0.02, 0.04]) == pytest.approx([0.05 / 3, 0.025, 0.05])
    # 0.03 fails at 0.025: Holm stops, and 0.04 is judged at 0.025 too, not at 0.05
    assert study.holm_alphas([0.01, 0.04, 0.03]) == pytest.approx([0.05 / 3, 0.025, 0.025])
    # just below / just above the first level
    assert study.holm_alphas([0.0166, 0.9]) == pytest.approx([0.025, 0.05])
    assert study.holm_alphas([0.0251, 0.9]) == pytest.approx([0.025, 0.025])


@pytest.mark.parametrize("effect, low, high, verdict", [
    (0.030, 0.001, 0.050, "supported"),
    (0.020, 0.001, 0.050, "supported"),      # the effect exactly at the threshold reaches it
    (0.030, -0.001, 0.050, "inconclusive"),  # the interval touches 0
    (0.019, 0.001, 0.040, "inconclusive"),   # above 0, but the effect short of the threshold
    (0.010, 0.001, 0.0199, "contradicted"),  # the whole interval below the threshold, though above 0
    (-0.05, -0.08, -0.02, "contradicted"),
    (0.010, -0.01, 0.020, "inconclusive"),   # the upper end at the threshold: not wholly below it
])
def test_classify_on_both_sides_of_each_boundary(effect, low, high, verdict):
    assert study.classify(effect, low, high, threshold=0.02) == verdict


# --- Verdicts from rows -----------------------------------------------------------------------------------

def synthetic_rows(plan, lead: float, noise=(0.0, 0.004, -0.004)) -> list[dict]:
    """Rows of a whole study in which every method sits 0.3 above a 0.2 floor, S2R2 ``lead`` above the
    others, per-seed noise shared by the methods of a seed (paired)."""
    rows = []

    def add(dataset, method, value, seed, images, steps, snapshots=(1,)):
        for i, share in enumerate(snapshots):
            rows.append({"table": "study", "dataset": dataset, "method": method, "images": images, "views": 8,
                         "seed": seed, "lr": "0.001", "steps": round(steps * share), "views_seen": 0, "train_s": 1,
                         "metric": "linear_top1", "value": value - 0.01 * (len(snapshots) - 1 - i)})

    small = f"{plan.small_set}-n{plan.small_n}"
    for seed, wiggle in zip(plan.seeds, noise):
        for dataset in (*plan.main_sets, small):
            for method in study.METHODS:
                add(dataset, method, 0.5 + wiggle + (lead if method == "S2R2" else 0), seed, plan.images, 100,
                    plan.snapshots)
        for b in plan.sweep_images:
            label = plan.search_set if b == plan.images else f"{plan.search_set}-bsweep"
            if b != plan.images:
                add(label, "S2R2", 0.5 + wiggle, seed, b, 100)
            add(f"{plan.search_set}-{plan.sweep_classes}classes", "S2R2", 0.4 + wiggle, seed, b, 100)
        rows.append({"table": "study", "dataset": "embedded", "method": study.FLOOR, "images": "", "views": "",
                     "seed": seed, "lr": "", "steps": 0, "views_seen": 0, "train_s": 0, "metric": "linear_top1",
                     "value": 0.2 + wiggle})
    return rows


def test_verdicts_support_a_clear_lead_and_contradict_a_deficit():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    ahead = study.verdicts(synthetic_rows(plan, lead=0.10), plan)
    assert list(ahead.columns[:8]) == ["claim", "data", "verdict", "effect", "ci_low", "ci_high", "threshold", "seeds"]
    claim1 = ahead[ahead["claim"] == "1"]
    assert list(claim1["verdict"]) == ["supported", "supported"]
    assert claim1["effect"].tolist() == pytest.approx([0.10, 0.10])
    assert sorted(claim1["level"]) == pytest.approx([0.025, 0.05])  # Holm over the 2 data sets, both pass
    assert claim1["threshold"].tolist() == pytest.approx([0.25 * 0.3] * 2)  # 25 % of the baseline's gain
    assert (claim1["seeds"] == 3).all()
    # equal leads on both sets and both set sizes: claims 2 and 3 find no effect and exclude the threshold
    assert set(ahead[ahead["claim"].isin(["2", "3"])]["verdict"]) == {"contradicted"}
    # the main B (S2R2 +0.1) above both ends of the sweep: a rise and a fall; the same fall with 2 classes as
    # none at all: the explanation's effect is -0.1
    claim4 = ahead[ahead["claim"] == "4"]
    assert list(claim4["verdict"]) == ["supported", "contradicted"]
    assert claim4["effect"].tolist() == pytest.approx([0.1, -0.1])
    behind = study.verdicts(synthetic_rows(plan, lead=-0.10), plan)
    assert list(behind[behind["claim"] == "1"]["verdict"]) == ["contradicted", "contradicted"]
    assert set(behind["claim"]) == {"1", "2", "3", "4", "control"}


def test_verdicts_are_inconclusive_when_the_seeds_disagree_and_sentences_say_why():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    rows = synthetic_rows(plan, lead=0.0)
    for row in rows:  # S2R2 ahead by +-0.2 in turn: mean lead 0.067, a wide interval
        if row["method"] == "S2R2" and row["dataset"] in plan.main_sets:
            row["value"] += (0.2, -0.2, 0.2)[row["seed"]]
    table = study.verdicts(rows, plan)
    row = table[table["claim"] == "1"].iloc[0]
    assert row["verdict"] == "inconclusive"
    text = study.verdict_sentence(row)
    assert text.startswith("Claim 1 (S2R2 beats SimCLR and SwAV), embedded-object: inconclusive.")
    assert "97.5 % interval" in text and "over 3 paired seeds" in text


def test_each_claims_sentence_states_the_papers_claim():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    table = study.verdicts(synthetic_rows(plan, lead=0.1), plan)
    stated = {"1": "Claim 1 (S2R2 beats SimCLR and SwAV), ",
              "2": "Claim 2 (S2R2's margin is larger on cluttered scenes), ",
              "3": "Claim 3 (S2R2 converges faster on a small data set), ",
              "4": "Claim 4 (accuracy rises, then falls, with the images per batch), ",
              "control": "The control, "}
    for _, row in table.iterrows():
        assert study.verdict_sentence(row).startswith(stated[row["claim"]] + row["data"] + ": " + row["verdict"])


def test_verdicts_report_not_measured_sets_and_too_few_seeds():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    rows = [r for r in synthetic_rows(plan, lead=0.1) if r["seed"] == 0 or r["dataset"] != plan.small_set + "-n64"]
    table = study.verdicts(rows, plan, {"fashion-mnist": study.FASHION_MISSING})
    assert table[table["claim"] == "3"]["verdict"].tolist() == ["not measured"]
    missing = table[table["data"] == "fashion-mnist"].iloc[0]
    assert missing["verdict"] == "not measured" and "not measured" in study.verdict_sentence(missing)
    assert missing["claim"] == "1" and missing["comparison"] == study.FASHION_MISSING  # claim 1 is where it is read


def test_checks_find_a_method_above_its_floor_and_levelled_off():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    table = study.checks(synthetic_rows(plan, lead=0.1, noise=(0.0, 0.02, -0.02)), plan)
    floor = table[table["claim"] == "floor"]
    assert (floor["verdict"] == "above floor").all() and floor["effect"].tolist()[0] == pytest.approx(0.4)
    assert (floor["threshold"] == study.MIN_EFFECT_POINTS).all()  # each row carries the threshold it was judged by
    assert floor.iloc[0][["effect", "ci_low", "ci_high"]].tolist() == pytest.approx([0.4] * 3)  # paired: no spread
    assert (floor["ci_low"] <= floor["effect"] + 1e-12).all() and (floor["effect"] <= floor["ci_high"] + 1e-12).all()
    levelled = table[table["claim"] == "levelled"].iloc[0]
    sentence = study.verdict_sentence(levelled)
    effect = 100 * levelled["effect"]
    assert sentence.startswith(f"{levelled['data']}: {levelled['comparison']} is {effect:+.1f} points")
    assert sentence.endswith(f", against a seed noise (SD) of {100 * levelled['threshold']:.1f} points: levelled off.")
    untrained = [dict(r, value=0.0) if r["method"] == "S2R2" else r
                 for r in synthetic_rows(plan, lead=0.1, noise=(0.0, 0.02, -0.02))]
    floor = study.checks(untrained, plan).query("claim == 'floor'")
    s2r2 = floor["comparison"].str.startswith("S2R2")
    assert s2r2.any() and (floor[s2r2]["verdict"] == "not above floor").all()
    assert (floor[~s2r2]["verdict"] == "above floor").all()
    assert (table["seeds"] == 3).all()
    levelled = table[table["claim"] == "levelled"]
    assert (levelled["verdict"] == "levelled off").all()  # a 1-point step against a 2-point seed SD
    rows = synthetic_rows(plan, lead=0.1, noise=(0.0, 0.002, -0.002))
    assert (study.checks(rows, plan).query("claim == 'levelled'")["verdict"] == "still moving").all()


def test_budget_checks_judge_the_long_runs_against_the_committed_floors():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    committed = synthetic_rows(plan, lead=0.1)
    assert study.budget_factor(committed, plan) == 0 and study.long_rows(committed) == []
    only_committed = study.budget_checks(committed, plan)
    assert set(only_committed["budget"]) == {1} and set(only_committed["claim"]) == {"floor", "levelled"}
    long = [dict(r, table=study.LONG_TABLE, steps=4 * r["steps"], value=r["value"] + (0.1 if r["method"] == "S2R2" else 0))
            for r in synthetic_rows(plan, lead=0.1, noise=(0.0, 0.01, -0.01))
            if r["dataset"] in plan.main_sets and r["method"] in study.METHODS]
    assert study.budget_factor(committed + long, plan) == 4
    longer = [dict(r, steps=3 * r["steps"]) if r["method"] == "SimCLR" else r for r in committed]
    assert study.budget_factor(longer + long, plan) == 4  # read off S2R2's runs, whatever the other methods' steps
    assert study.long_rows(pd.DataFrame(committed + long)) == study.long_rows(committed + long)  # a table, as read
    table = study.budget_checks(committed + long, plan)
    assert list(table.columns) == ["budget", *study.VERDICT_COLUMNS]
    at4 = table[table["budget"] == 4]
    assert set(at4["claim"]) == {"floor", "levelled", *study.BUDGET_CLAIMS}  # claims 3 and 4 need other runs
    claim1 = at4[at4["claim"] == "1"]
    assert claim1["effect"].tolist() == pytest.approx([0.2, 0.2]) and set(claim1["verdict"]) == {"supported"}
    gain = at4[(at4["claim"] == "floor") & (at4["comparison"] == "S2R2 - random-init")]
    assert gain["effect"].tolist() == pytest.approx([0.5, 0.5])  # 0.7 against the committed 0.2 floors, seed by seed
    levelled = at4[at4["claim"] == "levelled"]
    assert levelled["seeds"].tolist() == [3] * 8 and levelled["effect"].tolist() == pytest.approx([0.01] * 8)
    assert table[table["budget"] == 1].reset_index(drop=True).equals(only_committed)  # the 1x checks unchanged


def test_agreement_accepts_a_rerun_within_the_seed_noise_only():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    committed = synthetic_rows(plan, lead=0.1)
    rerun = [dict(r, table="study-rerun") for r in committed if r["seed"] == 0]
    agreed = study.agreement(rerun, committed)
    assert set(agreed["verdict"]) == {"agrees"} and set(agreed["claim"]) == {"rerun"}
    assert sorted(agreed["data"]) == sorted(r["dataset"] for r in rerun)  # each row names its run's data
    assert (agreed["threshold"] >= study.RERUN_TOLERANCE).all()  # each row carries the tolerance it was judged by
    shifted = [dict(r, value=r["value"] + 0.05) for r in rerun]
    table = study.agreement(shifted, committed)
    assert set(table["verdict"]) == {"disagrees"} and table["effect"].tolist() == pytest.approx([0.05] * len(rerun))
    first = table.iloc[0]
    sentence = study.verdict_sentence(first)
    assert "disagrees" in sentence and "(+5.0 points, " in sentence
    assert f": {100 * first['ci_low']:.1f} % against the committed {100 * first['ci_high']:.1f} % (" in sentence


def test_agreement_widens_its_tolerance_to_twice_the_committed_seed_spread():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    committed = [dict(r, value=r["value"] + 0.1 * r["seed"]) for r in synthetic_rows(plan, lead=0.1)]  # SD 0.1
    rerun = [dict(r, table="study-rerun", value=r["value"] + 0.05) for r in committed if r["seed"] == 0]
    table = study.agreement(rerun, committed)
    spread = table[table["comparison"].str.contains("raw pixels") == False]  # noqa: E712 (one seed: no spread)
    assert len(spread) > 5 and set(spread["verdict"]) == {"agrees"}
    assert spread["threshold"].tolist() == pytest.approx([0.2] * len(spread), rel=0.05)  # 2 x SD, the noise aside


def test_a_subset_rerun_trains_the_committed_steps_and_learning_rates():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    rows = synthetic_rows(plan, lead=0.1)
    for row in rows:
        if row["method"] in study.METHODS and row["dataset"] == plan.search_set and row["images"] == plan.images:
            row["lr"] = {"S2R2": "0.003", "SimCLR": "0.001", "SwAV": "0.0003", "MV-NT-Xent": "0.001"}[row["method"]]
            row["steps"] = row["steps"] * (2 if row["method"] == "SwAV" else 1)
    budget, best = study.committed_plan(rows, plan)
    assert best == {"S2R2": 0.003, "SimCLR": 0.001, "SwAV": 0.0003, "MV-NT-Xent": 0.001}
    assert budget["steps"] == {"S2R2": 100, "SimCLR": 100, "SwAV": 200, "MV-NT-Xent": 100}
    with pytest.raises(ValueError, match="run the full profile first"):
        study.committed_plan([r for r in rows if r["method"] != "SwAV"], plan)


def test_committed_rows_are_the_study_tables_rows_as_strings_with_empty_cells_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("S2R2_RESULTS_DIR", str(tmp_path / "results"))
    rows = synthetic_rows(dataclasses.replace(QUICK, seeds=(0, 1)), lead=0.1)
    results.write_runs([*rows, {**rows[0], "table": "figure1"}, {**rows[0], "table": study.LONG_TABLE}])
    committed = study.committed_rows()
    assert sorted({r["table"] for r in committed}) == ["study", study.LONG_TABLE] and len(committed) == len(rows) + 1
    floor = next(r for r in committed if r["method"] == study.FLOOR)
    assert (floor["images"], floor["views"], floor["lr"], floor["value"]) == ("", "", "", "0.2")  # as runs.csv says


def test_a_subset_rerun_trains_in_a_folder_of_its_own_under_the_studys(tmp_path, monkeypatch):
    monkeypatch.setenv("S2R2_RESULTS_DIR", str(tmp_path / "results"))
    results.write_runs(synthetic_rows(QUICK, lead=0.1))  # the committed full profile's rows
    calls = []
    monkeypatch.setattr(study, "run_job", fake_study_job(calls))
    outcome = study.run_study(dataclasses.replace(QUICK, rerun="subset"), tmp_path / "study")
    assert calls and len(outcome["rows"]) == len(calls)
    trained = [Path(job["config"]["output"]) for job in calls if "config" in job]
    assert trained and all(out.is_relative_to(tmp_path / "study" / "rerun") for out in trained)
    assert (tmp_path / "study" / "rerun" / study.JOURNAL).is_file()  # <root>/rerun, never the full runs' folder


def test_the_default_profile_reruns_seed_0_of_the_object_set_only():
    plan = study.PLANS["default"]
    budget, best = {"steps": {m: 10 for m in study.METHODS}}, {m: 1e-3 for m in study.METHODS}
    jobs = [job for job in study.study_jobs(plan, budget, best, Path("runs")) if "config" in job]
    assert {job["dataset"] for job in jobs} == {"embedded-object"} and {job["method"] for job in jobs} == set(study.METHODS)
    assert {job["config"]["seed"] for job in jobs} == {0} and {job["table"] for job in jobs} == {"study-rerun"}
    assert plan.main_sets == study.PLANS["full"].main_sets  # the verdicts still read every committed set


def test_extend_jobs_leave_out_the_done_seeds_and_keep_every_claim():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2, 3), rerun="extend")
    budget, best = {"steps": {m: 10 for m in study.METHODS}}, {m: 1e-3 for m in study.METHODS}
    every = study.study_jobs(dataclasses.replace(plan, rerun="all"), budget, best, Path("runs"))
    extend = study.study_jobs(plan, budget, best, Path("runs"), done_seeds=(0, 1, 2))
    seed = lambda job: job["config"]["seed"] if "config" in job else job["seed"]  # noqa: E731 (a run, or a floor)
    assert {seed(job) for job in extend} == {3}
    assert len(extend) == sum(seed(job) == 3 for job in every)  # every claim's jobs of seed 3, no other
    assert not any(job.get("floor") == "raw" for job in extend)  # the raw-pixel floor has no seed: done once
    with pytest.raises(ValueError, match="rerun must be one of"):
        dataclasses.replace(plan, rerun="more")


def test_a_fashion_set_is_measured_only_where_both_its_splits_are(tmp_path):
    from test_data import _write_fashion

    plan = dataclasses.replace(QUICK, main_sets=("embedded-object", "fashion-mnist", "fashion-mnist-clutter"))
    _write_fashion(tmp_path / "both")
    assert study.measured_sets(plan, str(tmp_path / "both")) == (plan, {})
    for split, prefix in (("test", "t10k"), ("train", "train")):  # one split's files gone: not measured
        _write_fashion(tmp_path / f"no-{split}")
        for file in (tmp_path / f"no-{split}").glob(f"{prefix}-*"):
            file.unlink()
        kept, missing = study.measured_sets(plan, str(tmp_path / f"no-{split}"))
        assert kept.main_sets == ("embedded-object",)
        assert missing == {"fashion-mnist": study.FASHION_MISSING, "fashion-mnist-clutter": study.FASHION_MISSING}


def test_the_long_profile_trains_the_main_runs_only_at_its_factor_seed_by_seed():
    plan = study.PLANS["long"]
    budget, best = {"steps": {m: 10 * (i + 1) for i, m in enumerate(study.METHODS)}}, {m: 1e-3 for m in study.METHODS}
    jobs = study.study_jobs(plan, budget, best, Path("runs"))
    assert all("config" in job for job in jobs)  # no floor: the committed ones are the same probe's
    assert {job["table"] for job in jobs} == {"study-long"} and {job["dataset"] for job in jobs} == set(plan.main_sets)
    assert len(jobs) == len(plan.main_sets) * len(study.METHODS) * len(plan.seeds)
    assert [job["config"]["seed"] for job in jobs] == sorted(job["config"]["seed"] for job in jobs)
    assert {job["method"]: job["config"]["max_steps"] for job in jobs} == budget["steps"]  # scaled by run_study
    assert jobs[0]["probe_steps"] == study.snapshot_steps(jobs[0]["config"]["max_steps"], plan.snapshots)
    for factor, rerun in ((4, "all"), (1, "long"), (0, "all")):
        with pytest.raises(ValueError, match="budget_factor must be 1"):
            dataclasses.replace(plan, budget_factor=factor, rerun=rerun)


@pytest.mark.parametrize("change, message", [
    (dict(lrs=(1e-3, 1e-2)), "lrs must hold at least 3"),
    (dict(lrs=(1e-3, 3e-3, 9e-3)), "spanning 10x"),
    (dict(seeds=(0,)), "seeds needs at least 2"),
    (dict(images=2), "strictly inside it"),    # at the sweep's edge
    (dict(images=8), "strictly inside it"),    # at its other edge
    (dict(images=3), "strictly inside it"),    # not in it at all
    (dict(small_set="embedded"), "unknown data set"),
    (dict(table="study-tpu"), "table must be 'study' or one of"),
])
def test_a_study_plan_refuses_an_inconsistent_setting_and_says_which(change, message):
    assert QUICK.sweep_images == (2, 4, 8) and QUICK.images == 4
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(QUICK, **change)
    dataclasses.replace(QUICK, lrs=(1e-3, 3e-3, 1e-2), seeds=(0, 1), sweep_images=(2, 4, 6, 8), images=6)  # all fine


def test_the_gpu_study_keeps_its_rows_tables_and_figures_apart_from_the_cpu_studys():
    plan = study.PLANS["gpu"]
    assert (plan.table, plan.rerun, plan.arch, plan.device) == ("study-gpu", "all", "resnet18", "cuda")
    budget, best = {"steps": {m: 10 for m in study.METHODS}}, {m: 1e-3 for m in study.METHODS}
    jobs, cpu = study.study_jobs(plan, budget, best, Path("runs")), study.PLANS["full"]
    assert {job["table"] for job in jobs} == {"study-gpu"}
    # resume checkpoints only at the snapshots (about 60 ResNet18 runs would write some 50 GB every 100 steps)
    assert {job["config"]["checkpoint_every"] for job in jobs if "config" in job} == {plan.checkpoint_every} == {10**6}
    assert study.method_config("S2R2", cpu, 1e-3, 10).checkpoint_every == 100
    outputs = {p.table: {j["config"]["output"] for j in study.study_jobs(p, budget, best, Path("runs")) if "config" in j}
               for p in (plan, cpu)}
    assert outputs["study-gpu"].isdisjoint(outputs["study"])  # (ResNet18 on CUDA: never the CPU study's runs)
    assert [study.output_name(p, "study_verdicts") for p in (cpu, plan)] == ["study_verdicts", "study_verdicts_gpu"]
    assert study.output_name(plan, "06_verdicts") == "06_verdicts_gpu"
    for scale in study.SCALE_TABLES:  # every scale's tables are declared, with the CPU study's columns
        scaled = dataclasses.replace(cpu, table=scale)
        for name in ("study_verdicts", "study_budget"):
            assert results.TABLES[study.output_name(scaled, name)] == results.TABLES[name]
    rows = [{"table": "study-gpu", "x": 1}, {"table": "study-gpu-lr", "x": 2}, {"table": "study", "x": 3}]
    assert [r["table"] for r in study.as_study_rows(rows, plan)] == ["study", "study-lr", "study"]
    assert study.as_study_rows(rows, cpu) is rows
    for table, rerun in (("study-tpu", "all"), ("study-lr", "all"), ("study-gpu", "long"), ("study-gpu", "subset")):
        with pytest.raises(ValueError, match="table must be 'study' or one of"):
            dataclasses.replace(plan, table=table, rerun=rerun, budget_factor=2 if rerun == "long" else 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where CUDA is missing")
def test_the_study_command_refuses_a_cuda_plan_without_cuda_and_a_run_without_a_plan(capsys):
    for argv, message in ((["run", "--plan", "gpu"], "plan gpu trains on CUDA, which is not available here; on "
                                                     "the CPU, run plan full"), (["run"], "run needs --plan, one of")):
        with pytest.raises(SystemExit):
            study.main(argv)
        assert message in capsys.readouterr().err


# --- The lr search, the budget, the probe ---------------------------------------------------------------

def test_lr_search_extends_the_grid_past_an_edge_winner_until_it_is_inside():
    grid = (3e-4, 1e-3, 3e-3)
    assert study.lr_extension({3e-4: 0.3, 1e-3: 0.4, 3e-3: 0.5}, grid) == pytest.approx(9e-3)
    assert study.lr_extension({3e-4: 0.5, 1e-3: 0.4, 3e-3: 0.3}, grid) == pytest.approx(9e-5)
    assert study.lr_extension({3e-4: 0.3, 1e-3: 0.5, 3e-3: 0.4}, grid) is None
    assert study.lr_extension({3e-4: 0.3, 1e-3: 0.4, 3e-3: 0.5, 9e-3: 0.6}, grid) == pytest.approx(2.7e-2)  # again
    assert study.lr_extension({3e-4: 0.3, 1e-3: 0.4, 3e-3: 0.5, 9e-3: 0.6, 2.7e-2: 0.55}, grid) is None  # inside
    assert study.lr_extension({9e-5: 0.6, 3e-4: 0.5, 1e-3: 0.4, 3e-3: 0.3}, grid) == pytest.approx(2.7e-5)
    scores = {3e-4: 0.3, 1e-3: 0.4, 3e-3: 0.5}
    while (extra := study.lr_extension(scores, grid)) is not None:  # a winner ever further out
        scores[extra] = max(scores.values()) + 0.1
    assert len(scores) == len(grid) + study.MAX_LR_EXTENSIONS and study.lr_at_edge(scores)
    assert not study.lr_at_edge({3e-4: 0.3, 1e-3: 0.5, 3e-3: 0.4})


class FakeWorkers:
    def __init__(self, timings):
        self.timings, self.calls = timings, 0

    def map(self, fn, jobs, what=""):
        self.calls += 1
        return [self.timings[i] for i in range(len(jobs))]


def test_budget_gives_every_method_the_same_measured_time_and_is_reused(tmp_path):
    plan = dataclasses.replace(QUICK, train_seconds=60.0, workers=2)
    timings = [{"S2R2": 0.2, "SimCLR": 0.1, "SwAV": 0.15, "MV-NT-Xent": 0.3},
               {"S2R2": 0.2, "SimCLR": 0.1, "SwAV": 0.05, "MV-NT-Xent": 0.3}]
    workers = FakeWorkers(timings)
    budget = study.measure_budget(plan, tmp_path, workers)
    assert budget["steps"] == {"S2R2": 300, "SimCLR": 600, "SwAV": 600, "MV-NT-Xent": 200}
    assert {m: budget["steps"][m] * budget["step_s"][m] for m in study.METHODS} == pytest.approx(
        {m: 60.0 for m in study.METHODS})
    assert study.measure_budget(plan, tmp_path, workers) == budget and workers.calls == 1  # read back
    study.measure_budget(dataclasses.replace(plan, train_seconds=30.0), tmp_path, workers)
    assert workers.calls == 2  # another plan is timed again ...
    assert study.measure_budget(plan, tmp_path, workers) == budget and workers.calls == 2  # ... beside the first
    assert study.measure_budget(dataclasses.replace(plan, table="study-gpu"), tmp_path, workers) == budget
    assert workers.calls == 2 and len(list(tmp_path.glob("budget-*.json"))) == 2  # (the table names only rows)
    short = study.measure_budget(dataclasses.replace(plan, train_seconds=0.45), tmp_path, workers)
    assert short["steps"] == {m: 4 for m in study.METHODS}  # at least 4, however short the budget


def test_method_configs_share_one_optimiser_and_match_views_per_step():
    plan = study.PLANS["full"]
    configs = {m: study.method_config(m, plan, 1e-3, 400) for m in study.METHODS}
    assert {(c.optimizer, c.schedule, c.lr, c.warmup_steps) for c in configs.values()} == {("adam", "cosine", 1e-3, 20)}
    assert {m: c.views_in_batch for m, c in configs.items() if m != "SwAV"} == {"S2R2": 128, "SimCLR": 128,
                                                                               "MV-NT-Xent": 128}
    swav = configs["SwAV"]
    assert swav.prototype_freeze_steps == 20 and swav.queue_length >= swav.images_per_batch
    assert configs["MV-NT-Xent"].method == "simclr" and configs["MV-NT-Xent"].views_per_image == plan.views
    assert configs["S2R2"].keep_steps == [100, 200, 400]
    assert study.flops_per_step(configs["S2R2"]) == pytest.approx(
        3 * 128 * study.forward_flops("narrow_cnn", True, 32))
    b, small = swav.images_per_batch, plan.view_size // 2  # SwAV: 2 full crops and the small ones at half the side
    assert study.flops_per_step(swav) == pytest.approx(3 * b * (2 * study.forward_flops("narrow_cnn", True, 32)
                                                                + plan.swav_small_crops * study.forward_flops("narrow_cnn", True, small)))
    with pytest.raises(ValueError, match="spanning 10x"):
        dataclasses.replace(plan, lrs=(1e-3, 2e-3, 3e-3))
    sizes = {dataset: study.method_config("S2R2", plan, 1e-3, 400, dataset).image_size for dataset in study.STUDY_SETS}
    assert sizes == {"embedded-object": 40, "embedded-cluttered": 40, "fashion-mnist": 32,
                     "fashion-mnist-clutter": 64}  # each set at its own image size (the canvas of 4 items: 64 px)


def test_fit_probe_extends_c_past_the_grid_while_the_winner_sits_at_its_edge():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 20, generator=gen, dtype=torch.float64)
    y = (x[:, :2] @ torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)).argmax(1)  # separable
    result = study.fit_probe(x[:300], y[:300], x[300:], y[300:], max_iter=100)
    cs = sorted(float(c) for c in result["validation"])
    assert cs[-1] > max(study.C_GRID) and result["c"] != max(cs) or cs[-1] == study.C_LIMITS[1]
    assert result["top1"] > 0.9


# --- The training engine's two new knobs -------------------------------------------------------------------

def test_learning_rate_warms_up_linearly_then_decays_by_cosine():
    config = train.TrainConfig(lr=1.0, schedule="cosine", warmup_steps=4)
    lrs = [train.learning_rate(config, step, 14) for step in range(14)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0) and lrs[9] == pytest.approx(0.5) and lrs[13] < 0.03
    plain = dataclasses.replace(config, warmup_steps=0)
    assert [train.learning_rate(plain, s, 14) for s in range(14)] == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * s / 14)) for s in range(14)])


# --- The data ------------------------------------------------------------------------------------------------

def test_object_and_cluttered_images_differ_only_in_the_number_of_objects():
    gen = torch.Generator().manual_seed(0)
    one, r1 = synthetic.layout(2000, 40, "object", gen)
    four, r4 = synthetic.layout(2000, 40, "cluttered", gen)
    assert one.shape == (2000, 1, 2) and four.shape == (2000, 4, 2)
    assert abs(r1.mean() - r4.mean()) < 0.1 and r1.min() >= 40 * 0.16 and r4.max() <= 40 * 0.22
    _, present = synthetic.render(300, mode="cluttered", num_classes=2, seed=1)
    assert present[:, 2:].sum() == 0 and present[:, :2].any(1).all()
    with pytest.raises(ValueError, match="num_classes"):
        synthetic.render(4, num_classes=11)


def test_views_of_a_cluttered_image_share_no_object_at_a_measured_rate():
    one = synthetic.views_sharing_no_object("object", pairs=4000)
    four = synthetic.views_sharing_no_object("cluttered", pairs=4000)
    assert 0 < four < 1 and 0 < one < 1
    assert synthetic.views_sharing_no_object("object", pairs=4000, seed=1) == pytest.approx(one, abs=0.03)


def test_colour_alone_does_not_find_an_images_other_view():
    images, _ = synthetic.render(128, mode="cluttered", seed=2)
    palette = synthetic.colour_instance_top1(images)
    # the same scenes, each tinted by its own random colour: colour finds the other view far more often
    # (SimCLR's colour jitter and grayscale already hide much of it, which is why the palette is enough)
    tint = torch.rand(128, 3, 1, 1, generator=torch.Generator().manual_seed(0)) * 255
    tinted = (0.2 * images.float() + 0.8 * tint).to(torch.uint8)
    assert palette < 0.1 and synthetic.colour_instance_top1(tinted) > 2 * palette


# --- The notebook, end to end --------------------------------------------------------------------------------

@pytest.mark.smoke
@pytest.mark.slow
def test_notebook_06_runs_the_quick_study_and_writes_every_verdict(tmp_path, session_runs, monkeypatch, capsys):
    # the session's runs folder, not one of its own: after nbval's run of the notebook (conftest's
    # AFTER_NOTEBOOKS), the study's journal answers the jobs that run finished
    (path,) = reproduce.notebook_paths(only=["06"])
    reproduce.execute_notebook(path, tmp_path / path.name, reproduce.parameters_for(path, "quick"))
    numbers = json.loads((tmp_path / "records" / f"{path.stem}.json").read_text())
    assert {v["claim"] for v in numbers["verdicts"]} == {"1", "2", "3", "4", "control"}
    assert all(v["verdict"] in ("supported", "contradicted", "inconclusive", "not measured") for v in numbers["verdicts"])
    verdicts = (tmp_path / "results" / "study_verdicts.csv").read_text().splitlines()
    assert verdicts[0].startswith("claim,data,verdict,effect,ci_low,ci_high,threshold,seeds")
    runs = [r for r in results.read_runs().to_dict("records") if r["table"] in ("study", "study-lr")]
    search = [r for r in runs if r["table"] == "study-lr"]
    assert {r["method"] for r in search} == set(study.METHODS)
    assert all(len({r["lr"] for r in search if r["method"] == m}) >= 3 for m in study.METHODS)
    trained = [r for r in runs if r["method"] in study.METHODS]
    assert all(r["lr"] > 0 and r["steps"] > 0 and r["views_seen"] > 0 and r["train_s"] > 0 and r["commit"]
               for r in trained)
    steps = numbers["budget"]["steps"]
    assert set(steps) == set(study.METHODS) and all(s >= 4 for s in steps.values())
    assert {r["method"] for r in runs} >= {study.FLOOR, study.RAW}
    assert {r["views"] for r in trained if r["method"] == "SwAV"} == {2 + QUICK.swav_small_crops}  # every crop
    assert {r["views"] for r in trained if r["method"] != "SwAV"} == {QUICK.views, 2}
    floors = [r for r in runs if r["method"] in (study.FLOOR, study.RAW)]
    assert all(pd.isna(r["images"]) and pd.isna(r["views"]) and pd.isna(r["lr"]) for r in floors)  # no batch
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    assert {f"06_{name}.png" for name in ("data", "claim1_methods", "claim3_small_data", "claim4_batch",
                                          "verdicts")} <= figures
    # the default profile's path: seed 0 of the main runs on its rerun set trained again from the committed
    # rows' steps and lrs (in a folder of its own), and compared with them
    subset = dataclasses.replace(QUICK, rerun="subset", rerun_sets=QUICK.main_sets[:1])
    rerun = study.run_study(subset, study.default_root())
    assert rerun["search"] == [] and {r["table"] for r in rerun["rows"]} == {"study-rerun"}
    assert {r["dataset"] for r in rerun["rows"] if r["method"] in study.METHODS} == {QUICK.main_sets[0]}
    table = study.agreement(rerun["rows"], study.committed_rows())
    main_probes = len(study.METHODS) * len(QUICK.snapshots)
    assert len(table) >= main_probes and set(table["verdict"]) == {"agrees"}
    # the extend profile's path: the seed the committed rows lack, for every claim, at their steps and lrs
    committed = study.committed_rows()
    extended = study.run_study(dataclasses.replace(QUICK, seeds=(0, 1, 2), rerun="extend"), study.default_root())
    assert extended["search"] == [] and extended["best_lr"] == numbers["best_lr"]
    new = study.frame(extended["rows"])
    assert set(new["seed"]) == {2} and set(new["table"]) == {"study"}
    old = study.frame(committed)
    old = old[old["table"] == "study"]
    assert set(new["dataset"]) == set(old["dataset"]) and set(new["method"]) == set(old["method"]) - {study.RAW}
    key = ["dataset", "method", "images", "lr", "steps"]
    assert set(map(tuple, new[key].astype(str).values)) <= set(map(tuple, old[key].astype(str).values))
    # the long profile's path: the main runs of every seed at twice the committed steps, judged at that budget
    # (on the first main set only: a long plan's main_sets are the sets it trains, and the checks read only those)
    assert (tmp_path / "results" / "study_budget.csv").read_text().startswith("budget,claim,data,verdict")
    long = study.run_study(dataclasses.replace(QUICK, rerun="long", budget_factor=2, main_sets=QUICK.main_sets[:1]),
                           study.default_root())
    assert long["search"] == [] and {r["table"] for r in long["rows"]} == {study.LONG_TABLE}
    assert {r["seed"] for r in long["rows"]} == set(QUICK.seeds)
    assert {r["dataset"] for r in long["rows"]} == {QUICK.main_sets[0]}  # the floors are the committed ones
    assert max(r["steps"] for r in long["rows"] if r["method"] == "SwAV") == 2 * steps["SwAV"]
    judged = study.budget_checks(committed + long["rows"], QUICK)
    assert study.budget_factor(committed + long["rows"], QUICK) == 2 and set(judged["budget"]) == {1, 2}
    # the gpu plan's path, on the CPU (python -m s2r2lib.study run): the same study under a table of its own
    # reads only its own rows and writes its own tables, never the CPU study's
    published = {name: (tmp_path / "results" / f"{name}.csv").read_bytes() for name in ("study_verdicts", "study_budget")}
    monkeypatch.setitem(study.PLANS, "gpu", dataclasses.replace(QUICK, table="study-gpu"))
    capsys.readouterr()
    assert study.main(["run", "--plan", "gpu"]) == 0  # the quick study's runs and probes, read back
    progress = capsys.readouterr().out
    assert "timing pass: " not in progress and "lr search: " in progress and "runs: " in progress  # labelled
    assert "budget: " not in progress and re.search(r"lr search: S2R2 [\d.e-]+, SimCLR ", progress)  # the winners
    assert {name: (tmp_path / "results" / f"{name}.csv").read_bytes() for name in published} == published
    same = [pd.read_csv(source).drop(columns="date") for source in  # the same verdicts, judged a moment apart
            (io.BytesIO(published["study_verdicts"]), tmp_path / "results" / "study_verdicts_gpu.csv")]
    assert same[0].equals(same[1])
    assert (tmp_path / "results" / "study_budget_gpu.csv").is_file()
    tables = results.read_runs()["table"].value_counts()
    assert (tables["study-gpu"], tables["study-gpu-lr"]) == (tables["study"], tables["study-lr"])
    assert [f for f in (tmp_path / "figures").iterdir() if "gpu" in f.name] == []  # figures are the notebook's


def test_keep_steps_leaves_snapshots_without_changing_the_run(tmp_path):
    config = train.TrainConfig(max_steps=3, images_per_batch=4, views_per_image=2, data_options={"n": 16},
                               progress=False, output=str(tmp_path / "kept"), keep_steps=[1, 2])
    train.train(config)
    plain = train.train(dataclasses.replace(config, keep_steps=[], output=str(tmp_path / "plain")))
    snapshots = {step: torch.load(tmp_path / "kept" / f"checkpoint-{step}.pt", weights_only=True) for step in (1, 2)}
    assert {step: state["step"] for step, state in snapshots.items()} == {1: 1, 2: 2}
    kept = torch.load(tmp_path / "kept" / "checkpoint.pt", weights_only=True)["model"]
    final = torch.load(plain["checkpoint"], weights_only=True)["model"]
    assert all(torch.equal(kept[name], final[name]) for name in final)


def _verdict_rows(*verdicts):
    rows = [{"claim": claim, "data": f"data-{i}", "verdict": verdict, "effect": 0.05, "ci_low": -0.01 if verdict !=
             "supported" else 0.01, "ci_high": 0.1 if verdict != "contradicted" else 0.02, "threshold": 0.04,
             "seeds": 3, "comparison": "A - B", "level": 0.05} for i, (claim, verdict) in enumerate(verdicts)]
    return pd.DataFrame(rows, columns=study.VERDICT_COLUMNS)


def test_the_summary_names_every_comparison_under_its_own_verdict():
    table = _verdict_rows(("1", "inconclusive"), ("2", "contradicted"), ("control", "supported"))
    lines = study.summary_lines(table)
    assert lines[0].startswith("Supported, 1 of 3 comparisons: the control on data-2")
    assert lines[1].startswith("Contradicted, 1 of 3 comparisons: claim 2 on data-1")
    assert lines[2].startswith("Inconclusive, 1 of 3 comparisons: claim 1 on data-0")
    assert lines[-1] == "Of the paper's four claims, none is supported at this scale."  # the control is no claim
    table = _verdict_rows(("3", "supported"), ("1", "supported"), ("rerun", "agrees"), ("1", "contradicted"))
    assert study.summary_lines(table)[-1] == ("Of the paper's four claims, supported: claim 1 (on data-1; not on "
                                              "data-3 (contradicted)); claim 3 (on data-0) at this scale.")


# --- What make mutation left alive in study.py (a sample of 30) -----------------------------------------------

def test_claim_1_names_the_best_baseline_of_each_data_set_on_its_own():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    rows = synthetic_rows(plan, lead=0.1)
    object_set, cluttered_set = plan.main_sets[:2]
    for row in rows:  # SimCLR is the best baseline on the objects, SwAV on the clutter
        if (row["dataset"], row["method"]) in ((object_set, "SimCLR"), (cluttered_set, "SwAV")):
            row["value"] += 0.05
    found = {(c["claim"], c["data"]): c["comparison"] for c in study.comparisons(rows, plan)}
    assert found[("1", object_set)] == "S2R2 - best of SimCLR, SwAV (SimCLR)"
    assert found[("1", cluttered_set)] == "S2R2 - best of SimCLR, SwAV (SwAV)"
    assert found[("2", f"{cluttered_set} vs {object_set}")] == "S2R2's lead on clutter - its lead on objects"


def test_rerun_sets_limit_only_the_subset_profile():
    plan = dataclasses.replace(QUICK, seeds=(0, 1), rerun_sets=(QUICK.main_sets[0],))
    budget, best = {"steps": {m: 10 for m in study.METHODS}}, {m: 1e-3 for m in study.METHODS}

    def main_sets(rerun):
        jobs = study.study_jobs(dataclasses.replace(plan, rerun=rerun), budget, best, Path("runs"))
        return {job["dataset"] for job in jobs if "config" in job and job["dataset"] in plan.main_sets}

    assert main_sets("subset") == {plan.main_sets[0]}
    assert main_sets("all") == set(plan.main_sets) and len(plan.main_sets) > 1


def test_the_study_commands_help_says_what_each_option_does(capsys):
    with pytest.raises(SystemExit):
        study.main(["--help"])
    said = " ".join(capsys.readouterr().out.split())
    for option, help in [("--plan", "run: the profile of s2r2lib.study.PLANS to run"),
                         ("--root", "run: where runs and probes live (default build/study)"),
                         ("--data-root", "run: a folder with Fashion-MNIST's files")]:
        assert re.search(rf" {option}(?: \S+)? {re.escape(help)}(?: --|$)", said), option  # the whole text


class FlushedLog(io.StringIO):
    """stdout as a log file sees it: the text, and where it stood each time it was flushed."""

    def __init__(self):
        super().__init__()
        self.flushed_at = set()

    def flush(self):
        self.flushed_at.add(self.tell())

    def lines_flushed_as_printed(self) -> bool:
        text = self.getvalue()
        return bool(text) and all(i + 1 in self.flushed_at for i, char in enumerate(text) if char == "\n")


def test_workers_return_results_in_job_order_and_report_progress_by_tenths(monkeypatch):
    jobs = [-i for i in range(25)]
    log = FlushedLog()
    monkeypatch.setattr(sys, "stdout", log)
    with study.Workers(1) as workers:
        assert workers.map(abs, jobs, what="here") == list(range(25))
    with study.Workers(2) as workers:
        assert workers.map(abs, jobs, what="pool") == list(range(25))
    assert log.lines_flushed_as_printed()  # in a log file as each is printed
    lines = [line for line in log.getvalue().splitlines() if line.startswith("pool: ")]
    # 25 jobs: a line every 2 done (25 // 10), and one at the end
    assert [line.split()[1] for line in lines] == [f"{n}/25" for n in (*range(2, 25, 2), 25)]


def _start_then_sleep_or_fail(job):
    """A study job for worker processes (picklable by name): marks that it started, then fails at once
    (seconds < 0) or sleeps."""
    index, seconds, folder = job
    (Path(folder) / f"{index}").touch()
    if seconds < 0:
        raise FloatingPointError("the loss diverged")
    time.sleep(seconds)
    return index


def test_a_failed_job_cancels_the_queued_ones_and_keeps_those_still_running(tmp_path, capsys):
    jobs = [(0, -1, str(tmp_path))] + [(i, 1.0, str(tmp_path)) for i in range(1, 16)]
    kept = []
    with pytest.raises(FloatingPointError, match="the loss diverged"):
        with study.Workers(2) as workers:
            workers.map(_start_then_sleep_or_fail, jobs, "runs", on_result=lambda job, index: kept.append(index))
    started = sorted(int(p.name) for p in tmp_path.iterdir())
    cancelled = int(re.search(r"runs: stopped by a failure; (\d+) queued jobs cancelled", capsys.readouterr().out)[1])
    assert 0 in started and cancelled >= 4 and len(started) + cancelled == len(jobs)  # the rest never started
    assert kept and sorted(kept) == [i for i in started if i != 0]  # every job that ran to its end was kept


def test_worker_processes_start_with_the_torch_threads_asked_for(monkeypatch):
    import concurrent.futures

    made = {}

    class Pool:  # records how the pool was made, and runs nothing
        def __init__(self, *args, **kwargs):
            made.update(kwargs)

        def shutdown(self, *args, **kwargs):
            pass

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Pool)
    with study.Workers(2, threads=3):
        pass
    assert made["initializer"] is study._init_worker and made["initargs"] == (3,)
    before = torch.get_num_threads()
    try:
        study._init_worker(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_run_is_probed_at_each_share_of_its_steps_and_at_least_at_step_1():
    assert study.snapshot_steps(10, (0.01, 0.5, 1.0)) == [1, 5, 10]
    assert study.snapshot_steps(4, (0.3, 0.4, 2.0)) == [1, 2, 4]  # shares that round alike probe once; capped


def test_the_summary_gives_each_snapshots_mean_spread_and_seeds():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    rows = synthetic_rows(plan, lead=0.1, noise=(0.0, 0.02, -0.02))
    summary = study.summary(rows)
    cell = summary[(summary["method"] == "S2R2") & (summary["dataset"] == plan.main_sets[0])]
    cell = cell[cell["images"] == cell["images"].iloc[0]].sort_values("snapshot")
    mine = study.frame(rows).query("table == 'study' and method == 'S2R2' and dataset == @plan.main_sets[0]")
    mine = mine[mine["images"] == cell["images"].iloc[0]]
    last = mine[mine["final"]]
    final = cell[cell["final"]].iloc[0]
    assert final["n"] == 3 and final["mean"] == pytest.approx(last["value"].mean())
    assert final["std"] == pytest.approx(last["value"].std(ddof=1)) and final["steps"] == last["steps"].mean()
    assert cell["final"].tolist() == [False] * (len(cell) - 1) + [True]
    assert cell["snapshot"].tolist() == list(range(len(cell)))
    floors = summary[summary["method"] == study.FLOOR]  # a floor (no lr, no batch) is its own run's one probe
    assert len(floors) > 0 and floors["final"].all() and (floors["snapshot"] == 0).all() and (floors["n"] == 3).all()


def test_workers_hand_each_finished_job_and_its_result_to_on_result():
    for count in (1, 2):
        seen = []
        with study.Workers(count) as workers:
            assert workers.map(abs, [-3, -1, -2], on_result=lambda job, result: seen.append((job, result))) == [3, 1, 2]
        assert sorted(seen) == [(-3, 3), (-2, 2), (-1, 1)], count


def test_the_budget_table_reports_what_each_method_was_given():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    rows = [{**r, "views_seen": 800} if r["method"] == "S2R2" else r for r in synthetic_rows(plan, lead=0.1)]
    table = study.budget_table(rows, plan, {"step_s": {"S2R2": 0.5}})
    assert list(table.columns) == ["data", "method", "B", "views per image", "lr", "step_s (timed)", "steps",
                                   "images seen", "views seen", "TFLOPs", "train_s"]
    assert len(table) == len(plan.main_sets) * len(study.METHODS)
    s2r2 = table[(table["method"] == "S2R2") & (table["data"] == plan.main_sets[0])].iloc[0]
    config = study.method_config("S2R2", plan, 0.001, 100, plan.main_sets[0])
    assert (s2r2["steps"], s2r2["B"], s2r2["views per image"], s2r2["lr"]) == (100, config.images_per_batch, 8, 0.001)
    assert s2r2["images seen"] == 100 * config.images_per_batch and s2r2["views seen"] == 800  # as the run counted
    assert s2r2["TFLOPs"] == pytest.approx(100 * study.flops_per_step(config) / 1e12)
    assert s2r2["step_s (timed)"] == 0.5 and s2r2["train_s"] == 1.0
    simclr = table[table["method"] == "SimCLR"].iloc[0]
    assert math.isnan(simclr["step_s (timed)"])  # not timed: not measured, not zero


@pytest.mark.smoke
def test_a_study_job_trains_probes_its_snapshots_and_reuses_a_finished_run(tmp_path, monkeypatch):
    budget, best = {"steps": {m: 6 for m in study.METHODS}}, {m: 1e-3 for m in study.METHODS}
    jobs = study.study_jobs(dataclasses.replace(QUICK, seeds=(0, 1)), budget, best, tmp_path)
    job = next(j for j in jobs if j.get("method") == "S2R2" and j["dataset"] == QUICK.main_sets[0] and
               j["config"]["seed"] == 0)
    rows = study.run_job(job)
    config = train.TrainConfig.from_dict(job["config"])
    assert [int(r["steps"]) for r in rows] == list(job["probe_steps"])
    assert all(r["method"] == "S2R2" and r["table"] == job["table"] and r["dataset"] == job["dataset"] for r in rows)
    assert [int(r["views_seen"]) for r in rows] == [s * config.views_in_batch for s in job["probe_steps"]]
    assert all(0 <= float(r["value"]) <= 1 and r["views"] == config.views_per_image for r in rows)
    per_step = {round(float(r["epochs"]) / int(r["steps"]), 3) for r in rows}  # epochs = steps x B / images
    assert len(rows) > 1 and len(per_step) == 1 and 0 < per_step.pop() < 1
    images = config.data_options["n"]  # to three decimals, as notebook 03's rows
    assert [r["epochs"] for r in rows] == [round(s * config.images_per_batch / images, 3) for s in job["probe_steps"]]
    assert any((tmp_path / "probes").iterdir())  # the probes' cache lives in the study's folder, beside its runs
    monkeypatch.setattr(study, "train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert [r["value"] for r in study.run_job(job)] == [r["value"] for r in rows]


def test_a_floor_job_probes_the_random_init_encoder_the_plan_trains(tmp_path, monkeypatch):
    plan = dataclasses.replace(QUICK, seeds=(0, 1), view_size=24, small_input=False)  # neither is a default
    budget, best = {"steps": {m: 6 for m in study.METHODS}}, {m: 1e-3 for m in study.METHODS}
    jobs = study.study_jobs(plan, budget, best, tmp_path)
    assert {j["config"]["view_size"] for j in jobs if "config" in j} == {24}
    job = next(j for j in jobs if "floor" in j and j["floor"] is None)
    calls = []
    monkeypatch.setattr(study, "probe_encoder", lambda checkpoint, **kw: calls.append((checkpoint, kw)) or
                        {"top1": 0.25, "probe_s": 0.5})
    (row,) = study.run_job(job)
    ((checkpoint, kw),) = calls
    assert checkpoint is None and (kw["arch"], kw["small_input"], kw["size"], kw["seed"], kw["device"]) == (
        plan.arch, False, 24, job["seed"], plan.device)
    assert (row["method"], row["value"], row["seed"], row["wall_s"]) == (study.FLOOR, "0.2500", job["seed"], "0.5")


def test_the_lr_searchs_probe_fits_the_first_train_images_and_scores_the_last_never_the_test_split(tmp_path,
                                                                                                   monkeypatch):
    seen = {}

    def fake_fit(train_x, train_y, test_x, test_y, max_iter, device):
        seen.update(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
        return {"top1": 0.5, "c": 1.0}

    monkeypatch.setattr(study, "fit_probe", fake_fit)
    study.probe_encoder("raw", "embedded", n_train=60, n_test=30, n_validation=20, validation=True, cache=tmp_path)
    train_set, _ = study.probe_data("embedded", 60, 30)
    pixels = study.raw_pixels(train_set.images).double()
    assert torch.equal(seen["train_x"], pixels[:40]) and torch.equal(seen["train_y"], train_set.labels[:40])
    assert torch.equal(seen["test_x"], pixels[40:]) and torch.equal(seen["test_y"], train_set.labels[40:])


def test_probe_encoder_runs_on_the_cpu_unless_told(tmp_path, monkeypatch):
    fits = []
    real = study.fit_probe
    monkeypatch.setattr(study, "fit_probe", lambda *args: fits.append(args[-1]) or real(*args))
    result = study.probe_encoder("raw", "embedded", n_train=60, n_test=30, n_validation=20, validation=False,
                                 cache=tmp_path, max_iter=20)
    assert 0 <= result["top1"] <= 1 and result["probe_s"] > 0
    assert fits == ["cpu"]  # the L-BFGS fit's device, not told one


# --- What an unbiased sample of study.py's mutants (seed 1) left alive ------------------------------------------

def test_a_run_folder_follows_the_config_and_ignores_runtime_fields():
    config = study.method_config("S2R2", QUICK, 1e-3, 10, QUICK.main_sets[0])
    folder = study.run_folder(config, "runs", "label")
    assert study.run_folder(dataclasses.replace(config, progress=not config.progress), "runs", "label") == folder
    assert study.run_folder(dataclasses.replace(config, lr=2e-3), "runs", "label") != folder
    assert study.run_folder(dataclasses.replace(config, seed=config.seed + 1), "runs", "label") != folder


def test_claim_intervals_use_the_holm_corrected_level():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    rows = synthetic_rows(plan, lead=0.10)
    for row in rows:  # the lead varies by seed, so the interval's width depends on its level
        if row["method"] == "S2R2" and row["dataset"] in plan.main_sets:
            row["value"] += (0.0, 0.02, -0.01)[row["seed"]]
    claim1 = study.verdicts(rows, plan).query("claim == '1'")
    assert (claim1["ci_high"] - claim1["ci_low"] > 0.01).all()
    for _, row in claim1.iterrows():
        diffs = next(c["diffs"] for c in study.comparisons(rows, plan) if c["claim"] == "1" and c["data"] == row["data"])
        assert (row["effect"], row["ci_low"], row["ci_high"]) == pytest.approx(study.t_interval(diffs, row["level"]))
    assert sorted(claim1["level"]) == pytest.approx([0.025, 0.05])


def test_the_floor_is_the_random_init_of_the_data_sets_own_family():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    rows = synthetic_rows(plan, lead=0.1)
    other = [{**r, "dataset": "fashion-mnist", "value": 0.9} for r in rows if r["method"] == study.FLOOR]
    search = [{**r, "table": "study-lr", "value": 0.9} for r in rows if r["method"] == study.FLOOR]
    floor = study._floor(study.frame(rows + other + search), plan.main_sets[0])
    assert floor.tolist() == pytest.approx([0.2, 0.204, 0.196])  # not another family's, not the lr search's


def test_the_budget_table_reads_each_methods_own_runs():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    rows = synthetic_rows(plan, lead=0.1)
    for row in rows:
        if row["method"] == "SwAV":
            row["train_s"] = 7
    table = study.budget_table(rows, plan)
    assert table["step_s (timed)"].dtype == float and table["step_s (timed)"].isna().all()  # no timing pass given
    assert set(table[table["method"] == "SwAV"]["train_s"]) == {7.0}
    assert set(table[table["method"] != "SwAV"]["train_s"]) == {1.0}


# --- Another data set's arm (the fashion profile) -----------------------------------------------------

def _fashion_arm(plan, lead: float) -> list[dict]:
    """synthetic_rows for the Fashion-MNIST pair: main runs, with floors of the fashion family at 0.6."""
    arm = dataclasses.replace(plan, main_sets=("fashion-mnist", "fashion-mnist-clutter"))
    rows = [r for r in synthetic_rows(arm, lead) if r["dataset"] in arm.main_sets or r["method"] == study.FLOOR]
    return [dict(r, dataset="fashion", value=r["value"] + 0.4) if r["method"] == study.FLOOR else r for r in rows]


def test_the_fashion_profile_trains_its_sets_main_runs_and_floors_only():
    plan = study.PLANS["fashion"]
    assert plan.rerun == "sets" and plan.seeds == (0, 1, 2) and plan.n_probe_test == 10000
    budget, best = {"steps": {m: 10 * (i + 1) for i, m in enumerate(study.METHODS)}}, {m: 1e-3 for m in study.METHODS}
    jobs = study.study_jobs(plan, budget, best, Path("runs"))
    runs, floor_jobs = [j for j in jobs if "config" in j], [j for j in jobs if "floor" in j]
    assert {j["dataset"] for j in runs} == {"fashion-mnist", "fashion-mnist-clutter"}  # no claim 3 or 4 runs
    assert len(runs) == 2 * len(study.METHODS) * 3 and {j["table"] for j in jobs} == {"study"}
    assert {j["method"]: j["config"]["max_steps"] for j in runs} == budget["steps"]  # the committed budget
    assert sorted((j["floor"] or "", j["seed"]) for j in floor_jobs) == [("", 0), ("", 1), ("", 2), ("raw", 0)]
    assert {j["dataset"] for j in floor_jobs} == {"fashion"} and floor_jobs[0]["probe"]["n_test"] == 10000


def test_a_sets_profile_without_its_files_trains_nothing_and_says_not_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "committed_rows", lambda: synthetic_rows(dataclasses.replace(QUICK, seeds=(0, 1)), 0.1))
    plan = dataclasses.replace(study.PLANS["fashion"], images=QUICK.images, sweep_images=QUICK.sweep_images)
    outcome = study.run_study(plan, tmp_path, data_root=str(tmp_path / "empty"))
    assert outcome["rows"] == [] and outcome["search"] == [] and outcome["best_lr"] == {}
    assert outcome["budget"] == study.committed_plan(study.committed_rows(), plan)[0]  # what it would have trained
    assert set(outcome["not_measured"]) == set(plan.main_sets)
    assert all("apt-get install dataset-fashion-mnist" in why for why in outcome["not_measured"].values())


def test_a_sets_profile_searches_the_lrs_on_its_first_set_then_trains_its_sets(tmp_path, monkeypatch):
    from test_data import _write_fashion

    monkeypatch.setattr(study, "committed_rows", lambda: synthetic_rows(dataclasses.replace(QUICK, seeds=(0, 1)), 0.1))
    calls = []
    monkeypatch.setattr(study, "run_job", fake_study_job(calls))
    _write_fashion(tmp_path / "fm")
    plan = dataclasses.replace(study.PLANS["fashion"], images=QUICK.images, sweep_images=QUICK.sweep_images,
                               seeds=(0, 1), workers=1)  # (in this process: the fake run_job)
    outcome = study.run_study(plan, tmp_path / "study", data_root=str(tmp_path / "fm"))
    assert outcome["not_measured"] == {} and set(outcome["best_lr"]) == set(study.METHODS)
    search = [job for job in calls if job["table"] == "study-lr"]
    assert {job["dataset"] for job in search} == {"fashion-mnist"}
    assert {(job["method"], job["config"]["lr"]) for job in search} >= {(m, lr) for m in study.METHODS for lr in plan.lrs}
    assert {job["config"]["data_root"] for job in search} == {str(tmp_path / "fm")}
    runs = [job for job in calls if job["table"] == "study" and "config" in job]
    assert {job["dataset"] for job in runs} == set(plan.main_sets)
    assert {(job["method"], job["config"]["lr"]) for job in runs} == set(outcome["best_lr"].items())


def test_the_verdicts_judge_every_set_the_rows_hold_beside_the_plans_own():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    rows = synthetic_rows(plan, lead=0.1) + _fashion_arm(plan, lead=0.2)
    judged = study.judged_plan(rows, plan)
    assert judged.main_sets == (*plan.main_sets, "fashion-mnist", "fashion-mnist-clutter")
    assert study.judged_plan(synthetic_rows(plan, lead=0.1), plan) is plan  # nothing else held: unchanged
    arm = dataclasses.replace(plan, main_sets=("fashion-mnist-clutter", "fashion-mnist"))
    assert study.judged_plan(rows, arm).main_sets == judged.main_sets  # one order, whichever profile ran
    table = study.verdicts(rows, plan)
    claim1 = table[table["claim"] == "1"].set_index("data")
    assert claim1["effect"].to_dict() == pytest.approx({**dict.fromkeys(plan.main_sets, 0.1), "fashion-mnist": 0.2,
                                                        "fashion-mnist-clutter": 0.2})
    assert sorted(claim1["level"]) == pytest.approx([0.05 / 4, 0.05 / 3, 0.05 / 2, 0.05])  # Holm over 4 sets
    assert set(table[table["claim"] == "2"]["data"]) == {"embedded-cluttered vs embedded-object",
                                                         "fashion-mnist-clutter vs fashion-mnist"}
    assert len(table[table["claim"] == "control"]) == 2 * 4
    gains = study.checks(rows, plan)
    fashion = gains[(gains["data"] == "fashion-mnist") & (gains["comparison"] == "S2R2 - random-init")]
    assert fashion["effect"].tolist() == pytest.approx([0.5 + 0.2 - 0.6])  # against its own family's floor
    assert study.floors(rows, judged.main_sets)[study.FLOOR] == pytest.approx(
        {**dict.fromkeys(plan.main_sets, 0.2), "fashion-mnist": 0.6, "fashion-mnist-clutter": 0.6})
    assert set(study.budget_table(rows, plan)["data"]) == set(judged.main_sets)


def test_rows_merged_into_the_committed_ones_replace_rows_with_their_key():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    committed = [{k: str(v) for k, v in r.items()} for r in synthetic_rows(plan, lead=0.1)]
    long = [dict(r, table=study.LONG_TABLE, value=0.9) for r in synthetic_rows(plan, lead=0.1)
            if r["method"] == "S2R2" and r["dataset"] == plan.main_sets[0]]
    again = [dict(r, value=0.8) for r in long]
    for rerun in ("long", "extend", "sets"):
        rows = study.rows_to_judge(dataclasses.replace(plan, rerun=rerun, budget_factor=4 if rerun == "long" else 1),
                                   {"search": [], "rows": again}, committed + long)
        df = pd.DataFrame(rows)
        mine = df[df["table"] == study.LONG_TABLE]
        assert len(mine) == len(long) and set(mine["value"].astype(float)) == {0.8}  # in place of, never beside
        assert len(df) == len(committed) + len(long)
    assert study.rows_to_judge(dataclasses.replace(plan, rerun="subset"), {"search": [], "rows": again}, committed) == committed


def test_the_budget_checks_at_the_long_budget_read_only_the_sets_it_trained():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    committed = synthetic_rows(plan, lead=0.1) + _fashion_arm(plan, lead=0.1)
    long = [dict(r, table=study.LONG_TABLE, steps=4 * r["steps"]) for r in synthetic_rows(plan, lead=0.1)
            if r["dataset"] in plan.main_sets and r["method"] in study.METHODS]
    table = study.budget_checks(committed + long, plan)
    assert set(table[table["budget"] == 4]["data"]) == {*plan.main_sets, "embedded-cluttered vs embedded-object"}
    fashion = dataclasses.replace(plan, main_sets=("fashion-mnist", "fashion-mnist-clutter"))
    assert study.long_plan(committed + long, fashion).main_sets == plan.main_sets
    assert "fashion-mnist" in set(table[table["budget"] == 1]["data"])


# --- Figure 1's sweep (notebook 05) --------------------------------------------------------------------

def test_batch_sweep_trains_each_point_of_both_axes_once_and_probes_it(tmp_path, spy):
    from s2r2lib import data as datasets, probe

    base = train.TrainConfig(max_steps=2, images_per_batch=4, views_per_image=2, data_options={"n": 32}, seed=3,
                             progress=False)
    labelled = datasets.load("embedded", split="train", size=40, n=60, mode="object")
    train_set, test_set = datasets.subset(labelled, 40, 0), datasets.load("embedded", split="test", size=40, n=20,
                                                                          mode="object")
    rows = study.batch_sweep(base, [2, 4], [2, 3], tmp_path, train_set, test_set, table="figure1", dataset="toy")
    points = [(2, 2), (4, 2), (4, 3)]  # (4, 2) is on both axes: trained once
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"B{b}-K{k}" for b, k in points]
    assert [(r["images"], r["views"]) for r in rows] == [p for p in points for _ in probe.METRICS]
    assert [r["metric"] for r in rows] == list(probe.METRICS) * 3
    assert {(r["table"], r["dataset"], r["method"], r["seed"]) for r in rows} == {("figure1", "toy", "S2R2", 3)}
    probed = spy(probe, "evaluate")
    floor = study.floor_rows(base, train_set, test_set, "figure1", "toy")
    (call,) = probed  # the floor's random-init encoder is built as the runs' own (small_input is not the default)
    assert (call["checkpoint"], call["size"], call["arch"], call["small_input"], call["seed"]) == (
        None, base.view_size, base.arch, True, 3)
    assert [r["metric"] for r in floor] == list(probe.METRICS)
    assert {(r["table"], r["dataset"], r["method"], r["seed"], r["arch"], r["images"]) for r in floor} == {
        ("figure1", "toy", "random-init", 3, base.arch, "")}
    linear = study.as_points(rows + floor)
    assert linear == [{"images": b, "views": k, "value": float(r["value"]), "seed": 3}
                      for (b, k), r in zip(points, [r for r in rows if r["metric"] == "linear_top1"])]
    assert [p["value"] for p in study.as_points(rows, "knn20_top1")] == [
        float(r["value"]) for r in rows if r["metric"] == "knn20_top1"]


def test_fit_probe_extends_c_up_to_its_upper_limit_inclusive(monkeypatch):
    from s2r2lib import probe

    def largest_c_wins(train_x, train_y, test_x, test_y, c_grid, max_iter, device):
        best = max(c_grid)
        return probe.ProbeResult(top1=0.5, c=best, validation={c: c / 1e6 for c in c_grid}, predictions=None)

    monkeypatch.setattr(probe, "linear_probe", largest_c_wins)
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    result = study.fit_probe(x, y, x, y)
    assert result["c"] == study.C_LIMITS[1] == 1e4  # 100 -> 1,000 -> 10,000, the limit itself, then no further
    assert sorted(float(c) for c in result["validation"]) == [1.0, 10.0, 100.0, 1e3, 1e4]


def test_fit_probe_extends_c_down_to_its_lower_limit_inclusive(monkeypatch):
    from s2r2lib import probe

    def smallest_c_wins(train_x, train_y, test_x, test_y, c_grid, max_iter, device):
        best = min(c_grid)
        return probe.ProbeResult(top1=0.5, c=best, validation={c: -c for c in c_grid}, predictions=None)

    monkeypatch.setattr(probe, "linear_probe", smallest_c_wins)
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    result = study.fit_probe(x, y, x, y)
    assert result["c"] == pytest.approx(study.C_LIMITS[0]) == 1e-4  # 1 -> 0.1 -> ... -> 1e-4, a decade at a time
    assert sorted(float(c) for c in result["validation"]) == pytest.approx([1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0])


def test_every_probe_of_the_study_defaults_to_the_probes_lbfgs_iterations():
    import inspect

    from s2r2lib import probe

    default = inspect.signature(probe.linear_probe).parameters["max_iter"].default
    assert [inspect.signature(f).parameters["max_iter"].default for f in (study.fit_probe, study.probe_encoder)] == \
        [default, default]
    assert study.PLANS["full"].probe_max_iter == default  # the study's plans probe as notebook 03 does


def test_lr_search_scores_every_method_at_every_lr_on_the_given_set_and_extends_edge_winners(monkeypatch, tmp_path,
                                                                                              capsys):
    jobs = []
    grid = sorted(QUICK.lrs)
    up, down = grid[-1] / grid[-2], grid[0] / grid[1]
    peak = float(f"{grid[-1] * up:.3g}")  # S2R2's best lr: one step past the grid

    def fake_run_job(job):  # validation top-1 rises with the lr, except SwAV's, which falls, and S2R2's, which peaks
        jobs.append(job)
        lr = job["config"]["lr"]
        value = {"SwAV": 1 - lr, "S2R2": -abs(math.log(lr / peak))}.get(job["method"], lr)
        return [{"table": job["table"], "dataset": job["dataset"], "method": job["method"], "lr": f"{lr:g}",
                 "value": value}]

    monkeypatch.setattr(study, "run_job", fake_run_job)
    budget = {"steps": {m: 10 + i for i, m in enumerate(study.METHODS)}}
    rows, best = study.lr_search(QUICK, budget, tmp_path, study.Workers(1), dataset="embedded-cluttered")
    far = study.MAX_LR_EXTENSIONS
    assert best == pytest.approx({"S2R2": peak, "SimCLR": grid[-1] * up ** far, "MV-NT-Xent": grid[-1] * up ** far,
                                  "SwAV": grid[0] * down ** far}, rel=0.01)  # 3 significant digits
    tried = {m: sorted(float(r["lr"]) for r in rows if r["method"] == m) for m in study.METHODS}
    assert len(tried["S2R2"]) == len(grid) + 2  # past its peak once, then inside: the search stops
    assert all(len(tried[m]) == len(grid) + far for m in ("SimCLR", "SwAV", "MV-NT-Xent"))  # stopped at the limit
    assert len(rows) == len(jobs)
    shown = capsys.readouterr().out
    assert all((f"{m}'s best lr" in shown) == (m != "S2R2") for m in study.METHODS)  # still at an edge: said
    assert {(j["table"], j["dataset"], j["config"]["seed"]) for j in jobs} == {("study-lr", "embedded-cluttered", 0)}
    assert all(j["probe_steps"] == [budget["steps"][j["method"]]] == [j["config"]["max_steps"]] for j in jobs)
    default = study.lr_search(QUICK, budget, tmp_path, study.Workers(1))[0]
    assert {r["dataset"] for r in default} == {QUICK.search_set}


def test_swav_takes_the_plans_prototypes_and_queue():
    plan = dataclasses.replace(QUICK, swav_prototypes=12, swav_queue=48)  # not TrainConfig's defaults
    config = study.method_config("SwAV", plan, 1e-3, 100)
    assert (config.prototypes, config.queue_length, config.prototype_freeze_steps) == (12, 48, 5)


def test_workers_in_this_process_use_one_thread_by_default_and_name_their_jobs(capsys):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with study.Workers() as workers:
            assert torch.get_num_threads() == 1
            assert workers.map(abs, [-1, -2]) == [1, 2]
    finally:
        torch.set_num_threads(before)
    assert capsys.readouterr().out.startswith("jobs: 2 done in ")


def test_only_fashion_mnist_runs_take_the_data_root():
    plan = study.PLANS["fashion"]
    jobs = {d: study._job(plan, Path("runs"), "/data/fm", "study", "S2R2", 1e-3, 10, d, 0, d)
            for d in ("fashion-mnist", "embedded-object")}
    assert (jobs["fashion-mnist"]["config"]["data_root"], jobs["embedded-object"]["config"]["data_root"]) == \
        ("/data/fm", None)  # the embedded sets are made here, and never read a folder


def test_a_last_step_exactly_the_seed_sd_counts_as_levelled_off():
    # final top-1 0.25, 0.5, 0.75 (SD 0.25, exactly, in binary), each 0.25 above the snapshot before
    rows = [{"table": "study", "dataset": "embedded-object", "method": "S2R2", "images": 16, "views": 8, "seed": seed,
             "lr": "0.001", "steps": steps, "views_seen": 0, "train_s": 1, "metric": "linear_top1",
             "value": 0.25 * (seed + 1) - (0.25 if steps == 50 else 0)} for seed in range(3) for steps in (50, 100)]
    rows += [{"table": "study", "dataset": "embedded", "method": study.FLOOR, "images": "", "views": "", "seed": seed,
              "lr": "", "steps": 0, "views_seen": 0, "train_s": 0, "metric": "linear_top1", "value": 0.0}
             for seed in range(3)]
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2), main_sets=("embedded-object",))
    levelled = study.checks(rows, plan).query("claim == 'levelled'").iloc[0]
    assert (levelled["effect"], levelled["threshold"], levelled["verdict"]) == (0.25, 0.25, "levelled off")


def test_the_timing_pass_sizes_every_method_and_is_read_back(tmp_path, monkeypatch, capsys):
    with study.Workers(1) as workers:
        budget = study.measure_budget(QUICK, tmp_path, workers)
        said = capsys.readouterr().out  # the device log's record of the budget, whatever happens next
        s2r2_ms, s2r2_steps = 1e3 * budget["step_s"]["S2R2"], budget["steps"]["S2R2"]
        assert f"budget: S2R2 {s2r2_ms:.1f} ms a step -> {s2r2_steps} steps, " in said
        assert re.search(r"^timing pass: 1 done in \d+ s$", said, flags=re.M)  # its progress, named
        assert set(budget["steps"]) == set(study.METHODS) and all(s >= 4 for s in budget["steps"].values())
        assert all(budget["steps"][m] == max(4, round(QUICK.train_seconds / budget["step_s"][m])) for m in study.METHODS)
        monkeypatch.setattr(study, "time_job", None)  # a second call reads the file: no timing pass
        for changed in (dict(table="study-gpu"), dict(checkpoint_every=10**6)):  # (name rows and files, not runs)
            assert study.measure_budget(dataclasses.replace(QUICK, **changed), tmp_path, workers) == budget


def test_s2r2s_lead_is_not_a_number_where_a_set_has_no_baseline():
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2))
    rows = [r for r in synthetic_rows(plan, lead=0.1) if r["method"] not in study.BASELINES]
    lead = study._lead(study.frame(rows), plan.main_sets[0])
    assert list(lead.index) == [0, 1, 2] and lead.isna().all()  # one NaN per S2R2 seed, not an empty series


def test_run_and_publish_judges_a_rerun_beside_the_committed_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("S2R2_RESULTS_DIR", str(tmp_path / "results"))
    plan = dataclasses.replace(QUICK, seeds=(0, 1, 2), rerun="extend")
    committed = [dict(r, commit="aaa1111") for r in synthetic_rows(plan, lead=0.1)]
    monkeypatch.setattr(study, "committed_rows", lambda: committed)
    five = dataclasses.replace(plan, seeds=(0, 1, 2, 3, 4))
    # seeds 3 and 4, with S2R2 far behind: judged beside the committed seeds 0-2, they change the verdicts
    extension = [dict(r, commit="bbb2222") for r in synthetic_rows(five, lead=-0.3, noise=(0, 0, 0, 0.002, -0.002))
                 if r["seed"] in (3, 4)]
    monkeypatch.setattr(study, "run_study", lambda *a: {"search": [], "rows": extension, "budget": {},
                                                        "not_measured": {}})
    table = study.run_and_publish(plan, tmp_path / "study")
    judged = committed + extension  # seeds 3 and 4 are new keys: merged, they join the committed rows
    expected = study.verdicts(judged, study.judged_plan(judged, plan))
    assert table[["claim", "data", "verdict"]].equals(expected[["claim", "data", "verdict"]]) and len(table) > 0
    before = study.verdicts(committed, study.judged_plan(committed, plan))
    assert not table["verdict"].equals(before["verdict"])  # the rerun's seeds were judged, not only the committed
    assert set(table["seeds"]) == {5}
    written = results.read_table(tmp_path / "results" / "study_verdicts.csv")
    assert written["verdict"].tolist() == table["verdict"].tolist() and len(written) == len(table)
    assert (tmp_path / "results" / "study_budget.csv").is_file()
    budget = results.read_table(tmp_path / "results" / "study_budget.csv")
    for judged_table in (written, budget):  # how they were made: the rows' commits, and the judging's
        assert set(judged_table["rows_commits"]) == {"aaa1111 bbb2222"}
        assert set(judged_table["commit"]) == {results.git_commit()} and judged_table["date"].str.len().min() == 20


# --- The journal: a study stopped on one machine goes on on another --------------------------------------

def keyed_value(job) -> float:
    """A fake probe score that depends on the job alone (its key), not on where it ran."""
    return int(study.job_key(job)[:6], 16) / 16**6


def fake_study_job(calls, stop_after=None):
    def run_job(job):
        if stop_after is not None and len(calls) == stop_after:
            raise KeyboardInterrupt  # the device call's time limit
        calls.append(job)
        lr = f"{job['config']['lr']:g}" if "config" in job else ""
        return [{"table": job["table"], "dataset": job["dataset"], "method": job.get("method", "floor"), "lr": lr,
                 "value": keyed_value(job)}]
    return run_job


def test_a_stopped_study_goes_on_elsewhere_from_its_journal_and_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "time_job", lambda job: dict(zip(study.METHODS, (0.01, 0.02, 0.03, 0.04))))
    whole = []
    monkeypatch.setattr(study, "run_job", fake_study_job(whole))
    uninterrupted = study.run_study(QUICK, tmp_path / "whole")
    stopped, stop_after = [], sum(job["table"].endswith("-lr") for job in whole) + 5  # 5 jobs after the lr search
    monkeypatch.setattr(study, "run_job", fake_study_job(stopped, stop_after))
    with pytest.raises(KeyboardInterrupt):
        study.run_study(QUICK, tmp_path / "first")
    assert len(study.Journal(tmp_path / "first").read()) == stop_after  # each job written as it finished
    elsewhere = tmp_path / "second"  # another machine: only the two small files travel
    elsewhere.mkdir()
    for name in (study.JOURNAL, study.budget_path(QUICK, "").name):
        (elsewhere / name).write_bytes((tmp_path / "first" / name).read_bytes())
    monkeypatch.setattr(study, "time_job", None)  # the budget is read back, not timed again
    rest = []
    monkeypatch.setattr(study, "run_job", fake_study_job(rest))
    log = FlushedLog()
    monkeypatch.setattr(sys, "stdout", log)  # a device log: a file, written as the study flushes it
    resumed = study.run_study(QUICK, elsewhere)
    searched = sum(job["table"].endswith("-lr") for job in whole)
    said = log.getvalue()
    assert log.lines_flushed_as_printed()  # each progress line is in the log as soon as it is printed
    grid = len(study.METHODS) * len(QUICK.lrs)  # the search's first round (the edge extensions come after it)
    assert f"lr search: {grid} of {grid} jobs read from {elsewhere / study.JOURNAL}" in said
    assert f"runs: 5 of {len(whole) - searched} jobs read from" in said
    assert len(rest) == len(whole) - stop_after
    assert {study.job_key(job) for job in stopped + rest} == {study.job_key(job) for job in whole}
    for part in ("best_lr", "search", "rows"):
        assert resumed[part] == uninterrupted[part]


def test_a_journal_skips_a_line_cut_short_and_appends_after_it(tmp_path):
    journal = study.Journal(tmp_path)
    jobs = [{"floor": None, "seed": seed, "table": "study", "dataset": "embedded",
             "probe": {"device": "cpu", "cache": str(tmp_path), "data_root": None}} for seed in (0, 1)]
    journal.append(jobs[0], [{"value": 0.5}])
    with open(journal.path, "a") as handle:
        handle.write('{"job": "cut short by a ki')
    assert journal.read() == {study.job_key(jobs[0]): [{"value": 0.5}]}
    journal.append(jobs[1], [{"value": 0.25}])
    assert journal.read() == {study.job_key(jobs[0]): [{"value": 0.5}], study.job_key(jobs[1]): [{"value": 0.25}]}
    journal.append(jobs[0], [{"value": 0.75}])  # after a whole line: no blank line between (one line per job)
    lines = journal.path.read_text().split("\n")
    assert len(lines) == 5 and lines[1] == '{"job": "cut short by a ki' and lines[-1] == ""
    assert [json.loads(line)["rows"] for line in (lines[0], lines[2], lines[3])] == [[{"value": v}] for v in (.5, .25, .75)]


def test_a_study_run_or_job_of_other_training_code_is_never_read_back(tmp_path, monkeypatch):
    budget, best = {"steps": {m: 6 for m in study.METHODS}}, {m: 1e-3 for m in study.METHODS}
    job = study.study_jobs(QUICK, budget, best, tmp_path)[-1]
    config = study.method_config("S2R2", QUICK, 1e-3, 10)
    before = study.job_key(job), study.run_folder(config, "runs", "label")
    assert study._training_code() == reproduce.code_digest()
    monkeypatch.setattr(study, "_training_code", lambda: "the digest after an edit of losses.py")
    after = study.job_key(job), study.run_folder(config, "runs", "label")
    assert after[0] != before[0] and after[1] != before[1]


def test_a_journal_holding_every_job_starts_no_worker(tmp_path, capsys):
    journal = study.Journal(tmp_path)
    jobs = [{"floor": None, "seed": seed, "table": "study", "dataset": "embedded",
             "probe": {"device": "cpu", "cache": str(tmp_path), "data_root": None}} for seed in (0, 1)]
    for job, value in zip(jobs, (0.5, 0.25)):
        journal.append(job, [{"value": value}])

    class NoWorkers:
        def map(self, *args, **kwargs):
            raise AssertionError("every job is in the journal")

    assert journal.run(NoWorkers(), None, jobs, "probes") == [[{"value": 0.5}], [{"value": 0.25}]]
    assert capsys.readouterr().out == f"probes: 2 of 2 jobs read from {journal.path}\n"


def test_workers_run_as_many_processes_as_asked():
    workers = study.Workers(3, threads=1)
    try:
        assert workers.workers == 3 and workers.pool._max_workers == 3
    finally:
        workers.pool.shutdown()


def test_a_jobs_key_ignores_its_folders_and_follows_what_it_trains_and_probes(tmp_path):
    budget, best = {"steps": {m: 6 for m in study.METHODS}}, {m: 1e-3 for m in study.METHODS}

    def keys(plan, root, data_root=None):
        return [study.job_key(job) for job in study.study_jobs(plan, budget, best, root, data_root)]

    here = keys(QUICK, tmp_path / "a")
    assert len(set(here)) == len(here)  # every job its own key
    assert keys(QUICK, tmp_path / "b", data_root=str(tmp_path)) == here
    assert keys(dataclasses.replace(QUICK, checkpoint_every=10**6), tmp_path) == here  # how, not what
    for changed in (dict(device="cuda"), dict(probe_max_iter=7)):
        assert not set(keys(dataclasses.replace(QUICK, **changed), tmp_path)) & set(here), changed
    raw = {study.job_key(job) for job in study.study_jobs(QUICK, budget, best, tmp_path) if job.get("floor") == "raw"}
    assert set(keys(dataclasses.replace(QUICK, seeds=(5, 6)), tmp_path)) & set(here) == raw  # (raw pixels: no seed)
    other_lr = [study.job_key(job) for job in study.study_jobs(QUICK, budget, {**best, "S2R2": 3e-3}, tmp_path)]
    assert 0 < len(set(other_lr) - set(here)) < len(here)  # S2R2's runs only


def test_the_studys_probe_fits_on_the_studys_device(tmp_path, monkeypatch, spy):
    from s2r2lib import probe

    calls = spy(probe, "linear_probe")
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.arange(40) % 2
    study.fit_probe(x, y, x, y, max_iter=5, device="cpu")
    assert calls and {call["device"] for call in calls} == {"cpu"}
    asked = []
    monkeypatch.setattr(study, "fit_probe", lambda *a: asked.append(a[-1]) or {"top1": 0.5, "c": 1.0})
    study.probe_encoder("raw", "embedded", 40, 20, 10, False, tmp_path, device="cuda")  # raw pixels: no encoder
    assert asked == ["cuda"]
    seen = []  # an encoder's features are extracted there too (stood in for: this machine may have no GPU)
    monkeypatch.setattr(probe, "extract_features", lambda model, images, size, device="cpu": seen.append(device) or
                        torch.zeros(len(images), 4))
    study.probe_encoder(None, "embedded", 40, 20, 10, False, tmp_path / "encoder", device="cuda")
    assert seen == ["cuda", "cuda"] and asked == ["cuda", "cuda"]


def test_fresh_empties_the_study_folder_but_keeps_the_gpu_studys_journal_and_budget(tmp_path):
    root = tmp_path / "study"
    (root / "embedded-object" / "S2R2-abc").mkdir(parents=True)
    (root / "embedded-object" / "S2R2-abc" / "checkpoint.pt").write_bytes(b"run")
    cpu = json.dumps({"job": "a", "rows": [{"device": "cpu:AMD EPYC (2 cores, 1 threads)", "value": "0.5"}]})
    gpu = json.dumps({"job": "b", "rows": [{"device": "cuda:NVIDIA H200", "value": "0.6"}]})
    (root / study.JOURNAL).write_text(f"{cpu}\n{gpu}\n{{\"job\": \"c\", \"ro\n")  # the last cut short by a kill
    gpu_budget = study.budget_path(study.PLANS["gpu"], root)
    for plan in (study.PLANS["full"], study.PLANS["gpu"]):
        study.budget_path(plan, root).write_text(json.dumps({"plan": dataclasses.asdict(plan), "steps": {}}))
    study.clear_for_fresh(root)
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted([study.JOURNAL,
                                                                                            gpu_budget.name])
    assert (root / study.JOURNAL).read_text() == f"{gpu}\n"
    assert study.Journal(root).read() == {"b": [{"device": "cuda:NVIDIA H200", "value": "0.6"}]}
    study.clear_for_fresh(tmp_path / "none")  # nothing there: nothing to do


def test_figure1_without_a_trained_point_asks_for_a_retrain(monkeypatch):
    floor_only = pd.DataFrame([{"table": "figure1", "source": "measured", "method": "random-init", "images": None,
                                "views": None, "commit": "abc1234"}])
    monkeypatch.setattr(results, "committed_table", lambda name: floor_only)
    with pytest.raises(FileNotFoundError, match="only the floor of figure1, no trained point: set retrain = True"):
        study.committed_figure1()
    monkeypatch.setattr(results, "committed_table", lambda name: floor_only.iloc[:0])
    with pytest.raises(FileNotFoundError, match="holds no figure1 rows yet"):
        study.committed_figure1()
