"""The training engine: every method learns, a killed run resumes bitwise, DDP sees the global batch."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import yaml

from s2r2lib import probe, results
from s2r2lib import train as engine
from s2r2lib.losses import nt_xent_loss, smooth_ap_loss, swav_loss
from s2r2lib.train import PRESETS, TrainConfig, gather_with_grad, load_checkpoint, read_log, save_checkpoint
from test_notebooks import outputs, run_notebook  # noqa: F401 (outputs: the fixture)

SMALL = dict(data_options={"n": 256}, images_per_batch=8, views_per_image=4, progress=False, checkpoint_every=3)


def small_config(tmp_path, name="run", **changes):
    return TrainConfig(**{**SMALL, "output": str(tmp_path / name), **changes})


@pytest.mark.parametrize("method,changes", [
    ("s2r2", {"lr": 1e-3}),
    ("simclr", {"views_per_image": 2, "lr": 1e-3}),
    ("swav", {"lr": 0.3}),
])
def test_each_method_lowers_its_loss_on_a_fixed_batch(tmp_path, method, changes):
    # One batch, seen again and again (max_steps over a data set of exactly one batch, no new views):
    config = small_config(tmp_path, method=method, max_steps=25, data_options={"n": 8}, **changes).resolved()
    torch.manual_seed(0)
    learner = engine.Learner(config)
    optimizer = engine._optimizer(config, learner.parameters())
    images = engine.datasets.load("embedded", split="unlabeled", size=config.image_size, n=8).images
    losses = []
    for step in range(config.max_steps):
        generator = torch.Generator().manual_seed(0)  # the same views every step
        if method == "swav":
            loss, _, _ = engine._swav_step(learner, learner.prototypes, images, generator, config, None)
        else:
            loss, _, _ = engine._ranking_step(learner, images, generator, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, losses


def test_swav_codes_stay_spread_over_prototypes(tmp_path):
    config = small_config(tmp_path, method="swav", max_steps=30, data_options={"n": 256}, images_per_batch=16)
    train_summary = engine.train(config)
    state = load_checkpoint(train_summary["checkpoint"])
    learner = engine.Learner(config.resolved())
    learner.model.load_state_dict(state["model"])
    learner.prototypes.load_state_dict(state["prototypes"])
    learner.eval()
    images = engine.datasets.load("embedded", split="test", size=40, n=256).images
    views, _ = engine.make_views(images, 1, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        (z,) = learner([views])
        assignments = learner.prototypes(F.normalize(z, dim=1)).argmax(1)
    used = assignments.unique().numel()
    assert used >= 8, f"collapse: only {used} of {config.prototypes} prototypes are anyone's best match"


def test_swav_prototypes_stay_frozen_for_prototype_freeze_steps(tmp_path):
    base = TrainConfig(method="swav", images_per_batch=4, data_options={"n": 64}, max_steps=2,
                       crops=[[2, 16, [0.3, 1.0]]], image_size=16, view_size=16, progress=False,
                       optimizer="adam", lr=1e-2)

    def prototypes(freeze, name):
        config = dataclasses.replace(base, prototype_freeze_steps=freeze, output=str(tmp_path / name))
        engine.train(config)
        return torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["prototypes"]["weight"]

    torch.manual_seed(0)
    start = engine.Learner(base).prototypes.weight.detach()
    start = torch.nn.functional.normalize(start, dim=1)
    assert torch.allclose(prototypes(2, "frozen"), start, atol=1e-6)  # normalised each step, never moved
    assert not torch.allclose(prototypes(1, "thawed"), start, atol=1e-4)
    assert torch.allclose(prototypes(None, "epoch"), start, atol=1e-6)  # None: the first epoch (16 steps)


def test_training_writes_a_log_and_a_loadable_checkpoint(tmp_path):
    summary = engine.train(small_config(tmp_path, max_steps=4))
    log = read_log(tmp_path / "run")
    assert [row["step"] for row in log] == [0, 1, 2, 3]
    assert all(0 <= row["batch_ap"] <= 1 and row["views_per_s"] > 0 for row in log)
    state = torch.load(summary["checkpoint"], weights_only=True)
    assert state["step"] == 4 and "model" in state
    model = engine.build_model("narrow_cnn", small_input=True)
    model.load_state_dict(state["model"])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["lr"] == 1e-4 and saved["optimizer"] == "adam"  # the paper's S2R2 setting, filled in


def test_the_knn_monitor_logs_a_top1_every_n_steps(tmp_path):
    engine.train(small_config(tmp_path, max_steps=4, knn_every=2, knn_images=100))
    knn = [row["knn_top1"] for row in read_log(tmp_path / "run")]
    assert [k == k for k in knn] == [False, True, False, True]  # NaN where the monitor did not run
    assert all(0 <= k <= 1 for k in knn[1::2])


def _train_command(config: TrainConfig, *extra: str) -> list[str]:
    overrides = [f"{k}={json.dumps(v)}" for k, v in config.to_dict().items() if v is not None]
    return [sys.executable, "-m", "s2r2lib.train", *extra, *overrides]


def kill_and_resume(config, kill_after_rows: int, timeout: float = 300) -> dict:
    """Run ``config`` with python -m s2r2lib.train, SIGKILL it once its log has ``kill_after_rows`` steps,
    then --resume it to the end; returns the resumed run's summary."""
    process = subprocess.Popen(_train_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = Path(config.output) / "log.csv"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) > kill_after_rows:
            break
        time.sleep(0.005)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert load_checkpoint(Path(config.output) / "checkpoint.pt")["step"] < config.max_steps
    resumed = subprocess.run(_train_command(config, "--resume"), capture_output=True, text=True, timeout=2 * timeout)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return yaml.safe_load(resumed.stdout)


