"""The probe recovers what is there and never chooses its settings on test labels."""

import numpy as np
import pytest
import torch

from s2r2lib import probe
from s2r2lib.data import load
from s2r2lib.results import RUN_COLUMNS

# evaluate's metrics, as result_rows reads them
SCORES = {"linear_top1": 0.5, "knn20_top1": 0.4, "knn200_top1": 0.3, "retrieval_map": 0.2}


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
    # One query a chunk: the same mAP, up to the float32 order of summing 2,000 per-query APs (one query's AP
    # is worth about 5e-5 of the mean, so a dropped or repeated query would show).
    assert probe.retrieval_map(features, labels, memory_budget=1) == pytest.approx(value, abs=1e-6)


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


def test_feature_batches_and_probe_fits_show_progress_only_when_asked(monkeypatch):
    bars = []

    class Recorded(probe.tqdm):
        def __init__(self, *args, desc, disable, **kwargs):
            super().__init__(*args, desc=desc, disable=disable, **kwargs)
            self.named, self.shown = desc, not disable  # close() disables every bar
            bars.append(self)

    monkeypatch.setattr(probe, "tqdm", Recorded)
    model, images = probe.load_encoder(None), load("embedded", split="test", size=40, n=30).images
    features, labels = torch.randn(60, 4), torch.arange(60) % 3
    for shown in (False, True):
        probe.extract_features(model, images, size=32, batch_size=16, **({"progress": True} if shown else {}))
        probe.linear_probe(features[:40], labels[:40], features[40:], labels[40:], c_grid=(0.1, 1.0, 10.0),
                           **({"progress": True} if shown else {}))
    assert [(bar.named, bar.shown, bar.n if bar.shown else None, bar.total) for bar in bars] == [
        ("features of 30 images", False, None, 2), ("linear probe fits (each C, then the refit)", False, None, 4),
        ("features of 30 images", True, 2, 2), ("linear probe fits (each C, then the refit)", True, 4, 4)]


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
    # read back, the predictions are the same numpy array as when computed
    assert isinstance(second["linear_predictions"], np.ndarray)
    np.testing.assert_array_equal(second["linear_predictions"], first["linear_predictions"])


def test_probe_bench_times_the_probe_beside_the_one_it_replaced(tmp_path, capsys):
    from s2r2lib.bench import probe as bench
    from s2r2lib.losses import average_precision
    from s2r2lib.results import read_table

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
    rows = {row["impl"]: row for row in read_table(out).to_dict("records")}
    assert set(rows) == {"s2r2lib", "before"} and {row["status"] for row in rows.values()} == {"measured"}
    ours, before = rows["s2r2lib"], rows["before"]
    # the ratio is written to one decimal, the times to three digits: it follows from them within that rounding
    assert ours["speedup_vs_before"] == pytest.approx(before["total_s"] / ours["total_s"], abs=0.06)
    assert ours["linear_top1"] == before["linear_top1"]  # one linear probe, whatever the threads
    assert ours["meets_goal"] in ("yes", "no") and "cpu:" in ours["device"] and ours["commit"]
    assert "scaled from 20 queries" in before["note"]


# --- What make mutation left alive in probe.py (a sample of 30) -----------------------------------------------

class _RunsCode:
    def __reduce__(self):
        return (print, ("a cached feature file ran code",))


