"""The probe recovers what is there, never chooses its settings on test labels, and runs.csv stays tidy."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from s2r2lib import probe, results
from s2r2lib.data import load


def linear_world(n, seed, classes=4, dim=16):
    rng = np.random.default_rng(seed)
    weights = np.random.default_rng(99).normal(size=(dim, classes))
    x = rng.normal(size=(n, dim))
    return x, (x @ weights).argmax(1)


def test_linear_probe_recovers_a_linear_structure_and_not_noise():
    train_x, train_y = linear_world(2000, 0)
    test_x, test_y = linear_world(1000, 1)
    assert probe.linear_probe(train_x, train_y, test_x, test_y).top1 > 0.9
    shuffled = np.random.default_rng(2).permutation(train_y)
    assert probe.linear_probe(train_x, shuffled, test_x, test_y).top1 < 0.45  # chance is 0.25


def test_linear_probe_chooses_c_without_looking_at_test_labels():
    train_x, train_y = linear_world(600, 0)
    test_x, test_y = linear_world(300, 1)
    honest = probe.linear_probe(train_x, train_y, test_x, test_y)
    scrambled = probe.linear_probe(train_x, train_y, test_x, np.random.default_rng(3).permutation(test_y))
    assert honest.c == scrambled.c and honest.validation == scrambled.validation
    assert (honest.predictions == scrambled.predictions).all()
    assert honest.top1 > scrambled.top1


def test_knn_and_retrieval_map_are_perfect_on_separated_classes():
    centres = torch.eye(5, 8) * 10
    labels = torch.arange(5).repeat(40)
    features = centres[labels] + torch.randn(len(labels), 8)
    assert probe.knn_top1(features, labels, features + 0.01, labels, k=20) == 1.0
    assert probe.retrieval_map(features, labels) == 1.0
    assert probe.retrieval_map(torch.randn(200, 8), labels) < 0.4


def sklearn_map(features, labels):
    from sklearn.metrics import average_precision_score

    r = torch.nn.functional.normalize(features.double(), dim=1)
    s, same = (r @ r.T).numpy(), (labels[:, None] == labels[None, :]).numpy()
    others = ~np.eye(len(labels), dtype=bool)
    return np.mean([average_precision_score(same[q][others[q]], s[q][others[q]]) for q in range(len(labels))])


def test_retrieval_map_is_sklearns_mean_ap_on_unequal_classes_and_ties():
    gen = torch.Generator().manual_seed(4)
    labels = torch.tensor([0] * 20 + [1] * 10 + [2] * 5)
    codebook = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]])  # exact, tied similarities
    tied = codebook[torch.randint(0, 3, (len(labels),), generator=gen)]
    for features in (torch.randn(len(labels), 4, generator=gen, dtype=torch.float64), tied.double()):
        assert probe.retrieval_map(features, labels) == pytest.approx(sklearn_map(features, labels), abs=1e-12)


def test_collapsed_features_score_chance_not_one():
    labels = torch.arange(10).repeat(50)
    features = torch.rand(1, 64).expand(len(labels), -1)
    assert probe.retrieval_map(features, labels) == pytest.approx(49 / 499, rel=1e-6)


def test_retrieval_map_ranks_many_queries_per_chunk(monkeypatch):
    from s2r2lib import losses

    rows = []
    original = losses._exact_ap
    monkeypatch.setattr(losses, "_exact_ap", lambda s, r: rows.append(len(s)) or original(s, r))
    labels = torch.arange(10).repeat(200)
    features = torch.randn(len(labels), 32)
    value = probe.retrieval_map(features, labels, device="cpu")
    assert sum(rows) == len(labels) and len(rows) < len(labels) / 100
    assert probe.retrieval_map(features, labels, memory_budget=1) == value  # one query a chunk: the same mAP


def test_linear_probe_uses_torchs_threads_and_takes_tensors(monkeypatch):
    threads = []
    original = probe._fit_logistic
    monkeypatch.setattr(probe, "_fit_logistic", lambda *a: threads.append(torch.get_num_threads()) or original(*a))
    train_x, train_y = linear_world(300, 0)
    test_x, test_y = linear_world(100, 1)
    configured = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        arrays = probe.linear_probe(train_x, train_y, test_x, test_y)
        tensors = probe.linear_probe(*(torch.as_tensor(a) for a in (train_x, train_y, test_x, test_y)), device="cpu")
    finally:
        torch.set_num_threads(configured)
    assert set(threads) == {2}
    assert arrays.top1 == tensors.top1 and (arrays.predictions == tensors.predictions).all()


def test_features_come_from_the_encoder_in_eval_mode():
    model = probe.load_encoder(None)
    model.train()
    images = load("embedded", split="test", size=40, n=32).images
    before = {k: v.clone() for k, v in model.state_dict().items()}
    whole = probe.extract_features(model, images, size=32, batch_size=32)
    split = probe.extract_features(model, images, size=32, batch_size=5)
    assert whole.shape == (32, 256)
    torch.testing.assert_close(whole, split)  # batch statistics play no part
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN buffers untouched


def test_evaluate_reports_every_metric_and_caches_features(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, test = load("embedded", split="train", size=40, n=200), load("embedded", split="test", size=40, n=100)
    calls = []
    original = probe.extract_features
    monkeypatch.setattr(probe, "extract_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    args = (None, train.images, train.labels, test.images, test.labels, 32)
    first = probe.evaluate(*args, split_name="embedded")
    second = probe.evaluate(*args, split_name="embedded")
    assert len(calls) == 2  # train and test extracted once, then read back
    assert first["linear_top1"] == second["linear_top1"]
    assert {"linear_top1", "knn20_top1", "knn200_top1", "retrieval_map", "linear_c"} <= set(first)


def test_paper_rows_hold_every_printed_cell_of_tables_1_and_2():
    rows = results.paper_rows()
    assert len(rows) == 9 * 8 + 6 * 4
    assert {row["source"] for row in rows} == {"paper"} and {row["metric"] for row in rows} == {"linear_top1"}


PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "s2r2-paper.md"


@pytest.mark.skipif(not PAPER.is_file(), reason="the paper's text is not beside this checkout")
def test_paper_rows_match_the_paper_text_exactly():
    printed = []
    for line in PAPER.read_text().splitlines():
        if re.search(r"\b(SimCLR|SwAV|S2R2)\t", line):
            printed.append(line.split("\t")[-len(line.split("\t")) + line.split("\t").index(
                next(cell for cell in line.split("\t") if cell in ("SimCLR", "SwAV", "S2R2"))):])
    ours = {}
    for row in results.paper_rows():
        ours.setdefault((row["table"], row["dataset"], row["method"]), [str(row["images"]), str(row["views"])]).append(row["value"])
    assert sorted(cells[1:] for cells in printed) == sorted(ours.values())


@pytest.fixture
def own_results(tmp_path, monkeypatch):
    """A results folder of this test's own: a broken runs.csv must not leak into other tests."""
    monkeypatch.setenv("S2R2_RESULTS_DIR", str(tmp_path / "results"))