def _final_weights(run) -> dict:
    return load_checkpoint(run / "checkpoint.pt")["model"]


@pytest.mark.parametrize("kill_after_rows", [5, 8])
def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path, kill_after_rows):
    """As a user runs it: python -m s2r2lib.train, SIGKILL mid-run, then --resume (all in fresh processes,
    so every run uses the same default thread count)."""
    steps = 10
    whole = small_config(tmp_path, "whole", max_steps=steps)
    subprocess.run(_train_command(whole), check=True, capture_output=True, timeout=300)

    killed = small_config(tmp_path, "killed", max_steps=steps)
    assert 0 < kill_and_resume(killed, kill_after_rows)["resumed_from"] < steps
    a, b = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert [row["step"] for row in read_log(tmp_path / "killed")] == list(range(steps))


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    engine.train(small_config(tmp_path, max_steps=3))
    other = small_config(tmp_path, max_steps=3, lr=1e-3)
    with pytest.raises(ValueError, match="holds another run"):
        engine.train(other, resume=True)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    save_checkpoint(tmp_path / "elsewhere.pt", state)
    with pytest.raises(ValueError, match="belongs to another config.*lr"):
        load_checkpoint(tmp_path / "elsewhere.pt", other.resolved())


def test_resume_in_a_folder_without_a_run_says_to_start_without_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing to resume in .*empty: it has no config.yaml; start without "
                                                r"--resume"):
        engine.train(small_config(tmp_path, "empty", max_steps=2), resume=True)