def test_a_crafted_feature_cache_file_is_refused_not_run(tmp_path, capsys):
    import pickle

    model, images = probe.load_encoder(None), load("embedded", split="test", size=40, n=8).images
    probe.cached_features(model, images, 32, "key", cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.pt")
    torch.save(_RunsCode(), cached)
    with pytest.raises(pickle.UnpicklingError):
        probe.cached_features(model, images, 32, "key", cache_dir=tmp_path)
    assert "ran code" not in capsys.readouterr().out


def test_cached_features_are_read_back_as_they_were_computed(tmp_path, monkeypatch):
    model, images = probe.load_encoder(None), load("embedded", split="test", size=40, n=8).images
    first = probe.cached_features(model, images, 32, "key", cache_dir=tmp_path)
    monkeypatch.setattr(probe, "extract_features", lambda *a, **k: pytest.fail("the cached features were extracted"))
    assert torch.equal(probe.cached_features(model, images, 32, "key", cache_dir=tmp_path), first)


def test_other_images_under_the_same_cache_key_get_their_own_features(tmp_path):
    """Notebook 03 rerun with another seed probes another subset of the split, of the same shape and under the
    same key: its features are its own, not the first subset's (whose order would no longer match the labels)."""
    model, images = probe.load_encoder(None), load("embedded", split="test", size=40, n=16).images
    for subset in (images[:8], images[8:], images[:8].flip(0)):
        cached = probe.cached_features(model, subset, 32, "embedded-train", cache_dir=tmp_path)
        assert torch.allclose(cached, probe.extract_features(model, subset, 32))
    assert len(list(tmp_path.glob("*.pt"))) == 3


def test_a_checkpoint_saved_on_a_gpu_reads_on_the_cpu(tmp_path, monkeypatch):
    """A run trained on CUDA is probed on a machine without one: its tensors are loaded onto the CPU. The file
    is made as CUDA makes it, every storage tagged "cuda:0" (which a CPU-only torch refuses to load as it is)."""
    import torch.serialization

    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save({"model": {"w": torch.ones(2)}, "config": {"arch": "narrow_cnn"}, "step": 1}, tmp_path / "gpu.pt")
    state = probe.read_checkpoint(tmp_path / "gpu.pt")
    assert state["model"]["w"].device.type == "cpu" and torch.equal(state["model"]["w"], torch.ones(2))


def test_retrieval_map_says_exactly_what_is_wrong_with_non_finite_features():
    features = torch.tensor([[1.0, 0.0], [float("inf"), 1.0], [0.0, 1.0], [0.1, 0.9]])
    with pytest.raises(ValueError, match=r"^retrieval_map: features hold NaN or inf; check the encoder$"):
        probe.retrieval_map(features, torch.tensor([0, 0, 1, 1]))


def test_retrieval_map_names_both_shapes_when_they_disagree():
    with pytest.raises(ValueError, match=r"got \(4, 2\) and \(3,\)"):
        probe.retrieval_map(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))


def test_a_checkpoint_without_a_recipe_reads_as_the_one_it_was_trained_with(monkeypatch):
    monkeypatch.setattr(probe, "read_checkpoint", lambda path: {"config": {"lr": 0.001}})
    assert probe.run_config("old.pt") == {"recipe": "simclr-cifar", "lr": 0.001}
    monkeypatch.setattr(probe, "read_checkpoint", lambda path: {"config": {"recipe": "simclr"}})
    assert probe.run_config("new.pt") == {"recipe": "simclr"}


def test_features_are_cached_under_build_features_of_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, images = probe.load_encoder(None), load("embedded", split="test", size=40, n=8).images
    probe.cached_features(model, images, 32, "key")
    assert len(list((tmp_path / "build" / "features").glob("*.pt"))) == 1


def test_two_encoders_are_probed_and_cached_apart(tmp_path, monkeypatch):
    """The probe cache is keyed by the encoder and the data: a second encoder is probed, not read back."""
    monkeypatch.chdir(tmp_path)
    train, test = load("embedded", split="train", size=40, n=120), load("embedded", split="test", size=40, n=60)
    args = (None, train.images, train.labels, test.images, test.labels, 32)
    for seed in (0, 1):  # two random-init floors: each probed with its own encoder's features
        metrics = probe.evaluate(*args, seed=seed)
        model = probe.load_encoder(None, seed=seed)
        assert torch.allclose(metrics["train_features"], probe.extract_features(model, train.images, 32)), seed
        assert torch.allclose(metrics["test_features"], probe.extract_features(model, test.images, 32)), seed
    assert len(list((tmp_path / "build" / "features").glob("probe-*.pt"))) == 2


def test_linear_probe_refuses_features_of_different_widths():
    x, y = torch.randn(10, 4), torch.arange(10) % 2
    with pytest.raises(ValueError):
        probe.linear_probe(x, y, torch.randn(10, 3), y)


