"""The engine on a GPU's terms, shown on the CPU: one device for a run, no host sync inside a step,
LARS without per-weight reads, the epoch's permutation drawn once, the distributed helpers, and the device
check's CPU smoke."""

import csv
import dataclasses
import math
import os
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from s2r2lib import distributed
from s2r2lib import train as engine
from s2r2lib.losses import nt_xent_loss, smooth_ap_loss
from s2r2lib.train import TrainConfig, read_log

SMALL = dict(data_options={"n": 64}, images_per_batch=4, views_per_image=3, progress=False, checkpoint_every=100)
SWAV_CROPS = [[2, 32, [0.14, 1.0]], [1, 16, [0.05, 0.14]]]  # two code crops and one small crop, at 32 px


def small_config(tmp_path, name="run", **changes):
    return TrainConfig(**{**SMALL, "output": str(tmp_path / name), **changes})


# --- Devices ----------------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where CUDA is missing")
def test_a_cuda_run_without_cuda_says_to_use_the_cpu(tmp_path):
    with pytest.raises(ValueError, match="CUDA is not available here.*use device=cpu"):
        engine.train(small_config(tmp_path, device="cuda", max_steps=1))


def test_a_run_on_cpu_0_trains_as_on_cpu(tmp_path):
    engine.train(small_config(tmp_path, "a", max_steps=2, device="cpu:0"))
    engine.train(small_config(tmp_path, "b", max_steps=2, device="cpu"))
    a, b = (engine.load_checkpoint(tmp_path / name / "checkpoint.pt")["model"] for name in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cuda_runs_get_fused_adam_and_cudnn_autotuning_unless_deterministic(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # configs are resolved as on a one-GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    params = [nn.Parameter(torch.zeros(3))]
    cuda = TrainConfig(device="cuda").resolved()
    assert engine._optimizer(cuda, params).defaults["fused"] is True
    assert not engine._optimizer(TrainConfig(device="cpu").resolved(), params).defaults["fused"]
    before = torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()
    with engine.backend_settings(cuda, torch.device("cuda", 0)):
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    deterministic = TrainConfig(device="cuda", deterministic=True).resolved()
    with engine.backend_settings(deterministic, torch.device("cuda", 0)):
        assert not torch.backends.cudnn.benchmark and torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    assert (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()) == before


def test_a_deterministic_run_trains_and_leaves_the_global_setting_alone(tmp_path):
    summary = engine.train(small_config(tmp_path, max_steps=2, deterministic=True))
    assert math.isfinite(summary["loss"]) and not torch.are_deterministic_algorithms_enabled()


# --- No host sync inside a step ---------------------------------------------------------------------------

# Ops that make the host wait for the device on CUDA: reading a value, an output whose size depends on it,
# or a tensor made from Python numbers (a copy from pageable host memory; found by the GPU check's sync
# debug mode, results/bench_gpu.csv).
SYNC_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::_unique2", "aten::unique_dim",
            "aten::unique_consecutive", "aten::masked_select", "aten::lift_fresh"}


class _SyncRecorder(TorchDispatchMode):
    """Records each host-syncing op with the s2r2lib file that issued it and whether a training step
    (``Engine.step``) or a log read (``_read_losses``, ``_batch_aps``) was on the stack."""

    def __init__(self):
        super().__init__()
        self.events = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        bool_index = name in ("aten::index", "aten::index_put", "aten::index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or []))
        if name in SYNC_OPS or bool_index:
            stack = traceback.extract_stack()
            ours = [f for f in stack if "/s2r2lib/" in f.filename.replace("\\", "/")]
            optim = any("/torch/optim/" in f.filename and not f.filename.endswith("optimizer.py") for f in stack)
            owner = "torch.optim" if optim else Path(ours[-1].filename).name if ours else "other"
            in_step = any(f.filename.endswith("train.py") and f.name == "step" for f in ours)
            in_read = any(f.name in ("_read_losses", "_batch_aps") for f in ours)
            self.events.append((name, owner, in_step and not in_read))
        return func(*args, **(kwargs or {}))


def _syncs(config) -> list[tuple[str, str, bool]]:
    with _SyncRecorder() as recorder:
        engine.train(config)
    return recorder.events


@pytest.mark.parametrize("method,changes", [("s2r2", {"optimizer": "lars"}),
                                            ("swav", {"queue_length": 8, "crops": SWAV_CROPS})])
def test_the_engine_never_reads_from_the_device_inside_a_step(tmp_path, method, changes):
    """On CUDA each such op stalls the GPU's queue; the engine's own code issues none per step (the views'
    and the losses' are helper code and counted apart; Adam's CPU step counter is not on the device there:
    Adam is fused on CUDA)."""
    short = _syncs(small_config(tmp_path, "short", method=method, max_steps=2, log_every=100, **changes))
    long = _syncs(small_config(tmp_path, "long", method=method, max_steps=6, log_every=100, **changes))
    engine_files = ("train.py", "distributed.py")
    assert [e for e in long if e[1] in engine_files and e[2]] == []  # none inside Engine.step
    # and none anywhere else in the loop: four more steps, one read each, the same engine-owned count
    assert len([e for e in long if e[1] in engine_files]) == len([e for e in short if e[1] in engine_files])


def test_a_training_step_reads_nothing_from_the_device(tmp_path):
    events = _syncs(small_config(tmp_path, method="s2r2", optimizer="lars", max_steps=2, log_every=100))
    assert [e for e in events if e[2]] == []


def test_a_non_finite_loss_is_caught_at_the_next_read_before_any_checkpoint(tmp_path, monkeypatch):
    calls = []

    def nan_from_step_1(config, z, ids):
        calls.append(1)
        loss = engine.smooth_ap_loss(z, ids, config.tau)
        return loss + math.nan if len(calls) > 1 else loss  # a non-finite value; gradients stay finite

    monkeypatch.setattr(engine, "_ranking_loss", nan_from_step_1)
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 1 \(the first non-finite one of steps 0-2"):
        engine.train(small_config(tmp_path, max_steps=8, log_every=3, checkpoint_every=3))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_log_rows_are_read_in_windows_of_log_every_steps(tmp_path):
    engine.train(small_config(tmp_path, max_steps=7, log_every=3))
    log = read_log(tmp_path / "run")
    assert [row["step"] for row in log] == list(range(7))
    assert all(math.isfinite(row["loss"]) and 0 <= row["batch_ap"] <= 1 for row in log)
    rates = [row["views_per_s"] for row in log]  # one mean per window: steps 0-2, 3-5, 6
    assert rates[0] == rates[1] == rates[2] and rates[3] == rates[4] == rates[5]


def test_a_run_saved_before_the_engine_fields_existed_still_resumes(tmp_path):
    import yaml

    engine.train(small_config(tmp_path, max_steps=2))
    new_fields = ("log_every", "deterministic", "sync_bn")
    saved = tmp_path / "run" / "config.yaml"
    values = yaml.safe_load(saved.read_text())
    saved.write_text(yaml.safe_dump({k: v for k, v in values.items() if k not in new_fields}))
    state = engine.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    state["config"] = {k: v for k, v in state["config"].items() if k not in new_fields}
    engine.save_checkpoint(tmp_path / "run" / "checkpoint.pt", state)
    assert engine.train(small_config(tmp_path, max_steps=2, log_every=5), resume=True)["resumed_from"] == 2


def test_log_every_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="log_every must be at least 1"):
        engine.train(small_config(tmp_path, log_every=0))


# --- LARS, batches, the SwAV queue -----------------------------------------------------------------------

def _reference_lars_step(params, buffers, lr, momentum, weight_decay, trust):
    """LARS one weight at a time, as written before the _foreach version."""
    with torch.no_grad():
        for p, buf in zip(params, buffers):
            grad = p.grad
            if p.ndim > 1:
                grad = grad.add(p, alpha=weight_decay)
                w_norm, g_norm = p.norm(), grad.norm()
                if w_norm > 0 and g_norm > 0:
                    grad = grad.mul(trust * w_norm / g_norm)
            buf.mul_(momentum).add_(grad)
            p.add_(buf, alpha=-lr)


def test_lars_matches_the_per_weight_form_and_reads_nothing_back():
    gen = torch.Generator().manual_seed(0)
    shapes = [(6, 5), (6,), (4, 3, 3, 3), (5, 2)]
    ours = [nn.Parameter(torch.randn(*s, generator=gen)) for s in shapes]
    with torch.no_grad():
        ours[3].zero_()  # a zero weight: left unscaled
    reference = [nn.Parameter(p.detach().clone()) for p in ours]
    buffers = [torch.zeros_like(p) for p in reference]
    optimizer = engine.LARS(ours, lr=0.5, weight_decay=1e-4)
    for _ in range(3):
        grads = [torch.randn(*s, generator=gen) for s in shapes]
        for p, q, g in zip(ours, reference, grads):
            p.grad, q.grad = g.clone(), g.clone()
        with _SyncRecorder() as recorder:
            optimizer.step()
        assert recorder.events == []
        _reference_lars_step(reference, buffers, lr=0.5, momentum=0.9, weight_decay=1e-4, trust=0.001)
    for p, q in zip(ours, reference):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_lars_defaults_are_swavs():
    """SwAV's LARS: momentum 0.9, trust 0.001; decay only where the config asks for it."""
    optimizer = engine.LARS([nn.Parameter(torch.ones(2, 2))], lr=0.1)
    assert {k: optimizer.defaults[k] for k in ("momentum", "weight_decay", "trust")} == \
        {"momentum": 0.9, "weight_decay": 0.0, "trust": 0.001}


def test_batches_are_the_epoch_permutations_slices_drawn_once_per_epoch(monkeypatch):
    config = TrainConfig(images_per_batch=8, seed=3)
    num_images = 30  # 3 batches an epoch, 6 images left out

    def old_batch_indices(step, rank, world):  # a fresh permutation every step, as before the cache
        epoch, position = divmod(step, num_images // 8)
        order = torch.randperm(num_images, generator=torch.Generator().manual_seed(engine._step_seed(3, epoch)))
        return order[position * 8:(position + 1) * 8].chunk(world)[rank]

    expected = {(step, rank): old_batch_indices(step, rank, 2) for step in range(7) for rank in range(2)}
    engine._epoch_order.cache_clear()
    draws = []
    randperm = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: draws.append(1) or randperm(*a, **k))
    for step in range(7):
        for rank in range(2):
            assert torch.equal(engine.batch_indices(config, step, num_images, rank, 2), expected[step, rank])
    assert len(draws) == 3  # epochs 0, 1, 2


def test_the_swav_queue_joins_sinkhorn_once_the_steps_have_filled_it(tmp_path, monkeypatch):
    config = small_config(tmp_path, method="swav", queue_length=8, crops=SWAV_CROPS)
    config = config.resolved()
    images = engine.datasets.load("embedded", split="unlabeled", size=config.image_size, n=64).images
    used = []
    swav_loss = engine.swav_loss
    monkeypatch.setattr(engine, "swav_loss", lambda *a, **k: used.append(k["queue_scores"] is not None) or swav_loss(*a, **k))
    run = engine.Engine(config, images, "cpu")
    for step in range(4):
        run.step(step, 4)
    assert used == [False, False, True, True]  # 4 images a step: 8 entries after 2 steps


def _swav_parts(tmp_path, **changes):
    """A resolved SwAV config (4 images a step), its learner and one batch of images."""
    config = small_config(tmp_path, **{"method": "swav", "crops": SWAV_CROPS, **changes}).resolved()
    torch.manual_seed(0)
    learner = engine.Learner(config)
    images = engine.datasets.load("embedded", split="unlabeled", size=config.image_size, n=4).images
    return config, learner, images


def test_the_swav_queue_is_first_in_first_out(tmp_path):
    """Each step pushes its code crops' embeddings to the front and moves the older ones back by a batch (a queue of
    three batches here, so that the move is not a swap of two halves)."""
    config, learner, images = _swav_parts(tmp_path, queue_length=12)
    queue = torch.zeros(2, 12, config.proj_dim)
    pushed = []
    for seed in range(2):
        _, codes, _ = engine._swav_step(learner, learner.prototypes, images, torch.Generator().manual_seed(seed),
                                        config, queue)
        pushed.append(codes.view(2, 4, -1))  # (code crop, image, dim)
    torch.testing.assert_close(queue[:, :4], pushed[1], rtol=0, atol=0)
    torch.testing.assert_close(queue[:, 4:8], pushed[0], rtol=0, atol=0)
    assert (queue[:, 8:] == 0).all()


def test_a_swav_step_draws_its_views_from_its_generator_not_the_global_seed(tmp_path):
    config, learner, images = _swav_parts(tmp_path)
    losses = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        loss, _, _ = engine._swav_step(learner, learner.prototypes, images, torch.Generator().manual_seed(7), config,
                                       None)
        losses.append(loss.item())
    assert losses[0] == losses[1]


def test_a_swav_step_gives_the_loss_its_code_crops_and_epsilon(tmp_path, spy):
    # three large crops give codes (swav_loss's default is 2), at the config's epsilon (its default 0.05)
    config, learner, images = _swav_parts(tmp_path, crops=[[3, 32, [0.14, 1.0]], [1, 16, [0.05, 0.14]]], epsilon=0.1)
    calls = spy(engine, "swav_loss")
    engine._swav_step(learner, learner.prototypes, images, torch.Generator().manual_seed(0), config, None)
    assert (calls[0]["code_crops"], calls[0]["epsilon"]) == (3, 0.1)


# --- Distributed ------------------------------------------------------------------------------------------

def test_sync_bn_is_refused_on_cpu_processes_and_a_no_op_in_one_process(tmp_path):
    config = small_config(tmp_path, sync_bn=True).resolved()
    images = torch.zeros(8, 3, 40, 40, dtype=torch.uint8)
    with pytest.raises(ValueError, match="sync_bn=true needs CUDA"):
        engine.Engine(config, images, "cpu", rank=0, world=2)
    one = engine.Engine(config, images, "cpu")
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in one.learner.modules())


@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_cuda_devices_pass_the_sync_bn_check_and_drive_their_own_gpu_under_ddp(device):
    # (no GPU needed: the checks read the device's name, as the engine's GPU path does)
    distributed.check_sync_bn(True, 2, device)
    assert distributed.ddp_device_ids(torch.device(device)) == [torch.device(device)]
    for refused in ("cpu", torch.device("cpu"), "mps"):
        with pytest.raises(ValueError, match=f"got device {refused}: set sync_bn=false"):
            distributed.check_sync_bn(True, 2, refused)
        distributed.check_sync_bn(False, 2, refused)
        distributed.check_sync_bn(True, 1, refused)  # one process: nothing to synchronise
    assert distributed.ddp_device_ids(torch.device("cpu")) is None  # gloo's processes share the CPU


def test_sync_bn_converts_every_batch_norm_only_across_processes():
    def norms(module):
        return [type(m) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    plain = {nn.BatchNorm1d, nn.BatchNorm2d}  # (the projection head's and the ResNet's)
    for world, sync_bn, want in ((2, True, {nn.SyncBatchNorm}), (8, True, {nn.SyncBatchNorm}), (1, True, plain),
                                 (2, False, plain)):
        found = norms(distributed.with_sync_bn(engine.Learner(TrainConfig(arch="resnet18")), sync_bn, world))
        assert len(found) > 10 and set(found) == want, (world, sync_bn)


def test_a_compiled_run_renders_its_views_with_its_compile_backend(tmp_path, spy):
    single, multicrop = spy(engine, "make_views"), spy(engine, "make_multicrop_views")
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8)
    for method in ("s2r2", "swav"):
        config = small_config(tmp_path, method=method, compile=True).resolved()
        engine.Engine(config, images, "cpu", compile_backend="eager").step(0, 1)
        engine.Engine(dataclasses.replace(config, compile=False), images, "cpu", compile_backend="eager").step(0, 1)
    assert [call["compile_backend"] for call in single] == [call["compile_backend"] for call in multicrop] == [
        "eager", None]


def test_the_engine_hands_its_config_and_device_to_the_distributed_helpers(tmp_path, monkeypatch):
    # the GPU path's calls, on the CPU: SyncBatchNorm as configured, the ids on the engine's device, and DDP's
    # device_ids from ddp_device_ids (a one-process gloo group stands in for torchrun's)
    seen = []
    for name in ("with_sync_bn", "ddp_device_ids", "view_ids"):
        real = getattr(engine, name)
        monkeypatch.setattr(engine, name, lambda *a, real=real, name=name: seen.append((name, *a[1:])) or real(*a))
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8)
    engine.Engine(small_config(tmp_path, sync_bn=True).resolved(), images, "cpu")
    assert seen == [("with_sync_bn", True, 1), ("view_ids", 3, torch.device("cpu"))]
    seen.clear()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        engine.Engine(small_config(tmp_path).resolved(), images, "cpu", world=2)
    finally:
        dist.destroy_process_group()
    assert seen == [("with_sync_bn", False, 2), ("view_ids", 3, torch.device("cpu")),
                    ("ddp_device_ids",)]