def test_write_runs_merges_by_key_keeps_the_paper_and_refuses_bad_columns(own_results):
    measured = {"table": "probe", "arch": "narrow_cnn", "dataset": "embedded", "method": "S2R2", "images": 32,
                "views": 8, "epochs": 1, "seed": 0, "metric": "linear_top1", "value": "0.4", "source": "measured"}
    results.write_runs([measured])
    results.write_runs([{**measured, "value": "0.5"}, {**measured, "seed": 1}])
    rows = results.read_runs()
    ours = [row for row in rows if row["source"] == "measured"]
    assert sorted((row["seed"], row["value"]) for row in ours) == [("0", "0.5"), ("1", "0.4")]
    assert sum(row["source"] == "paper" for row in rows) == 96
    with pytest.raises(ValueError, match="no column"):
        results.write_runs([{**measured, "accuracy": 1}])


def test_a_hand_edited_runs_file_is_refused_with_its_line(own_results):
    results.write_runs([])
    path = results.runs_path()
    lines = path.read_text().splitlines()
    lines[5] += ",an extra field"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"runs\.csv:6"):
        results.write_runs([])


def test_probe_bench_times_the_probe_beside_the_one_it_replaced(tmp_path, capsys):
    from s2r2lib.bench import probe as bench
    from s2r2lib.losses import average_precision
    from s2r2lib.results import read_csv

    _, _, features, labels = bench.make_features(10, 200, 8, 4)
    per_query = average_precision(features, labels, per_query=True)
    assert bench.before_retrieval_seconds_per_query(features, labels, 30)[1] == pytest.approx(
        per_query[:30].mean().item(), abs=1e-6)  # the replaced path computes the same AP (no ties here)

    out = tmp_path / "bench_probe.csv"
    threads = torch.get_num_threads()
    argv = ["--device", "cpu", "--threads", "1", "--train", "200", "--test", "300", "--dim", "8", "--classes", "4",
            "--before-queries", "20", "--out", str(out)]
    assert bench.main(argv) == 0
    assert torch.get_num_threads() == threads
    rows = {row["impl"]: row for row in read_csv(out)}
    assert set(rows) == {"s2r2lib", "before"} and {row["status"] for row in rows.values()} == {"measured"}
    ours, before = rows["s2r2lib"], rows["before"]
    assert float(ours["speedup_vs_before"]) == pytest.approx(float(before["total_s"]) / float(ours["total_s"]), rel=0.05)
    assert ours["linear_top1"] == before["linear_top1"]  # one linear probe, whatever the threads
    assert ours["meets_goal"] in ("yes", "no") and "cpu:" in ours["device"] and ours["commit"]
    assert "scaled from 20 queries" in before["note"]