def test_result_rows_describe_the_floor_and_a_checkpoint(monkeypatch):
    floor = probe.result_rows(SCORES, "probe", "embedded", seed=3, probe_s=2.0)
    assert [r["metric"] for r in floor] == list(probe.METRICS) and {r["method"] for r in floor} == {"random-init"}
    assert floor[0]["value"] == "0.5000" and floor[0]["seed"] == 3 and floor[0]["wall_s"] == "2.0"
    assert {(r["source"], r["images"], r["views"], r["epochs"], r["views_seen"], r["train_s"]) for r in floor} == \
        {("measured", "", "", 0, 0, "0.0")}
    assert all(set(row) <= set(RUN_COLUMNS) for row in floor)  # runs.csv's columns, under their own names
    assert all({"seed", "protocol", "commit", "device", "date"} <= set(row) for row in floor)
    assert [r["protocol"] for r in floor] == list(probe.METRICS.values()) and all(r["date"] for r in floor)
    config = {"method": "swav", "crops": [[2, 32, [0.14, 1.0]], [6, 16, [0.05, 0.14]]], "arch": "narrow_cnn",
              "images_per_batch": 16, "views_per_image": 2, "seed": 1}
    states = {"run.pt": {"config": config, "step": 50, "num_images": 400, "train_wall_s": 10.0}}
    monkeypatch.setattr(probe, "read_checkpoint", lambda path: states[path])  # the rows read the checkpoint named
    rows = probe.result_rows(SCORES, "probe", "embedded", checkpoint="run.pt", probe_s=2.0)
    assert all(set(row) <= set(RUN_COLUMNS) and row["seed"] == 1 for row in rows)
    assert {(r["method"], r["views"], r["images"], r["epochs"], r["views_seen"], r["train_s"], r["wall_s"])
            for r in rows} == {("SwAV", 8, 16, 2.0, 50 * 16 * 8, "10.0", "12.0")}  # SwAV's views: all its crops
    config.update(method="s2r2", views_per_image=4)  # a ranking run's views are its K (its crops are unused)
    states["k4.pt"] = {"config": config, "step": 5, "num_images": 1600, "train_wall_s": 1.0}
    rows = probe.result_rows(SCORES, "probe", "embedded", checkpoint="k4.pt", probe_s=2.0)
    assert {(r["method"], r["views"], r["epochs"], r["views_seen"]) for r in rows} == {("S2R2", 4, 0.05, 5 * 16 * 4)}
    # epochs: 5 x 16 / 1600
    states["third.pt"] = {"config": config, "step": 25, "num_images": 1200, "train_wall_s": 1.0}
    rows = probe.result_rows(SCORES, "probe", "embedded", checkpoint="third.pt", probe_s=2.0)
    assert {r["epochs"] for r in rows} == {0.333}  # 25 x 16 / 1200, to three decimals


def test_a_floor_row_without_its_setting_reads_as_the_default_run():
    from s2r2lib.train import TrainConfig

    rows = probe.result_rows(SCORES, "probe", "embedded", probe_s=1.5)
    assert {(r["arch"], r["seed"], r["wall_s"]) for r in rows} == {(TrainConfig().arch, TrainConfig().seed, "1.5")}


def test_knn_reads_integer_features_as_float32_and_defaults_to_k_20():
    gen = torch.Generator().manual_seed(4)
    x, t = torch.randint(0, 256, (40, 6), generator=gen), torch.randint(0, 256, (20, 6), generator=gen)
    y, u = torch.arange(40) % 2, torch.arange(20) % 2
    assert probe.knn_top1(x.to(torch.uint8), y, t.to(torch.uint8), u, k=5) == probe.knn_top1(x.float(), y, t.float(), u, k=5)
    # the k of knn20_top1 (InstDisc's 200 aside): 10 neighbours of class 0 at similarity 1 and 11 of class 1 at
    # 0.999 around the query; 20 of them vote for class 0 (10 against 10 x e^(-0.001 / 0.07)), 21 for class 1
    near = torch.tensor([[1.0, 0.0]]).repeat(10, 1)
    close = torch.tensor([[0.999, (1 - 0.999**2) ** 0.5]]).repeat(11, 1)
    train_x, train_y = torch.cat([near, close]), torch.tensor([0] * 10 + [1] * 11)
    query, label = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    assert (probe.knn_top1(train_x, train_y, query, label, k=21), probe.knn_top1(train_x, train_y, query, label)) == \
        (0.0, 1.0)


def test_retrieval_map_takes_classes_of_two_images():
    # two members is the least a class needs: each query then has one positive
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert probe.retrieval_map(features, torch.tensor([0, 0, 1, 1])) == 1.0


