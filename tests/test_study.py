"""Notebook 06's study: matched budgets, verdicts computed from the rows, and the notebook end to end."""

import json
from dataclasses import replace as dataclasses_replace

import pytest

from s2r2lib import reproduce, results, study, train

S2R2, OTHERS = "S2R2 (lr 0.001, tuned)", ["SimCLR", "SwAV"]


def rows_of(values: dict) -> list[dict]:
    """Synthetic runs.csv rows: (dataset, method) -> per-seed linear top-1 values."""
    rows = []
    for (dataset, method), seeds in values.items():
        for seed, value in enumerate(seeds):
            rows.append({"dataset": dataset, "method": method, "images": 16, "epochs": 1, "seed": seed,
                         "metric": "linear_top1", "value": f"{value:.4f}"})
    return rows


def test_method_configs_make_the_same_forward_passes_per_step():
    configs = study.method_configs(train.TrainConfig(), 128)
    assert {config.views_in_batch for config in configs.values()} == {128}
    assert [c.resolved().lr for c in configs.values()][:2] == [1e-4, 1e-3]  # paper, then tuned
    with pytest.raises(ValueError, match="multiple of 8"):
        study.method_configs(train.TrainConfig(), 100)


def test_claim1_is_supported_when_s2r2_leads_beyond_the_seed_noise():
    summary = study.summarize(rows_of({("a", S2R2): [0.60, 0.61, 0.62], ("a", "SimCLR"): [0.50, 0.51, 0.49],
                                       ("a", "SwAV"): [0.55, 0.54, 0.56]}))
    text = study.verdict_beats(summary, S2R2, OTHERS, ["a"])
    assert "supported by this miniature" in text and "not supported" not in text
    assert "61.0 ± 1.0 vs SwAV 55.0 ± 1.0 (+6.0 points, ahead)" in text
    with_floor = study.summarize(rows_of({("a", S2R2): [0.6, 0.6], ("a", "SwAV"): [0.5, 0.5],
                                          ("a", "random-init"): [0.2, 0.2]}))
    assert "random-init floor 20.0 ± 0.0" in study.verdict_beats(with_floor, S2R2, OTHERS, ["a"])


def test_claim1_is_not_supported_when_the_lead_is_within_the_noise_or_behind():
    summary = study.summarize(rows_of({("a", S2R2): [0.50, 0.60, 0.55], ("a", "SimCLR"): [0.56, 0.50, 0.53],
                                       ("b", S2R2): [0.40, 0.41, 0.42], ("b", "SimCLR"): [0.50, 0.51, 0.49]}))
    text = study.verdict_beats(summary, S2R2, OTHERS, ["a", "b", "c"], {"c": study.FASHION_MISSING})
    assert "not supported" in text and "tied" in text and "behind" in text
    assert f"c: {study.FASHION_MISSING}" in text


def test_claim2_compares_the_margin_on_clutter_with_the_margin_on_objects():
    values = {("o", S2R2): [0.60, 0.60, 0.61], ("o", "SimCLR"): [0.59, 0.59, 0.60],
              ("c", S2R2): [0.60, 0.61, 0.60], ("c", "SimCLR"): [0.50, 0.51, 0.50]}
    text = study.verdict_clutter(study.summarize(rows_of(values)), S2R2, OTHERS, pairs=[("o", "c")])
    assert "supported" in text and "not supported" not in text and "larger on clutter: yes" in text
    swapped = {(("c" if d == "o" else "o"), m): v for (d, m), v in values.items()}
    text = study.verdict_clutter(study.summarize(rows_of(swapped)), S2R2, OTHERS, pairs=[("o", "c")])
    assert "not supported" in text


def test_claim3_reads_the_first_snapshot_and_steps_come_back_from_epochs():
    rows = []
    for method, images, (early, late) in ((S2R2, 4, (0.5, 0.6)), ("SimCLR", 16, (0.4, 0.62))):
        for step, value in ((10, early), (20, late)):
            rows += [{"dataset": "s", "method": method, "images": images, "epochs": round(step * images / 100, 3),
                      "seed": seed, "metric": "linear_top1", "value": f"{value + 0.001 * seed:.4f}"} for seed in range(3)]
    points = study.curve_points(rows, data_n=100)
    assert sorted({p["step"] for p in points}) == [10, 20]
    text = study.verdict_convergence(points, S2R2, OTHERS)
    assert text.startswith(f"Claim 3 (faster convergence on a small set), {S2R2}: supported")
    assert "step 20" in text and "behind" in text