def test_only_rank_0_shows_a_progress_bar(tmp_path):
    config = small_config(tmp_path, progress=True).resolved()
    assert [engine._progress_bar(config, rank, 0, 5).disable for rank in (0, 1, 2)] == [False, True, True]
    assert engine._progress_bar(dataclasses.replace(config, progress=False), 0, 0, 5).disable
    resumed = engine._progress_bar(config, 0, 3, 5)
    assert (resumed.n, resumed.total, list(resumed)) == (3, 5, [3, 4])  # a resumed run's bar starts where it stopped


def test_a_bad_projection_in_the_log_window_is_named_as_the_training_projections():
    ids = torch.arange(2).repeat_interleave(2)
    z = torch.randn(4, 3)
    z[1] = math.nan
    with pytest.raises(ValueError, match="^training projections: "):
        engine._batch_aps([(0, 0.5, torch.tensor(0.1), z, ids)])


def test_an_output_that_cannot_be_made_says_so_and_how_to_fix_it(tmp_path):
    long = small_config(tmp_path, output=str(tmp_path / ("x" * 300)))  # a name over 255 bytes
    with pytest.raises(ValueError, match=r"cannot be a run folder \(File name too long\); choose another output"):
        long.validate()
    with pytest.raises(ValueError, match=r"cannot create the run folder \(File name too long\); choose another output"):
        engine._prepare_output(long, resume=False)  # (unvalidated: the run folder's own check)