def test_the_logistic_fit_runs_in_float64(spy):
    calls = spy(torch.optim, "LBFGS")
    probe.linear_probe(torch.randn(40, 3), torch.arange(40) % 2, torch.randn(10, 3), torch.arange(10) % 2,
                       c_grid=[1.0], max_iter=5)
    assert calls and all(p.dtype == torch.float64 for call in calls for p in call["params"])


def test_the_probe_fits_run_the_documented_number_of_lbfgs_iterations(spy):
    """L-BFGS's limit is part of the protocol the study records (StudyPlan.probe_max_iter): 500 by default, and
    the number asked for otherwise (L-BFGS's own default is 20)."""
    from s2r2lib import study

    calls = spy(torch.optim, "LBFGS")
    x, y = torch.randn(40, 3), torch.arange(40) % 2
    probe.linear_probe(x, y, x, y, c_grid=[1.0])
    probe.linear_probe(x, y, x, y, c_grid=[1.0], max_iter=7)
    assert [call["max_iter"] for call in calls] == [500, 500, 7, 7]  # the held-out fit, then the refit
    assert study.StudyPlan(train_seconds=1.0).probe_max_iter == 500


def test_features_that_still_track_gradients_are_probed_as_their_values():
    """Features straight from an encoder outside torch.no_grad: the fits take their values (L-BFGS calls backward
    many times, which a graph reaching into the encoder would refuse after the first) and leave no gradient."""
    weight = torch.randn(5, 5, requires_grad=True)
    x, t = torch.randn(60, 5, generator=torch.Generator().manual_seed(0)) @ weight, torch.randn(30, 5) @ weight
    y, u = (x[:, 0] > 0).long(), (t[:, 0] > 0).long()
    tracked = probe.linear_probe(x, y, t, u)
    values = probe.linear_probe(x.detach(), y, t.detach(), u)
    assert (tracked.top1, tracked.c, tracked.validation) == (values.top1, values.c, values.validation)
    assert weight.grad is None


def test_linear_probe_takes_numpy_features_and_int32_labels():
    """Arrays, as sklearn users hand them over: the same result as the tensors."""
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(60, 5, generator=gen), torch.randn(30, 5, generator=gen)
    y, u = (x[:, 0] > 0).long(), (t[:, 0] > 0).long()
    arrays = probe.linear_probe(x.numpy(), y.numpy().astype(np.int32), t.numpy(), u.numpy().astype(np.int32))
    tensors = probe.linear_probe(x, y, t, u)
    assert arrays.top1 == tensors.top1 and arrays.c == tensors.c


def test_evaluate_hands_its_seed_and_encoder_settings_on(tmp_path, monkeypatch, spy):
    monkeypatch.chdir(tmp_path)  # an empty feature cache: the probe runs
    calls, built = spy(probe, "linear_probe"), spy(probe, "load_encoder")
    train, test = load("embedded", split="train", size=40, n=60), load("embedded", split="test", size=40, n=30)
    probe.evaluate(None, train.images, train.labels, test.images, test.labels, 32, proj_dim=16, seed=7)
    assert [call["seed"] for call in calls] == [7]
    assert [(call["proj_dim"], call["seed"]) for call in built] == [(16, 7)]


def test_a_random_init_encoder_is_built_as_asked():
    model = probe.load_encoder(None, arch="resnet18", small_input=False, proj_dim=16)
    assert model.feat_dim == 512 and model.projector[-1].out_features == 16
    assert probe.load_encoder(None).feat_dim != 512  # the defaults: ENCODER_FIELDS' narrow CNN


def test_the_linear_probe_holds_out_the_same_images_by_default():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(300, 6, generator=g), torch.randint(0, 3, (300,), generator=g)
    x[:, 0] += y  # a little signal, much noise: the held-out score depends on which images are held out
    by_default, at_0, at_1 = (probe.linear_probe(x, y, x[:50], y[:50], **seed)
                              for seed in ({}, {"seed": 0}, {"seed": 1}))
    assert by_default.validation == at_0.validation and at_1.validation != at_0.validation