def test_claim4_needs_an_interior_peak_that_clears_the_noise():
    rise_fall = [{"images": b, "value": v} for b, v in ((4, 0.50), (16, 0.60), (64, 0.52))]
    assert "): supported" in study.verdict_batch(rise_fall)
    rising = [{"images": b, "value": v} for b, v in ((4, 0.50), (16, 0.55), (64, 0.60))]
    assert "not supported" in study.verdict_batch(rising)
    flat = [{"images": b, "value": v} for b, v in ((4, 0.500), (16, 0.505), (64, 0.500))]
    assert "not supported" in study.verdict_batch(flat)
    assert "not measured" in study.verdict_batch(rising[:2])


def test_fashion_mnist_missing_is_reported_not_measured(tmp_path):
    base = train.TrainConfig(max_steps=1, progress=False)
    rows, missing = study.compare_methods(study.method_configs(base, 16), ["fashion-mnist"], [0], tmp_path,
                                          10, 10, data_root=str(tmp_path))
    assert rows == [] and missing == {"fashion-mnist": study.FASHION_MISSING}


@pytest.mark.smoke
def test_notebook_06_records_every_method_seed_floor_and_verdict(tmp_path, monkeypatch):
    import papermill

    for kind in ("figures", "results", "records", "runs"):
        monkeypatch.setenv(f"S2R2_{kind.upper()}_DIR", str(tmp_path / kind))
    (path,) = reproduce.notebook_paths(only=["06"])
    quick = reproduce.parameters_for(path, "quick")
    papermill.execute_notebook(str(path), str(tmp_path / path.name), parameters=quick, cwd=str(path.parent),
                               kernel_name="python3", progress_bar=False)
    numbers = json.loads((tmp_path / "records" / f"{path.stem}.json").read_text())
    measured = [row for row in results.read_runs() if row["table"] == "miniature" and row["metric"] == "linear_top1"]
    study_sets = [d for d in study.STUDY_SETS if d not in numbers["not_measured"]]
    assert "embedded-object" in study_sets
    for dataset in study_sets:
        for method in numbers["methods"]:
            seeds = sorted(int(r["seed"]) for r in measured if r["dataset"] == dataset and r["method"] == method)
            assert seeds == quick["seeds"], (dataset, method)
            assert numbers["cells"][f"{dataset}|{method}"]["n"] == len(quick["seeds"])
        assert 0.05 < numbers["floor"][dataset] < 1
    assert all(row["commit"] and row["device"].startswith("cpu") and row["wall_s"] for row in measured)
    assert numbers["small_points"] == len(numbers["methods"]) * len(quick["small_steps"])
    assert numbers["sweep_points"] == len(quick["sweep_images"])
    assert set(numbers["verdicts"]) == {"claim1_paper_lr", "claim1_tuned_lr", "claim2", "claim3", "claim4"}
    assert all(("supported" in text or "not measured" in text) for text in numbers["verdicts"].values())
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    assert {f"06_claim{n}_{s}.png" for n, s in ((1, "methods"), (2, "clutter_margin"), (3, "small_data"),
                                                 (4, "batch"))} <= figures


def test_keep_steps_leaves_snapshots_without_changing_the_run(tmp_path):
    import torch

    config = train.TrainConfig(max_steps=3, images_per_batch=4, views_per_image=2, data_options={"n": 16},
                               progress=False, output=str(tmp_path / "kept"), keep_steps=[1, 2])
    train.train(config)
    plain = train.train(dataclasses_replace(config, keep_steps=[], output=str(tmp_path / "plain")))
    snapshots = {step: torch.load(tmp_path / "kept" / f"checkpoint-{step}.pt", weights_only=True) for step in (1, 2)}
    assert {step: state["step"] for step, state in snapshots.items()} == {1: 1, 2: 2}
    kept = torch.load(tmp_path / "kept" / "checkpoint.pt", weights_only=True)["model"]
    final = torch.load(plain["checkpoint"], weights_only=True)["model"]
    assert all(torch.equal(kept[name], final[name]) for name in final)