def test_temporaries_of_a_killed_write_are_removed_even_if_another_process_got_there_first(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    stale = [run / ".checkpoint.pt.k1l2.tmp", run / ".config.yaml.x9y8.tmp"]
    for path in stale:
        path.write_bytes(b"half a write")
    engine.train(small_config(tmp_path, max_steps=1))
    assert [p for p in stale if p.exists()] == [] and (run / "checkpoint.pt").exists()
    # two runs starting on one folder: the other removes a leftover between this one's listing and its unlink
    listing = Path.glob

    def raced(self, pattern):
        found = list(listing(self, pattern))
        for path in found if pattern.endswith(".tmp") else []:
            path.unlink()
        return found

    for path in stale:
        path.write_bytes(b"half a write")
    monkeypatch.setattr(Path, "glob", raced)
    assert engine.train(small_config(tmp_path, max_steps=1), resume=True)["resumed_from"] == 1  # no FileNotFoundError


def test_the_train_command_prints_its_summary_on_rank_0_only(tmp_path, monkeypatch, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(small_config(tmp_path, max_steps=1).to_dict()))
    monkeypatch.setattr(engine, "train", lambda config, resume: {"steps": 1})  # what each torchrun process gets
    for rank, printed in ((None, "steps: 1\n"), ("0", "steps: 1\n"), ("1", ""), ("3", "")):
        if rank is None:
            monkeypatch.delenv("RANK", raising=False)
        else:
            monkeypatch.setenv("RANK", rank)
        assert engine.main(["--config", str(path)]) == 0
        assert capsys.readouterr().out == printed, rank


def test_a_truncated_checkpoint_is_refused_clearly(tmp_path):
    engine.train(small_config(tmp_path, max_steps=3))
    path = tmp_path / "run" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt, truncated"):
        engine.train(small_config(tmp_path, max_steps=3), resume=True)


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1})

    def killed_mid_write(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2})
    assert torch.load(path, weights_only=True) == {"step": 1}