def test_evaluate_runs_every_step_on_the_device_it_is_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty feature cache: the features are extracted
    seen = []
    for name in ("extract_features", "linear_probe", "knn_top1", "retrieval_map"):
        real = getattr(probe, name)
        monkeypatch.setattr(probe, name, lambda *a, real=real, name=name, **k: seen.append((name, k["device"])) or
                            real(*a, **{**k, "device": "cpu"}))  # (this machine's device, whatever was asked)
    train, test = load("embedded", split="train", size=40, n=60), load("embedded", split="test", size=40, n=30)
    probe.evaluate(None, train.images, train.labels, test.images, test.labels, 32, device="cuda:1")
    assert sorted(seen) == sorted([("extract_features", "cuda:1")] * 2 + [("linear_probe", "cuda:1")]
                                  + [("knn_top1", "cuda:1")] * 2 + [("retrieval_map", "cuda:1")])


def test_evaluate_asks_knn_for_the_k_each_protocol_names(tmp_path, monkeypatch, spy):
    monkeypatch.chdir(tmp_path)
    real, calls = probe.knn_top1, spy(probe, "knn_top1")
    train, test = load("embedded", split="train", size=40, n=60), load("embedded", split="test", size=40, n=30)
    metrics = probe.evaluate(None, train.images, train.labels, test.images, test.labels, 32)
    named = [int(probe.METRICS[m].rsplit("k = ", 1)[1]) for m in ("knn20_top1", "knn200_top1")]
    assert [call["k"] for call in calls] == named == [20, 200]
    assert metrics["knn200_top1"] == real(metrics["train_features"], train.labels, metrics["test_features"],
                                          test.labels, k=200)


def test_two_checkpoints_of_one_run_never_share_cached_features(tmp_path):
    from s2r2lib.train import TrainConfig, train

    config = TrainConfig(max_steps=2, images_per_batch=4, views_per_image=2, data_options={"n": 16}, seed=7,
                         progress=False, output=str(tmp_path / "run"), keep_steps=[1])
    train(config)
    images = torch.randint(0, 256, (12, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(11))
    labels = torch.arange(3).repeat(4)
    for checkpoint in (tmp_path / "run" / "checkpoint-1.pt", tmp_path / "run" / "checkpoint.pt"):  # same arch, seed
        metrics = probe.evaluate(checkpoint, images, labels, images, labels, 32, split_name="two-checkpoints")
        own = probe.extract_features(probe.load_encoder(checkpoint), images, 32)
        assert torch.allclose(metrics["test_features"], own)  # its own encoder's, not the other checkpoint's
        assert torch.allclose(metrics["train_features"], own)


def test_the_floor_is_built_as_asked(tmp_path, monkeypatch):
    # The random-init floor takes arch and small_input as given: a ResNet18 stem for full-size images
    # (small_input=False) is not the CIFAR stem, and its features are its own.
    monkeypatch.chdir(tmp_path)
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(2).repeat(4)
    for small_input in (False, True):
        metrics = probe.evaluate(None, images, labels, images, labels, 32, arch="resnet18", small_input=small_input)
        own = probe.extract_features(probe.load_encoder(None, "resnet18", small_input), images, 32)
        assert torch.allclose(metrics["test_features"], own), small_input


def test_a_planted_pickle_in_the_feature_cache_is_refused_not_run(tmp_path, monkeypatch):
    import pathlib
    import pickle

    class Planted:
        def __reduce__(self):  # unpickling this would create the marker file
            return pathlib.Path.touch, (tmp_path / "ran",)

    monkeypatch.chdir(tmp_path)
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(2).repeat(4)
    args = (None, images, labels, images, labels, 32)
    probe.evaluate(*args, split_name="planted")
    cached = sorted((tmp_path / "build" / "features").glob("*.pt"))
    assert len(cached) == 3  # the probe's metrics and the two splits' features
    (metrics,) = [path for path in cached if path.name.startswith("probe-")]
    torch.save({"linear_predictions": Planted()}, metrics)
    with pytest.raises(pickle.UnpicklingError):
        probe.evaluate(*args, split_name="planted")  # the metrics' file, the features intact
    metrics.unlink()
    for features in set(cached) - {metrics}:
        torch.save(Planted(), features)
    with pytest.raises(pickle.UnpicklingError):
        probe.evaluate(*args, split_name="planted")  # a split's features
    assert not (tmp_path / "ran").exists()
