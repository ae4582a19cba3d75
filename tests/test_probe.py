"""The probe recovers what is there and never chooses its settings on test labels."""

import numpy as np
import pytest
import torch

from s2r2lib import probe
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


def test_retrieval_map_balances_unequal_classes():
    features, labels = torch.randn(30, 4), torch.tensor([0] * 20 + [1] * 10)
    assert 0 < probe.retrieval_map(features, labels) < 1  # needs the balanced subset to run at all


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