def test_the_train_command_resumes_and_prints_its_summary_in_order(tmp_path, capsys):
    config = small_config(tmp_path, max_steps=2)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert engine.main(["--config", str(path)]) == 0
    capsys.readouterr()
    assert engine.main(["--config", str(path), "--resume"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["resumed_from"] == 2  # the finished run, picked up: not trained again
    assert out.startswith("steps: 2\nresumed_from: 2\n")  # the summary in its own order, steps first


def test_an_override_keeps_every_equals_sign_after_the_first():
    config = TrainConfig().with_overrides(["output=runs/lr=1e-3", "data_root=/data/a=b"])
    assert (config.output, config.data_root) == ("runs/lr=1e-3", "/data/a=b")


def test_the_logged_step_times_add_up_to_the_training_time(tmp_path):
    summary = engine.train(small_config(tmp_path, max_steps=8, log_every=4))
    rows = read_log(Path(summary["log"]).parent)
    assert len(rows) == 8
    # each row holds the mean step time of its window of 4 (written to the ms): together, the training time
    assert sum(float(r["wall_s"]) for r in rows) == pytest.approx(summary["train_wall_s"], abs=8 * 5e-4)


def _distributed_worker(rank, world, init_file, marker, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    out = {}
    with distributed.rank_zero_first():
        if rank == 0:
            time.sleep(0.5)
            marker.write_text("rank 0 was here")
        out["saw_rank_0_first"] = marker.exists()
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    y = distributed.gather_with_grad(x)
    incoming = torch.ones_like(y)
    y.backward(incoming)
    out["incoming_untouched"] = bool((incoming == 1).all())
    out["grad"] = x.grad.tolist()
    results.put((rank, out))
    dist.destroy_process_group()


def test_rank_zero_goes_first_and_the_gather_leaves_its_incoming_gradient_alone(tmp_path):
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    processes = [context.Process(target=_distributed_worker, args=(rank, 2, tmp_path / "init", tmp_path / "marker", results))
                 for rank in range(2)]
    for process in processes:
        process.start()
    out = dict(results.get() for _ in processes)
    for process in processes:
        process.join(60)
    for rank in range(2):
        assert out[rank]["saw_rank_0_first"], rank
        assert out[rank]["incoming_untouched"], rank  # all_reduce works in place: it must get a copy
        assert out[rank]["grad"] == [[2.0] * 3] * 2  # the sum over both processes of d(sum y)/dx


# --- The device check (python -m s2r2lib.bench gpu) -------------------------------------------------------

def test_projections_scale_the_measured_rate_to_each_presets_epoch_and_table_cells():
    from s2r2lib.bench import gpu as check

    measured = {"paper-resnet18-stl10-s2r2": (1280.0, "r18"), "paper-resnet50-stl10-s2r2": (640.0, "r50")}
    rows = {(r["config"], r["metric"]): r for r in check.projections(measured)}
    epoch = rows["paper-resnet18-stl10-s2r2", "epoch_hours"]
    assert epoch["status"] == "projection"
    assert epoch["value"] == pytest.approx(105_000 // 64 * 1280 / 1280 / 3600)  # 1,640 steps of one second
    assert rows["paper-resnet18-stl10-s2r2", "table1_1000_epochs_hours"]["value"] == pytest.approx(1000 * epoch["value"])
    # COCO-val's S2R2 cell: 8 images x 10 views a step, at the same views/s
    assert rows["paper-resnet18-coco-val-s2r2", "epoch_hours"]["value"] == pytest.approx(5_000 // 8 * 80 / 1280 / 3600)
    assert "assumed" in rows["paper-resnet18-coco-val-s2r2", "epoch_hours"]["note"]
    assert rows["paper-resnet18-stl10-simclr", "epoch_hours"]["status"].startswith("skipped")  # nothing measured
    r50 = rows["paper-resnet50-stl10-s2r2", "epoch_hours"]["value"]
    assert r50 == pytest.approx(105_000 // 32 * 640 / 640 / 3600)
    assert rows["paper-resnet50-stl10-s2r2", "table2_200_epochs_hours"]["value"] == pytest.approx(200 * r50)


def _text_rows(path) -> list[dict[str, str]]:
    """A results table's rows with every cell as text ("" where empty), as the device check wrote them."""
    from s2r2lib.results import read_table

    return read_table(path).astype("string").fillna("").to_dict("records")


@pytest.mark.compiles
@pytest.mark.slow
def test_the_device_check_without_a_gpu_runs_every_stage_at_tiny_sizes(tmp_path, monkeypatch, capsys):
    """The CPU smoke of ``python -m s2r2lib.bench gpu``: the code the GPU run takes, end to end."""
    from s2r2lib.bench import gpu as check
    monkeypatch.setenv("S2R2_RESULTS_DIR", str(tmp_path / "results"))
    assert check.main(["--smoke", "--out-dir", str(tmp_path / "out")]) == 0
    assert "No CUDA device here (or --smoke)" in capsys.readouterr().out
    rows = _text_rows(tmp_path / "out" / "bench_gpu.csv")
    assert [r for r in rows if not r["status"].startswith(("measured", "projection", "skipped: no"))] == []
    assert {r["suite"] for r in rows} == {"environment", "training", "encoder", "projection", "resume", "compile", "suites"}
    assert all(r["commit"] and r["device"].startswith("cpu:") and r["torch"] and r["date"] for r in rows)
    values = {(r["suite"], r["config"], r["metric"]): r["value"] for r in rows}
    trained = [r["config"] for r in rows if r["suite"] == "training" and r["metric"] == "views_per_s"]
    assert len(trained) == 4 and all(float(values["training", c, "views_per_s"]) > 0 for c in trained)
    assert all(0 < float(values["encoder", c, "encoder_views_per_s"]) for c in trained)
    assert [r["value"] for r in rows if r["metric"] == "resume_vs_run1_bitwise"] == ["yes", "yes"]  # the CPU is bitwise
    assert float(values["compile", trained[0], "speedup"]) > 0
    assert (tmp_path / "out" / "bench_views.csv").exists()
    assert not (tmp_path / "results").exists()  # the smoke writes nothing to results/


def test_the_device_check_skips_what_the_budget_leaves_no_time_for(tmp_path, monkeypatch):
    from s2r2lib.bench import gpu as check
    monkeypatch.setenv("S2R2_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setattr(check.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "smoke"))
    assert check.main(["--smoke", "--budget", "0", "--stages", "training", "resume"]) == 0
    rows = _text_rows(tmp_path / "smoke" / "bench_gpu.csv")
    assert [(r["suite"], r["status"]) for r in rows if r["suite"] != "environment"] == [
        ("training", "skipped: budget"), ("resume", "skipped: budget")]
    assert not (tmp_path / "results").exists()


def test_an_out_dir_elsewhere_starts_from_the_committed_rows(tmp_path, monkeypatch):
    from s2r2lib.bench import gpu as check

    monkeypatch.setenv("S2R2_RESULTS_DIR", str(tmp_path / "results"))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench_loss.csv").write_text("impl,N\ns2r2lib,160\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "bench_views.csv").write_text("size\n96\n")  # already there: left alone
    assert [p.name for p in check.seed_from_results(tmp_path / "out")] == ["bench_loss.csv"]
    assert (tmp_path / "out" / "bench_loss.csv").read_text() == "impl,N\ns2r2lib,160\n"
    assert (tmp_path / "out" / "bench_views.csv").read_text() == "size\n96\n"
    assert check.seed_from_results(tmp_path / "results") == []


# --- What make mutation left alive in train.py (a sample of 30) -----------------------------------------------

def test_the_swav_queue_is_saved_in_the_checkpoint_state_and_restored_from_it(tmp_path):
    """In-process (the kill-and-resume tests run training in a subprocess, which mutation testing cannot see)."""
    config = small_config(tmp_path, method="swav", queue_length=8, crops=SWAV_CROPS).resolved()
    images = engine.datasets.load("embedded", split="unlabeled", size=config.image_size, n=64).images
    run = engine.Engine(config, images, "cpu")
    for step in range(3):
        run.step(step, 3)
    state = run.state(3, 1.0, "fingerprint")
    assert torch.equal(state["queue"], run.queue.cpu()) and state["queue"].abs().sum() > 0
    resumed = engine.Engine(config, images, "cpu")
    resumed.load(state)
    assert torch.equal(resumed.queue.cpu(), run.queue.cpu())


def test_sgd_starts_at_the_configured_learning_rate(tmp_path):
    config = small_config(tmp_path, optimizer="sgd", lr=0.05).resolved()
    optimizer = engine._optimizer(config, [nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["lr"] == 0.05


def test_a_run_keeps_its_snapshots_logs_whole_epochs_and_reports_epochs_seen(tmp_path):
    config = small_config(tmp_path, max_steps=20, keep_steps=[6], log_every=1)
    result = engine.train(config)
    run = tmp_path / "run"
    assert torch.load(run / "checkpoint-6.pt", weights_only=True)["step"] == 6
    assert sorted(p.name for p in run.glob("checkpoint*.pt")) == ["checkpoint-6.pt", "checkpoint.pt"]
    steps_per_epoch = 64 // 4
    with open(run / "log.csv", newline="") as log:  # the file as a reader opens it: whole epochs, "1" not "1.0"
        assert [row["epoch"] for row in csv.DictReader(log)] == [str(s // steps_per_epoch) for s in range(20)]
    assert result["epochs"] == pytest.approx(20 * 4 / 64)


@pytest.mark.parametrize("budget,last", [({"max_steps": 5}, 5), ({"epochs": 1}, 64 // 4)])
def test_a_snapshot_after_the_last_step_is_refused_before_the_run_folder_is_made(tmp_path, budget, last):
    engine.train(small_config(tmp_path, "fits", keep_steps=[last], **budget))  # the last step itself is kept
    assert (tmp_path / "fits" / f"checkpoint-{last}.pt").is_file()
    with pytest.raises(ValueError, match=rf"keep_steps \[{last + 1}\] come after the run's last step, {last}"):
        engine.train(small_config(tmp_path, keep_steps=[2, last + 1], **budget))
    assert not (tmp_path / "run").exists()


def test_the_knn_monitor_reads_its_data_from_the_configured_root(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(engine.datasets, "load", lambda name, **kw: asked.append((kw["root"], kw["size"])) or
                        engine.datasets.embedded(split="test", size=kw["size"], n=40))
    config = small_config(tmp_path, knn_data="embedded", knn_every=10, data_root=str(tmp_path / "data"),
                          image_size=36).resolved()  # not the loader's default size
    engine._KnnMonitor(config, torch.device("cpu"))
    assert asked == [(str(tmp_path / "data"), 36)] * 2  # the run's own root and image size


def test_the_knn_monitor_extracts_its_features_on_the_runs_device(tmp_path, spy):
    calls = spy(engine.probe, "extract_features")
    engine.train(small_config(tmp_path, max_steps=2, knn_every=2, knn_data="embedded", knn_images=40))
    assert [call["device"] for call in calls] == [torch.device("cpu")] * 2  # train and test split, at step 2
    assert math.isfinite(engine.read_log(tmp_path / "run")[-1]["knn_top1"])


def test_the_knn_monitor_fits_on_the_train_split_and_scores_on_the_test_split(tmp_path):
    config = small_config(tmp_path, knn_data="embedded", knn_every=10, knn_images=60).resolved()
    monitor = engine._KnnMonitor(config, torch.device("cpu"))
    for got, split, n in ((monitor.train_set, "train", 60), (monitor.test_set, "test", 30)):
        want = engine.datasets.subset(engine.datasets.load("embedded", split=split, size=config.image_size), n,
                                      config.seed)
        assert torch.equal(got.images, want.images) and torch.equal(got.labels, want.labels)


def test_resume_auto_starts_a_new_run_then_picks_it_up(tmp_path):
    first = engine.train(small_config(tmp_path, max_steps=2), resume="auto")  # no run there yet: starts one
    assert (first["resumed_from"], first["steps"]) == (0, 2)
    again = engine.train(small_config(tmp_path, max_steps=2), resume="auto")  # finished: not trained again
    assert (again["resumed_from"], again["steps"]) == (2, 2)


def test_the_training_loss_uses_the_runs_tau():
    z = nn.functional.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    ids = torch.arange(4).repeat_interleave(4)
    for method, loss_fn in (("s2r2", smooth_ap_loss), ("simclr", nt_xent_loss)):
        config = TrainConfig(method=method, tau=0.37, views_per_image=4, images_per_batch=4)
        assert torch.equal(engine._ranking_loss(config, z, ids), loss_fn(z, ids, 0.37))
        assert not torch.equal(engine._ranking_loss(config, z, ids), loss_fn(z, ids))  # (not the default tau)


def test_the_train_command_explains_its_overrides(capsys):
    with pytest.raises(SystemExit):
        engine.main(["--help"])
    assert "key=value, parsed as YAML" in capsys.readouterr().out


def test_the_train_command_trains_the_config_file_it_is_given(tmp_path):
    config = small_config(tmp_path, max_steps=1, seed=3)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert engine.main(["--config", str(path), "views_per_image=2"]) == 0
    saved = engine.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["config"]
    assert (saved["seed"], saved["max_steps"], saved["views_per_image"]) == (3, 1, 2)  # the file's, and the override


def test_the_train_command_describes_itself_in_its_help(capsys):
    with pytest.raises(SystemExit):
        engine.main(["--help"])
    assert engine.__doc__.split("\n\n")[0].split()[:6] == capsys.readouterr().out.split("\n\n")[1].split()[:6]


def test_each_steps_views_come_from_a_generator_seeded_by_seed_step_and_rank(tmp_path, monkeypatch):
    # The module's contract: a step's views depend on (seed, step, rank) only, so processes of one run draw
    # different views and a resumed run draws the ones it would have drawn.
    seeds = []
    real = engine._ranking_step
    monkeypatch.setattr(engine, "_ranking_step", lambda m, b, generator, *a: seeds.append(generator.initial_seed())
                        or real(m, b, generator, *a))
    images = torch.randint(0, 256, (16, 3, 40, 40), dtype=torch.uint8)
    for seed in (5, 6):
        run = engine.Engine(small_config(tmp_path, seed=seed).resolved(), images, torch.device("cpu"))
        for step in range(3):
            run.step(step, 3)
    assert seeds[:3] == [engine._step_seed(5, step, 0) for step in range(3)]
    assert seeds != [engine._step_seed(5, step, None) for step in range(3)] * 2  # the rank is part of it
    assert len(set(seeds)) == 6  # every step of each seed its own generator: the step and the seed are part of it


def test_the_learning_rate_warms_up_linearly_then_decays_by_a_cosine_to_zero():
    config = TrainConfig(lr=0.4, warmup_steps=4, schedule="cosine")
    lrs = [engine.learning_rate(config, step, 14) for step in range(14)]
    assert lrs[:4] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert (lrs[4], lrs[9]) == pytest.approx((0.4, 0.2))  # the peak, then half way through the 10 decay steps
    assert lrs[13] == pytest.approx(0.2 * (1 + math.cos(math.pi * 9 / 10)))
    constant = TrainConfig(lr=0.4, warmup_steps=4, schedule="constant")
    assert [engine.learning_rate(constant, step, 14) for step in range(4, 14)] == pytest.approx([0.4] * 10)


@pytest.mark.parametrize("optimizer", ["adam", "lars", "sgd"])
def test_every_optimiser_takes_the_configured_weight_decay(optimizer):
    config = TrainConfig(optimizer=optimizer, weight_decay=0.123, device="cpu").resolved()
    assert engine._optimizer(config, [nn.Parameter(torch.zeros(3))]).defaults["weight_decay"] == 0.123


def test_the_learner_builds_the_stem_the_config_asks_for():
    for small_input, kernel in ((True, 3), (False, 7)):
        config = TrainConfig(arch="resnet18", small_input=small_input).resolved()
        stems = [m for m in engine.Learner(config).model.modules() if isinstance(m, nn.Conv2d)]
        assert stems[0].kernel_size == (kernel, kernel), small_input