def test_a_checkpoint_holding_code_is_not_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"step": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a weights-only s2r2 checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("changes,message", [
    ({"images_per_batch": 1}, "at least 2"),
    ({"views_per_image": 1}, "at least 2"),
    ({"method": "byol"}, "unknown method"),
    ({"method": "swav", "crops": [[2, 64, [0.14, 1.0]]]}, "does not fit"),
    ({"arch": "vgg"}, "unknown arch"),
    ({"precision": "fp16"}, "fp32 or bf16"),
])
def test_bad_configs_are_refused(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        engine.train(small_config(tmp_path, **changes))


def test_an_output_folder_holding_another_run_is_refused(tmp_path):
    engine.train(small_config(tmp_path, max_steps=2))
    with pytest.raises(ValueError, match="holds another run"):
        engine.train(small_config(tmp_path, max_steps=2, seed=1))
    with pytest.raises(ValueError, match="pass --resume"):
        engine.train(small_config(tmp_path, max_steps=2))


def test_configs_load_from_yaml_with_overrides_and_unknown_fields_are_refused(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: simclr\nviews_per_image: 2\nlr: 0.001\n")
    config = TrainConfig.from_yaml(path).with_overrides(["epochs=3", "data_options={mode: cluttered}"])
    assert (config.method, config.lr, config.epochs, config.data_options) == ("simclr", 0.001, 3, {"mode": "cluttered"})
    path.write_text("methdo: simclr\n")
    with pytest.raises(ValueError, match="unknown field.*methdo"):
        TrainConfig.from_yaml(path)
    path.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(yaml.YAMLError):
        TrainConfig.from_yaml(path)


def test_paper_presets_follow_tables_1_and_2():
    s2r2 = PRESETS["paper-resnet18-stl10-s2r2"]
    assert (s2r2["images_per_batch"], s2r2["views_per_image"], s2r2["view_size"]) == (64, 20, 96)
    assert PRESETS["paper-resnet18-coco-val-s2r2"]["images_per_batch"] == 8
    swav = TrainConfig.from_dict({**PRESETS["paper-resnet18-coco-val-swav"], "device": "cpu"}).resolved()
    assert swav.views_in_batch == 32 * 40 and (swav.optimizer, swav.lr) == ("lars", 1.0)
    # SwAV's multi-crop as its paper (and S2R2's Table 1) has it: large crops of 96 px over 14-100 % of the
    # image, small ones of 48 px over 5-14 %
    for name, preset in PRESETS.items():
        if preset["method"] == "swav":
            small = preset["views_per_image"] - 2
            assert preset["crops"] == [[2, 96, [0.14, 1.0]], [small, 48, [0.05, 0.14]]], name
    assert engine._swav(2, 6) == [[2, 96, [0.14, 1.0]], [6, 48, [0.05, 0.14]]]  # (PRESETS is built at import)
    assert "paper-resnet50-stl10-swav" not in PRESETS  # Table 2 has no SwAV rows
    assert len(PRESETS) == 9 + 6


# --- Distributed: 2 processes with gloo give the single-process loss and gradients ----------------------

def _ddp_worker(rank, world, init_file, inputs, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    net = torch.nn.Linear(inputs.shape[1], 6)
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    local = inputs.chunk(world)[rank]
    out = {}
    for name in ("s2r2", "nt_xent", "swav"):
        ddp.zero_grad()
        loss = _global_loss(name, gather_with_grad(ddp(local)), world_views=len(inputs))
        loss.backward()
        out[name] = (loss.item(), net.weight.grad.numpy().copy())  # numpy: pickled by value, no shared fd
    results.put((rank, out))
    dist.destroy_process_group()


def _global_loss(name, z, world_views, views_per_image=4):
    ids = torch.arange(world_views // views_per_image).repeat_interleave(views_per_image)
    if name == "s2r2":
        return smooth_ap_loss(z, ids, tau=0.1)
    if name == "nt_xent":
        return nt_xent_loss(z, ids)
    # SwAV: crops 0 and 1 of each image, the image-major rows b * 4 + c
    scores = [F.normalize(z, dim=1)[c::views_per_image] for c in range(views_per_image)]
    return swav_loss(scores)


def test_ddp_with_gathered_embeddings_equals_one_process_on_the_global_batch(tmp_path):
    inputs = torch.randn(16, 5, generator=torch.Generator().manual_seed(3))  # 4 images x 4 views, 8 per rank
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 6)
    single = {}
    for name in ("s2r2", "nt_xent", "swav"):
        net.zero_grad()
        loss = _global_loss(name, net(inputs), world_views=16)
        loss.backward()
        single[name] = (loss.item(), net.weight.grad.clone())

    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    processes = [context.Process(target=_ddp_worker, args=(rank, 2, tmp_path / "init", inputs, results))
                 for rank in range(2)]
    for process in processes:
        process.start()
    gathered = dict(results.get() for _ in processes)
    for process in processes:
        process.join(60)
    for rank in range(2):
        for name, (loss, grad) in single.items():
            assert gathered[rank][name][0] == pytest.approx(loss, abs=1e-6), (rank, name)
            torch.testing.assert_close(torch.from_numpy(gathered[rank][name][1]), grad, atol=1e-6, rtol=1e-5, msg=f"{rank} {name}")


@pytest.mark.smoke
def test_torchrun_trains_with_two_processes(tmp_path):
    config = small_config(tmp_path, "ddp", max_steps=2)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517"]
    env = os.environ | {"TMPDIR": str(tmp_path)}  # torchrun's log folders land here, not in /tmp
    done = subprocess.run(torchrun + _train_command(config)[1:], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["step"] == 2
    assert len(read_log(tmp_path / "ddp")) == 2


# --- Configs, devices, run folders and checkpoints under careless use -----------------------------------

@pytest.mark.parametrize("where", ["command line", "yaml file"])
def test_lr_1e_3_trains_from_the_command_line_and_from_a_yaml_file(tmp_path, where):
    """YAML 1.1 reads 1e-3 as the string "1e-3"; the config makes it the float it means."""
    config = small_config(tmp_path, max_steps=2)
    if where == "command line":
        command = _train_command(config, "lr=1e-3")
    else:
        (tmp_path / "run.yaml").write_text("lr: 1e-3\nmax_steps: 2\n")
        command = _train_command(dataclasses.replace(config, max_steps=None), "--config", str(tmp_path / "run.yaml"))
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["lr"] == 1e-3 and isinstance(saved["lr"], float)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2


def test_a_failed_start_writes_nothing_and_blocks_neither_a_corrected_rerun_nor_resume(tmp_path):
    missing_data = small_config(tmp_path, max_steps=2, data="stl10", split="train", data_options={},
                                data_root=str(tmp_path / "no-data"))
    with pytest.raises(FileNotFoundError, match="train_X.bin"):
        engine.train(missing_data)
    assert not (tmp_path / "run").exists()
    assert engine.train(small_config(tmp_path, max_steps=2))["steps"] == 2

    # A folder that never got a checkpoint (a run killed before its first one) holds no run either.
    (tmp_path / "run" / "checkpoint.pt").unlink()
    assert engine.train(small_config(tmp_path, max_steps=2, seed=1), resume=True)["resumed_from"] == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["seed"] == 1


def _png_folder(folder, first, count):
    from PIL import Image

    folder.mkdir(exist_ok=True)
    for i in range(first, first + count):
        colour = tuple(int(c) for c in torch.randint(0, 256, (3,), generator=torch.Generator().manual_seed(i)))
        Image.new("RGB", (48, 48), colour).save(folder / f"{i:03d}.png")


def _killed_after_the_first_checkpoint(config, monkeypatch):
    """Train ``config`` until its first checkpoint is saved, then stop it as Ctrl-C would."""
    save = engine.save_checkpoint

    def killed(path, state):
        save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        engine.train(config)
    monkeypatch.undo()


def test_resume_refuses_an_image_folder_that_grew_since_the_run_began(tmp_path, monkeypatch):
    images = tmp_path / "images"
    _png_folder(images, 0, 16)
    config = small_config(tmp_path, data="folder", split=None, data_root=str(images), max_steps=4,
                          checkpoint_every=2, data_options={"cache_dir": str(tmp_path / "cache")})
    _killed_after_the_first_checkpoint(config, monkeypatch)

    _png_folder(images, 16, 23)
    with pytest.raises(ValueError, match="other data: its data fingerprint is 16x3x40x40:.*now gives 39x3x40x40:"):
        engine.train(config, resume=True)

    for extra in sorted(images.iterdir())[16:]:
        extra.unlink()
    assert engine.train(config, resume=True)["resumed_from"] == 2  # the same images again: resumes


def test_data_fingerprints_see_count_and_content_and_not_the_copy():
    images = torch.randint(0, 256, (1000, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    changed = images.clone()
    changed[-1, 0, 0, 0] ^= 1
    assert engine.data_fingerprint(images) == engine.data_fingerprint(images.clone())
    assert engine.data_fingerprint(images) != engine.data_fingerprint(images[:-1])
    assert engine.data_fingerprint(images) != engine.data_fingerprint(changed)


def test_a_kill_during_a_checkpoint_write_leaves_no_temporary_after_the_next_start(tmp_path):
    engine.train(small_config(tmp_path, max_steps=2))
    run = tmp_path / "run"
    (run / "notes.txt").write_text("mine")
    killed = ("import os, signal, sys, torch; from s2r2lib import train; "
              "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL); "
              "train.save_checkpoint(sys.argv[1], {'model': {}, 'config': {}, 'pad': torch.zeros(10**5)})")
    done = subprocess.run([sys.executable, "-c", killed, str(run / "checkpoint.pt")], capture_output=True)
    assert done.returncode == -signal.SIGKILL
    assert [p.name for p in run.glob(".checkpoint.pt.*")], "the kill should leave atomic_write_bytes's temporary"

    assert engine.train(small_config(tmp_path, max_steps=2), resume=True)["resumed_from"] == 2
    assert sorted(p.name for p in run.iterdir()) == [".training.lock", "checkpoint.pt", "config.yaml", "log.csv",
                                                     "notes.txt"]  # the lock stays: a run's, not a temporary


def test_devices_that_differ_only_in_how_they_are_written_resolve_equal(monkeypatch):
    cpu = torch.zeros(1).device
    assert {engine.resolve_device(d) for d in ("cpu", "cpu:0", torch.device("cpu"), torch.device("cpu", 0))} == {cpu}
    assert TrainConfig(device=torch.device("cpu", 0)).resolved().device == "cpu"

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    written = ("cuda", "cuda:0", torch.device("cuda"), torch.device("cuda", 0))
    assert {engine.resolve_device(d) for d in written} == {torch.device("cuda", 0)}
    assert engine.resolve_device("cuda:1") == torch.device("cuda:1") != torch.device("cuda:0")
    assert TrainConfig(device="cuda").resolved().device == "cuda:0"
    with pytest.raises(ValueError, match="cuda:2.*2 CUDA device"):
        engine.resolve_device("cuda:2")


def test_a_checkpoint_is_probed_with_its_own_architecture(tmp_path):
    summary = engine.train(small_config(tmp_path, max_steps=1, small_input=False, proj_dim=64))
    model = probe.load_encoder(summary["checkpoint"])
    stem = model.encoder.backbone.features[0][0]
    assert stem.stride == (2, 2) and model.projector[-1].out_features == 64  # not the defaults, stride 1 and 128
    state = load_checkpoint(summary["checkpoint"])["model"]
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    with pytest.raises(ValueError, match="small_input=True was asked for.*small_input=False"):
        probe.load_encoder(summary["checkpoint"], small_input=True)


@pytest.mark.smoke
def test_notebook_03_probes_a_resnet18_run_trained_without_the_small_input_stem(outputs):
    """Notebook 03 at the paper profile probes a 96-px ResNet18 (small_input=false): the probe must build
    the encoder as the run was trained, not with its own small-input default."""
    run = results.output_dir("runs") / "02_training"
    engine.train(TrainConfig(arch="resnet18", small_input=False, data_options={"n": 4}, images_per_batch=2,
                             views_per_image=2, max_steps=1, output=str(run), progress=False))
    probed = run_notebook("03", outputs, n_train=200, n_test=100, checkpoint=str(run / "checkpoint.pt"))
    assert 0 <= probed["linear_top1_trained"] <= 1 and 0 <= probed["linear_top1_random-init"] <= 1
    assert {row["arch"] for row in results.read_runs().to_dict("records") if row["source"] == "measured"} == {"resnet18"}


def test_a_resumed_run_counts_only_the_views_it_trained_and_shows_its_rate(tmp_path, monkeypatch, capsys):
    config = small_config(tmp_path, max_steps=4, checkpoint_every=2, progress=True)
    _killed_after_the_first_checkpoint(config, monkeypatch)
    summary = engine.train(config, resume=True)
    assert summary["resumed_from"] == 2 and summary["steps"] == 4
    assert summary["views_per_s"] * summary["wall_s"] == pytest.approx(2 * config.views_in_batch)  # steps 3-4
    err = capsys.readouterr().err
    assert re.search(r"views_s=\d+", err) and re.search(r"loss=-?\d+\.\d{4}", err)  # rate and loss, as numbers


def test_a_resumed_log_keeps_the_rows_before_the_checkpoint_only(tmp_path):
    """A run killed after its checkpoint at step 5 may have logged steps 5-7; the resumed run redoes them."""
    log = tmp_path / "log.csv"
    handle, writer = engine._open_log(log, 0)
    writer.writerows({"step": step, "loss": 1.0} for step in range(8))
    handle.close()
    handle, writer = engine._open_log(log, 5)
    handle.close()
    assert [row["step"] for row in read_log(tmp_path)] == [0, 1, 2, 3, 4]
    with log.open("a") as cut:  # a run killed while it wrote step 5's row
        cut.write("5,1.0")
    kill = RuntimeError("killed while the kept rows were rewritten")

    def killed(path, data):
        raise kill

    before = log.read_bytes()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "atomic_write_bytes", killed)
        with pytest.raises(RuntimeError):
            engine._open_log(log, 6)
    assert log.read_bytes() == before  # the old log whole, not emptied
    handle, writer = engine._open_log(log, 6)
    writer.writerow({"step": 5, "loss": 2.0})
    handle.close()
    assert [(row["step"], row["loss"]) for row in read_log(tmp_path)] == [(s, 1.0) for s in range(5)] + [(5, 2.0)]


def test_each_optimizer_name_builds_that_optimizer_and_bf16_sets_the_learners_autocast_flag(tmp_path):
    params = [torch.nn.Parameter(torch.zeros(2))]
    built = {}
    for name, kind in (("adam", torch.optim.Adam), ("lars", engine.LARS), ("sgd", torch.optim.SGD)):
        built[name] = engine._optimizer(small_config(tmp_path, optimizer=name).resolved(), params)
        assert type(built[name]) is kind, name
    assert built["sgd"].param_groups[0]["momentum"] == 0.9  # SimCLR's and SwAV's SGD: with momentum
    assert engine.Learner(small_config(tmp_path, precision="bf16").resolved()).bf16 is True
    assert engine.Learner(small_config(tmp_path, precision="fp32").resolved()).bf16 is False


def test_the_command_names_itself_in_its_usage(capsys):
    with pytest.raises(SystemExit):
        engine.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m s2r2lib.train ")


def test_a_runs_wall_time_is_the_time_it_took(tmp_path):
    began = time.perf_counter()
    summary = engine.train(small_config(tmp_path, max_steps=2))
    assert 0 < summary["wall_s"] <= time.perf_counter() - began


def test_channels_last_puts_the_encoders_convolutions_in_that_layout(tmp_path):
    images = torch.randint(0, 256, (16, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for channels_last in (True, False):
        built = engine.Engine(small_config(tmp_path, channels_last=channels_last).resolved(), images, "cpu")
        convs = [m for m in built.learner.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
        assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) == channels_last for c in convs)


def test_the_progress_bar_names_the_method_and_arch_and_counts_steps(tmp_path):
    bar = engine._progress_bar(small_config(tmp_path, progress=True).resolved(), rank=0, start=1, total_steps=4)
    try:
        assert str(bar).startswith("s2r2 narrow_cnn:  25%") and "1/4" in str(bar) and "step/s]" in str(bar)
    finally:
        bar.close()


def test_settings_over_a_preset_name_every_value_they_replace():
    import warnings

    preset = "paper-resnet18-stl10-s2r2"
    assert engine.with_preset(None, {"lr": 1.0}) == {"lr": 1.0}
    small = {"arch": "narrow_cnn", "data": "embedded", "data_root": "/data", "seed": 3, "precision": "bf16"}
    with pytest.warns(UserWarning) as caught:
        merged = engine.with_preset(preset, small)
    assert merged == {**PRESETS[preset], **small}
    [message] = [str(w.message) for w in caught]
    assert message.startswith(f"preset {preset}: these settings replace its values, so the run is not the paper's "
                              "setting: arch='narrow_cnn' (the preset's: 'resnet18'), data='embedded' (the preset's: "
                              "'stl10'). Pass the preset's values instead")  # not data_root (the preset's is None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert engine.with_preset(preset, {"data_root": "/data", "arch": "resnet18"})["data_root"] == "/data"
    with pytest.raises(ValueError, match=r"unknown preset 'paper'; choose one of \['paper-resnet18-coco-train-s2r2'"):
        engine.with_preset("paper", {})


def test_notebook_02s_paper_profile_trains_its_preset_unchanged():
    """make reproduce PROFILE=paper gives notebook 02 the preset and its values: nothing the notebook's small
    defaults would replace (its training cell builds the config through train.with_preset)."""
    import warnings

    from s2r2lib import reproduce

    parameters = dict(reproduce.PROFILES["paper"]["02_training"])
    preset = parameters.pop("preset")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = TrainConfig.from_dict(engine.with_preset(preset, {**parameters, "data_root": "/data", "seed": 0}))
    assert {name: getattr(config, name) for name in PRESETS[preset]} == {**PRESETS[preset], "data_root": "/data"}
    cells = json.loads(reproduce.notebook_paths(only=["02"])[0].read_text())["cells"]
    assert any("train.with_preset(preset, settings)" in "".join(cell["source"]) for cell in cells)


def test_a_second_process_training_into_the_same_folder_is_refused_at_once(tmp_path):
    from filelock import FileLock

    config = small_config(tmp_path, max_steps=2)
    Path(config.output).mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock\n"
                               "with FileLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
                               str(Path(config.output) / ".training.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # another process is training there
        with pytest.raises(RuntimeError, match=f"another process is training in {re.escape(config.output)}"):
            engine.train(config)
        assert not (Path(config.output) / "checkpoint.pt").exists()  # nothing of this run written
    finally:
        holder.kill()
        holder.wait()
    summary = engine.train(config)  # the lock is free again
    assert summary["steps"] == 2
    with FileLock(Path(config.output) / ".training.lock", timeout=0):
        pass  # and released after the run
