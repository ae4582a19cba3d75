"""The probe follows its written protocol, checked against independent references: the linear probe's
test predictions are sklearn's LogisticRegression at the chosen C, refit on the whole standardised training
split; kNN top-1 is a brute-force weighted vote of the k nearest training images."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from s2r2lib import probe
from s2r2lib.data import load


def noisy_world(n, seed, classes=3, dim=10):
    """Features of uneven scale and offset (so standardising matters) and labels a linear model gets
    only partly right (so the fit, and which images it is fitted on, decides many predictions)."""
    rng = np.random.default_rng(seed)
    weights = np.random.default_rng(99).normal(size=(dim, classes))
    scale, offset = np.random.default_rng(98).uniform(0.5, 5, size=dim), np.random.default_rng(97).normal(size=dim)
    x = rng.normal(size=(n, dim)) * scale + offset
    y = (x @ weights / 3 + rng.gumbel(size=(n, classes))).argmax(1)
    return x, y


def sklearn_predictions(train_x, train_y, test_x, c):
    mean, std = train_x.mean(0), train_x.std(0, ddof=1)
    model = LogisticRegression(C=c, max_iter=10_000, tol=1e-10).fit((train_x - mean) / std, train_y)
    return model.predict((test_x - mean) / std)


def test_the_chosen_c_is_refit_on_the_whole_training_split_as_sklearn_would():
    train_x, train_y = noisy_world(200, 0)
    test_x, test_y = noisy_world(2000, 1)
    result = probe.linear_probe(train_x, train_y, test_x, test_y)
    assert result.validation[result.c] == max(result.validation.values())
    assert result.c == min(c for c, accuracy in result.validation.items() if accuracy == result.validation[result.c])
    expected = sklearn_predictions(train_x, train_y, test_x, result.c)
    assert (result.predictions == expected).mean() > 0.995
    assert result.top1 == pytest.approx((expected == test_y).mean(), abs=0.005)
    # The reference can tell: a refit on 80 % of the split, or another C, predicts visibly differently.
    part = np.random.default_rng(5).permutation(len(train_x))[:160]
    assert (sklearn_predictions(train_x[part], train_y[part], test_x, result.c) == expected).mean() < 0.95
    other = [c for c in probe.C_GRID if c != result.c]
    assert all((sklearn_predictions(train_x, train_y, test_x, c) == expected).mean() < 0.99 for c in other)


def test_a_tie_between_cs_goes_to_the_stronger_regularisation():
    train_x, train_y = noisy_world(200, 0)
    train_y = np.arange(200) % 2
    train_x[:, 0] += 100 * train_y  # far apart: every C scores 100 %
    result = probe.linear_probe(train_x, train_y, train_x[:50], train_y[:50])
    assert set(result.validation.values()) == {1.0} and result.c == min(probe.C_GRID)


def knn_reference(train_x, train_y, test_x, test_y, k, temperature=0.07):
    """Top-1 of a weighted vote: for each test image, the k training images of highest cosine similarity
    s each add exp(s / temperature) to their class; the class with the most weight wins."""
    train_x, test_x = train_x.double().numpy(), test_x.double().numpy()
    train_x = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    correct = 0
    for x, label in zip(test_x, test_y.tolist()):
        sims = train_x @ (x / np.linalg.norm(x))
        votes = {}
        for j in np.argsort(-sims, kind="stable")[:k]:
            votes[int(train_y[j])] = votes.get(int(train_y[j]), 0.0) + math.exp(sims[j] / temperature)
        correct += max(votes, key=votes.get) == label
    return correct / len(test_y)


@pytest.fixture(scope="module")
def overlapping_classes():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 6, generator=gen)
    train_y, test_y = torch.arange(4).repeat(60), torch.arange(4).repeat(25)
    train_x = centres[train_y] + 1.2 * torch.randn(len(train_y), 6, generator=gen)
    test_x = centres[test_y] + 1.2 * torch.randn(len(test_y), 6, generator=gen)
    return train_x, train_y, test_x, test_y


def test_knn_top1_is_the_brute_force_weighted_vote_for_every_k(overlapping_classes):
    accuracies = []
    for k in (1, 2, 5, 20, 200, 1000):
        expected = knn_reference(*overlapping_classes, k=k)
        assert probe.knn_top1(*overlapping_classes, k=k) == pytest.approx(expected), k
        assert probe.knn_top1(*overlapping_classes, k=k, chunk=7) == pytest.approx(expected), k  # partial chunk
        accuracies.append(expected)
    assert len(set(accuracies)) >= 3  # k changes the answer here, so a wrong k shows


def test_knn_temperature_weights_the_votes(overlapping_classes):
    for temperature in (0.07, 1.0):
        assert probe.knn_top1(*overlapping_classes, k=50, temperature=temperature) == pytest.approx(
            knn_reference(*overlapping_classes, k=50, temperature=temperature))


def test_evaluate_reports_knn_at_k_20_and_200(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the feature cache goes under tmp_path
    train = load("embedded", split="train", size=40, n=300)
    test = load("embedded", split="test", size=40, n=150)
    metrics = probe.evaluate(None, train.images, train.labels, test.images, test.labels, 32, split_name="k")
    model = probe.load_encoder(None)
    train_x, test_x = (probe.extract_features(model, s.images, 32) for s in (train, test))
    expected = {k: knn_reference(train_x, train.labels, test_x, test.labels, k) for k in (20, 200)}
    assert expected[20] != expected[200]  # so that a k swapped or ignored shows
    assert (metrics["knn20_top1"], metrics["knn200_top1"]) == pytest.approx((expected[20], expected[200]))


def test_the_penalty_is_sklearns_at_a_strong_regularisation():
    # At a small C the penalty decides many predictions, so a penalty off by a constant factor (the same as
    # another C) predicts visibly differently from sklearn at the C asked for.
    train_x, train_y = noisy_world(200, 0)
    test_x, _ = noisy_world(3000, 1)
    c = 0.01
    result = probe.linear_probe(train_x, train_y, test_x, np.zeros(len(test_x), dtype=int), c_grid=[c])
    expected = sklearn_predictions(train_x, train_y, test_x, c)
    assert (result.predictions == expected).mean() > 0.995
    assert (sklearn_predictions(train_x, train_y, test_x, 1.5 * c) == expected).mean() < 0.98  # it can tell


@pytest.mark.parametrize("metric", ["knn", "map", "linear"])
def test_the_probe_works_on_the_device_it_is_given(overlapping_classes, metric):
    # The meta device holds shapes but no values: work sent there cannot come back as a number, while work
    # that ignored the device and stayed with the (CPU) features would.
    train_x, train_y, test_x, test_y = overlapping_classes
    run = {"knn": lambda: probe.knn_top1(train_x, train_y, test_x, test_y, device="meta"),
           "map": lambda: probe.retrieval_map(test_x, test_y, device="meta"),
           "linear": lambda: probe.linear_probe(train_x, train_y, test_x, test_y, device="meta")}[metric]
    with pytest.raises(RuntimeError, match="meta"):
        run()
