"""The device check: the paper's setting on one GPU, in one command of at most 8 minutes.

    python -m s2r2lib.bench gpu [--out-dir results] [--budget 480] [--stages ...]      # or: make gpu-check

Stages, in this order. Each is guarded (a failure is a row "failed: <error>" and the next stage runs),
rows are written as they come (a timeout still leaves them), and a stage that would start past
``--budget`` seconds is a row "skipped: budget":

  training    20 steps of ``train.Engine`` (the engine's own step) at the paper's batches: S2R2, SimCLR and
              SwAV with ResNet18 at their Table 1 settings (64 x 20, 256 x 2, 256 x (2 x 96 + 6 x 48 px)) and
              S2R2 with ResNet50 (32 x 20), bf16 autocast, channels_last, embedded images at 96 px. views/s
              (median synchronised step after 3 warm-up steps), peak memory (max_memory_allocated, reset per
              config), and whether the loss falls (mean of the first 3 steps against the last 3).
              Then, as suite ``encoder``, on the same learner and the same number of views made
              beforehand: forward + backward + optimiser at the same precision. The share views and loss
              add to a step (goal <= 10 %), and the batched views' rate alone against the encoder's
              (goal >= 5x).
  projection  from each measured views/s: one epoch and each Table 1-2 cell's training (the paper's epochs;
              STL10 105,000 images, COCO train2017 118,287, val2017 5,000), status ``projection``.
  resume      ``python -m s2r2lib.train`` on the device, SIGKILLed after a checkpoint and resumed, against two
              uninterrupted runs (their difference is the noise floor); then with deterministic=true.
  compile     torch.compile on against off, S2R2 ResNet18, in a subprocess; compile time apart, bounded
              by --compile-limit (a longer compile stops the worker and is recorded as such).
  suites      the CUDA rows of ``bench loss``, ``bench views`` and ``bench train`` (subprocesses), into
              bench_loss.csv, bench_views.csv and bench_train.csv beside bench_gpu.csv (merged by key).

Rows: ``<out-dir>/bench_gpu.csv``, one per measurement, merged by (device, suite, config, metric): suite,
config, metric, value, unit, status (measured, projection, failed: ..., skipped: ...), note, wall_s (of the
measurement), and the provenance every bench row carries (commit, device, torch, date; S2R2_COMMIT names the
commit where the checkout has no git). Without a GPU the command says so and runs the same stages at tiny
sizes on the CPU (narrow_cnn at 32 px, 2 steps), writing to a temporary folder unless --out-dir is given.
On a GPU, an --out-dir other than results/ first gets copies of results/'s bench CSVs, so that each file
there holds the committed rows and this run's, ready to replace its namesake in results/.
Exit status: 0 unless a stage failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import data as datasets
from .. import results, train
from ..distributed import resolve_device
from . import train as bench_train

STAGES = ("training", "projection", "resume", "compile", "suites")
GOAL_OVERHEAD = 0.10  # views + loss: at most this share of a step
GOAL_VIEWS = 5.0      # batched views/s over the encoder's views/s
COLUMNS = ["suite", "config", "metric", "value", "unit", "status", "note", "wall_s", "commit", "device", "torch", "date"]
KEY = ("device", "suite", "config", "metric")
# Images per training set (Tables 1-2's rows), for the projections.
TRAINING_SET_IMAGES = {"stl10": 105_000, "coco-train": 118_287, "coco-val": 5_000}
PAPER_DATASETS = {"STL10 (unlabeled + train)": "stl10", "COCO-Train": "coco-train", "COCO-Val": "coco-val"}


@dataclass(frozen=True)
class Profile:
    """The sizes of one run of the check: the paper's on a GPU, tiny ones for the CPU smoke."""

    device: str
    data: dict                # TrainConfig fields of the training stage's data
    configs: tuple            # (preset the config stands for, TrainConfig overrides)
    steps: int                # training steps per config
    warmup: int               # steps left out of the timing
    encoder_repeats: int
    resume: dict              # TrainConfig fields of the kill-and-resume runs
    compile_backend: str
    suites: dict = field(default_factory=dict)  # suite -> its arguments (--out is added)


def gpu_profile() -> Profile:
    return Profile(
        device="cuda",
        data={"data": "embedded", "split": "unlabeled", "data_root": None, "image_size": 96, "view_size": 96,
              "data_options": {"n": 2048}},
        configs=(("paper-resnet18-stl10-s2r2", {}), ("paper-resnet18-stl10-simclr", {}),
                 ("paper-resnet18-stl10-swav", {}), ("paper-resnet50-stl10-s2r2", {})),
        steps=20, warmup=3, encoder_repeats=10,
        resume={"arch": "resnet18", "small_input": True, "image_size": 40, "view_size": 32, "images_per_batch": 32,
                "views_per_image": 4, "max_steps": 200, "checkpoint_every": 50, "precision": "bf16",
                "data_options": {"n": 1024}},
        compile_backend="inductor",
        suites={"loss": ["--device", "cuda"], "views": ["--device", "cuda"], "train": ["--device", "cuda"]},
    )


def smoke_profile() -> Profile:
    tiny = {"arch": "narrow_cnn", "small_input": True, "images_per_batch": 4}
    return Profile(
        device="cpu",
        data={"data": "embedded", "split": "unlabeled", "data_root": None, "image_size": 40, "view_size": 32,
              "data_options": {"n": 32}},
        configs=(("paper-resnet18-stl10-s2r2", {**tiny, "views_per_image": 3}),
                 ("paper-resnet18-stl10-simclr", {**tiny, "views_per_image": 2}),
                 ("paper-resnet18-stl10-swav", {**tiny, "crops": [[2, 32, [0.14, 1.0]], [2, 16, [0.05, 0.14]]]}),
                 ("paper-resnet50-stl10-s2r2", {**tiny, "views_per_image": 2})),
        steps=2, warmup=1, encoder_repeats=1,
        resume={"arch": "narrow_cnn", "small_input": True, "image_size": 40, "view_size": 32, "images_per_batch": 4,
                "views_per_image": 2, "max_steps": 40, "checkpoint_every": 5, "precision": "fp32",
                "data_options": {"n": 32}},
        compile_backend="eager",  # the same torch.compile path without minutes of C++ compilation
        # One suite shows the stage works; bench loss and train have tests of their own, and each of their
        # worker processes costs seconds on the CPU.
        suites={"views": ["--device", "cpu", "--size", "16", "--images", "2", "--views", "2", "--repeats", "1",
                          "--arch", "narrow_cnn", "--encoder-batch", "4"]},
    )


def profile_config(profile: Profile, preset: str, overrides: dict, **changes) -> train.TrainConfig:
    """The preset's config at the profile's data and device, with its overrides."""
    values = {**train.PRESETS[preset], **profile.data, "device": profile.device, "progress": False,
              "output": "unused", **overrides, **changes}
    return train.TrainConfig.from_dict(values).resolved()


def config_name(config: train.TrainConfig) -> str:
    """e.g. ``s2r2-resnet18-64x20@96px``, ``swav-resnet18-256x(2@96+6@48px)``."""
    if config.method == "swav":
        views = "(" + "+".join(f"{count}@{size}" for count, size, _ in config.crops) + "px)"
    else:
        views = f"{config.views_per_image}@{config.view_size}px"
    return f"{config.method}-{config.arch}-{config.images_per_batch}x{views}"


class Recorder:
    """The check's rows, upserted into ``path`` after every addition (a killed run keeps what it measured)."""

    def __init__(self, path: Path, device: str):
        self.path, self.rows = path, []
        self.provenance = results.provenance(device)

    def add(self, suite: str, config: str, metric: str, value="", unit: str = "", status: str = "measured",
            note: str = "", wall_s: float | str = "", write: bool = True) -> None:
        if isinstance(value, float):
            value = f"{value:.4g}"
        wall = f"{wall_s:.1f}" if isinstance(wall_s, float) else wall_s
        self.rows.append({"suite": suite, "config": config, "metric": metric, "value": value, "unit": unit,
                          "status": status, "note": note, "wall_s": wall, **self.provenance})
        if write:
            self.write()

    def write(self) -> None:
        results.write_table(self.path, [{c: row.get(c, "") for c in COLUMNS} for row in self.rows], KEY)

    def failed(self) -> list[dict]:
        return [row for row in self.rows if row["status"].startswith("failed")]


def _failure(error: BaseException) -> str:
    """A row's status for ``error``: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"failed: {type(error).__name__}" + (f": {lines[0][:240]}" if lines else "")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- Training and encoder-only steps ---------------------------------------------------------------------

def measure_training(profile: Profile, preset: str, overrides: dict, images: torch.Tensor) -> dict:
    """``profile.steps`` steps of the engine at ``preset``'s sizes, then the encoder-only step and the views
    alone on the same learner: the numbers of one config's training and encoder rows."""
    config = profile_config(profile, preset, overrides)
    device = resolve_device(config.device)
    cuda = device.type == "cuda"
    with train.backend_settings(config, device):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        run = train.Engine(config, images, device)
        run.module.train()
        losses = []
        times = [_timed(lambda: losses.append(run.step(step, profile.steps)[0]), device) for step in range(profile.steps)]
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
        losses = torch.stack(losses).tolist()
        host_sync = _first_host_sync(run, profile.steps, device) if cuda else None

        batch = images[:config.images_per_batch]
        views = bench_train.premade_views(config, batch)  # the step's count and sizes of views

        def encoder_step():
            loss = sum(z.square().mean() for z in run.module(views))
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()

        encoder = [_timed(encoder_step, device) for _ in range(profile.warmup + profile.encoder_repeats)]
        making = [_timed(lambda: bench_train.premade_views(config, batch), device)
                  for _ in range(profile.warmup + profile.encoder_repeats)]
    del run, views
    _free(device)
    k = max(1, min(3, profile.steps // 3))
    return {"config": config, "step_s": statistics.median(times[profile.warmup:]), "peak_mib": peak,
            "loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k, "finite": all(map(math.isfinite, losses)),
            "encoder_step_s": statistics.median(encoder[profile.warmup:]),
            "views_s": statistics.median(making[profile.warmup:]), "host_sync": host_sync}


def _first_host_sync(run: train.Engine, total_steps: int, device: torch.device) -> str:
    """Two more steps of ``run`` under CUDA's sync debug mode "error": "none" when neither makes the host
    wait for the device, else the first synchronising call's error (the proof the hot loop stays async)."""
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(total_steps, total_steps + 2):
            run.step(step, total_steps + 2)
        return "none"
    except RuntimeError as error:
        import traceback
        ours = [f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_tb(error.__traceback__)
                if "s2r2lib" in f.filename]
        return f"synchronised at {' <- '.join(reversed(ours[-3:]))}: {str(error).splitlines()[0][:120]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def training_stage(profile: Profile, recorder: Recorder, measured: dict) -> None:
    """The training and encoder rows of every config; ``measured[preset]`` gets (views/s, config name)."""
    began = time.perf_counter()
    images = datasets.load(profile.data["data"], split=profile.data["split"], size=profile.data["image_size"],
                           **profile.data["data_options"]).images.to(resolve_device(profile.device))
    recorder.add("training", "data", "images", len(images), "images", note=f"embedded unlabeled at "
                 f"{profile.data['image_size']} px, on {images.device}", wall_s=time.perf_counter() - began)
    for preset, overrides in profile.configs:
        began = time.perf_counter()
        name = preset
        try:
            name = config_name(profile_config(profile, preset, overrides))
            m = measure_training(profile, preset, overrides, images)
        except Exception as error:  # one config's failure (say, out of memory) is a row; the others still run
            recorder.add("training", name, "step_s", status=_failure(error), note=f"as {preset}",
                         wall_s=time.perf_counter() - began)
            _free(resolve_device(profile.device))
            continue
        wall = time.perf_counter() - began
        config, views = m["config"], m["config"].views_in_batch
        rate = views / m["step_s"]
        measured[preset] = (rate, name)
        note = f"as {preset}; {config.precision}, channels_last={config.channels_last}"

        def add(metric, value, unit, suite="training", **more):
            recorder.add(suite, name, metric, value, unit, wall_s=wall, **more)

        add("step_s", m["step_s"], "s", note=f"{note}; median of {profile.steps - profile.warmup} synchronised steps "
                                              f"after {profile.warmup} warm-up")
        add("views_per_s", rate, "views/s", note=f"{views} views a step")
        if m["peak_mib"] is None:
            add("peak_memory", "", "MiB", status="skipped: no device memory counter on the CPU")
        else:
            add("peak_memory", m["peak_mib"], "MiB", note="torch.cuda.max_memory_allocated, reset per config")
        k = max(1, min(3, profile.steps // 3))
        add("loss_first", m["loss_first"], "", note=f"mean of the first {k} steps")
        add("loss_last", m["loss_last"], "", note=f"mean of the last {k} steps")
        if m["host_sync"] is not None:
            add("host_sync_in_step", m["host_sync"], "", note="two steps under torch.cuda.set_sync_debug_mode('error')")
        add("loss_falls", "yes" if m["loss_last"] < m["loss_first"] else "no", "",
            note="" if m["finite"] else "a loss was not finite")
        encoder_rate = views / m["encoder_step_s"]
        overhead = 1 - m["encoder_step_s"] / m["step_s"]
        views_ratio = (views / m["views_s"]) / encoder_rate
        add("encoder_step_s", m["encoder_step_s"], "s", "encoder",
            note="forward + backward + optimiser on the same views made beforehand")
        add("encoder_views_per_s", encoder_rate, "views/s", "encoder")
        add("overhead_share", overhead, "fraction", "encoder", note=f"views + loss share of the step; goal <= "
            f"{GOAL_OVERHEAD:.0%}: {'meets' if overhead <= GOAL_OVERHEAD else 'misses'}")
        add("views_only_per_s", views / m["views_s"], "views/s", "encoder", note="the batched views alone")
        add("views_vs_encoder", views_ratio, "x", "encoder", note=f"views/s over the encoder's views/s; goal >= "
            f"{GOAL_VIEWS:g}x: {'meets' if views_ratio >= GOAL_VIEWS else 'misses'}")
        memory = "" if m["peak_mib"] is None else f"{m['peak_mib']:,.0f} MiB, "
        print(f"  {name}: {rate:,.0f} views/s, step {m['step_s'] * 1e3:.1f} ms, {memory}loss {m['loss_first']:.4f} -> "
              f"{m['loss_last']:.4f}, overhead {overhead:.1%}, views {views_ratio:.1f}x the encoder", flush=True)


# --- Projections ----------------------------------------------------------------------------------------

def projections(measured: dict[str, tuple[float, str]]) -> list[dict]:
    """Rows projecting training time from measured throughput: for every paper preset, one epoch's hours and
    each of its Table 1-2 cells' hours (the paper's epochs), from the views/s measured at the preset of the
    same arch and method (``measured``: preset -> (views/s, config name)); the time a step takes is its
    views over that rate. A preset with no measured arch and method is a row saying so."""
    by_kind = {(train.PRESETS[p]["arch"], train.PRESETS[p]["method"]): (rate, name, p) for p, (rate, name) in measured.items()}
    cells: dict[str, list[tuple[str, int]]] = {}
    for row in results.paper_rows().to_dict("records"):
        preset = f"paper-{row['arch']}-{PAPER_DATASETS[row['dataset']]}-{row['method'].lower()}"
        cells.setdefault(preset, []).append((row["table"], int(row["epochs"])))
    rows = []
    for preset, values in train.PRESETS.items():
        arch, method = values["arch"], values["method"]
        if (arch, method) not in by_kind:
            rows.append({"config": preset, "metric": "epoch_hours", "unit": "h",
                         "status": f"skipped: no measured throughput for {method} with {arch}"})
            continue
        rate, name, source = by_kind[arch, method]
        config = train.TrainConfig.from_dict(values)  # its sizes; not resolved: no device is needed
        training = preset[len(f"paper-{arch}-"):-len(f"-{method}")]
        images = TRAINING_SET_IMAGES[training]
        epoch_h = (images // config.images_per_batch) * config.views_in_batch / rate / 3600
        note = f"projection from {name}'s {rate:,.0f} views/s; {images:,} images, {config.images_per_batch} x " \
               f"{config.views_in_batch // config.images_per_batch} views a step"
        if source != preset:
            note += f" (measured at {source}'s batch, assumed to run at the same views/s)"
        rows.append({"config": preset, "metric": "epoch_hours", "value": epoch_h, "unit": "h", "status": "projection",
                     "note": note})
        for table, epochs in cells.get(preset, []):
            rows.append({"config": preset, "metric": f"{table}_{epochs}_epochs_hours", "value": epochs * epoch_h,
                         "unit": "h", "status": "projection", "note": f"{epochs} epochs x the epoch above"})
    return rows


def projection_stage(recorder: Recorder, measured: dict) -> None:
    if not measured:
        raise RuntimeError("no training config was measured, so there is nothing to project from")
    for row in projections(measured):
        recorder.add("projection", row["config"], row["metric"], row.get("value", ""), row["unit"], row["status"],
                     row.get("note", ""), write=False)
    recorder.write()


# --- Kill and resume ------------------------------------------------------------------------------------

def _train_command(config: train.TrainConfig, *extra: str) -> list[str]:
    overrides = [f"{k}={json.dumps(v)}" for k, v in config.to_dict().items() if v is not None]
    return [sys.executable, "-m", "s2r2lib.train", *extra, *overrides]


def _run_training(config: train.TrainConfig, timeout: float, *extra: str) -> dict:
    """``python -m s2r2lib.train`` as a user runs it; its printed summary."""
    import yaml

    done = subprocess.run(_train_command(config, *extra), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"python -m s2r2lib.train {' '.join(extra)} exited {done.returncode}: {last[:200]}")
    return yaml.safe_load(done.stdout)


def _kill_after_checkpoint(config: train.TrainConfig, timeout: float) -> int:
    """Start the run, SIGKILL it once its first checkpoint is on disk; the checkpoint's step."""
    checkpoint = Path(config.output) / "checkpoint.pt"
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(_train_command(config), stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.time() + timeout
        while process.poll() is None and not checkpoint.exists() and time.time() < deadline:
            time.sleep(0.002)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        code = process.wait()
        if not checkpoint.exists():
            stderr.seek(0)
            last = (stderr.read().decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"no checkpoint before the kill (exit {code}): {last[:200]}")
    step = train.load_checkpoint(checkpoint)["step"]
    if step >= config.max_steps:
        raise RuntimeError(f"the run finished (step {step}) before the kill; raise max_steps")
    return step


def _weights_difference(a_run: Path, b_run: Path) -> tuple[float, bool]:
    """(max |a - b| over the final weights, whether every tensor is bitwise equal)."""
    a, b = (train.load_checkpoint(run / "checkpoint.pt")["model"] for run in (a_run, b_run))
    floats = [(a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point()]
    return max(floats), all(torch.equal(a[k], b[k]) for k in a)


def resume_stage(profile: Profile, recorder: Recorder, seconds_left: float) -> None:
    deadline = time.perf_counter() + seconds_left
    with tempfile.TemporaryDirectory(prefix="s2r2-resume-") as folder:
        for mode, deterministic in (("default", False), ("deterministic", True)):
            began = time.perf_counter()
            base = train.TrainConfig.from_dict({**profile.resume, "device": profile.device, "progress": False,
                                                "deterministic": deterministic})
            name = f"{mode}: {config_name(base.resolved())}, {base.max_steps} steps"
            try:
                runs = {}
                for tag in ("run1", "run2", "killed") if not deterministic else ("run1", "killed"):
                    runs[tag] = Path(folder) / f"{mode}-{tag}"
                    config = dataclasses.replace(base, output=str(runs[tag]))
                    left = deadline - time.perf_counter()
                    if left < 5:
                        raise TimeoutError("the budget ran out before this run")
                    if tag == "killed":
                        killed_at = _kill_after_checkpoint(config, left)
                        summary = _run_training(config, deadline - time.perf_counter(), "--resume")
                    else:
                        _run_training(config, left)
            except Exception as error:
                recorder.add("resume", name, "resume_vs_run1_max_abs", status=_failure(error),
                             wall_s=time.perf_counter() - began)
                continue
            wall = time.perf_counter() - began
            note = f"killed after the checkpoint at step {killed_at}, resumed from step {summary['resumed_from']}"
            resume_abs, resume_bitwise = _weights_difference(runs["run1"], runs["killed"])
            recorder.add("resume", name, "resume_vs_run1_max_abs", resume_abs, "", note=note, wall_s=wall)
            recorder.add("resume", name, "resume_vs_run1_bitwise", "yes" if resume_bitwise else "no", "", wall_s=wall,
                         note="promised with deterministic=true" if deterministic else "not promised without deterministic")
            if not deterministic:
                floor_abs, floor_bitwise = _weights_difference(runs["run1"], runs["run2"])
                recorder.add("resume", name, "run1_vs_run2_max_abs", floor_abs, "", wall_s=wall,
                             note="two uninterrupted runs: the noise floor the resumed run is judged against")
                recorder.add("resume", name, "run1_vs_run2_bitwise", "yes" if floor_bitwise else "no", "", wall_s=wall)
            print(f"  {name}: resumed vs uninterrupted max |dw| {resume_abs:.3g} "
                  f"({'bitwise' if resume_bitwise else 'not bitwise'})", flush=True)


# --- torch.compile --------------------------------------------------------------------------------------

def _compile_worker(profile_name: str) -> None:
    """In a subprocess: the first training config's steps without, then with, torch.compile; a JSON line
    after each (the parent times the compile from the first line and stops the worker past its limit)."""
    profile = PROFILES[profile_name]()
    preset, overrides = profile.configs[0]
    device = resolve_device(profile.device)
    images = datasets.load(profile.data["data"], split=profile.data["split"], size=profile.data["image_size"],
                           **profile.data["data_options"]).images.to(device)
    for compiled in (False, True):
        config = profile_config(profile, preset, overrides, compile=compiled)
        with train.backend_settings(config, device):
            run = train.Engine(config, images, device, compile_backend=profile.compile_backend)
            run.module.train()
            times = [_timed(lambda: run.step(step, profile.steps), device) for step in range(profile.steps)]
        print(json.dumps({"compile": compiled, "first_step_s": times[0], "name": config_name(config),
                          "step_s": statistics.median(times[profile.warmup:])}), flush=True)
        del run
        _free(device)


def _worker_lines(command: list[str], first_timeout: float, then_timeout: float) -> tuple[list[dict], str]:
    """Run ``command``, collecting the JSON lines it prints; stop it if the first line takes over
    ``first_timeout`` s or the next over ``then_timeout`` s more. (lines, "" or why it stopped)."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
        lines: queue.Queue = queue.Queue()

        def read():
            for line in process.stdout:
                lines.put(line)
            lines.put(None)  # the worker closed its output

        threading.Thread(target=read, daemon=True).start()
        parts, why, deadline = [], "", time.perf_counter() + first_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                process.kill()
                why = f"over {then_timeout if parts else first_timeout:.0f} s"
                break
            if line is None:
                break
            if line.startswith("{"):
                parts.append(json.loads(line))
                deadline = time.perf_counter() + then_timeout
        code = process.wait()
        if code and not why:
            stderr.seek(0)
            why = f"exit {code}: {(stderr.read().decode(errors='replace').strip().splitlines() or [''])[-1][:200]}"
    return parts, why


def compile_stage(profile: Profile, profile_name: str, recorder: Recorder, limit: int, seconds_left: float) -> None:
    began = time.perf_counter()
    command = [sys.executable, "-m", "s2r2lib.bench.gpu", "--worker", json.dumps({"profile_name": profile_name})]
    # start-up and the uncompiled steps get a minute (or what is left), the compiled ones the limit
    compile_limit = min(limit, max(0, seconds_left - 60))
    lines, why = _worker_lines(command, min(60, seconds_left), compile_limit)
    wall = time.perf_counter() - began
    parts = {line["compile"]: line for line in lines}
    name = next((line["name"] for line in lines), "s2r2-resnet18")
    if False in parts:
        recorder.add("compile", name, "off_step_s", parts[False]["step_s"], "s", wall_s=wall)
    if True in parts:
        on = parts[True]
        recorder.add("compile", name, "on_step_s", on["step_s"], "s", wall_s=wall,
                     note=f"backend {profile.compile_backend}")
        recorder.add("compile", name, "compile_s", on["first_step_s"] - on["step_s"], "s", wall_s=wall,
                     note="first compiled step minus a compiled step")
        if False in parts:
            recorder.add("compile", name, "speedup", parts[False]["step_s"] / on["step_s"], "x", wall_s=wall,
                         note="uncompiled step time over compiled")
    elif False in parts and why.startswith("over"):  # recorded, not a failure: the check moves on
        recorder.add("compile", name, "compile_s", f">{compile_limit:.0f}", "s", status=f"stopped: compile {why}",
                     wall_s=wall, note="the first compiled step had not finished; the worker was stopped")
    else:
        recorder.add("compile", name, "compile_s", status=f"failed: {why or 'no compiled step reported'}", wall_s=wall)


# --- The other suites' rows on this device ----------------------------------------------------------------

def suites_stage(profile: Profile, recorder: Recorder, out_dir: Path, seconds_left: float) -> None:
    deadline = time.perf_counter() + seconds_left
    for suite, arguments in profile.suites.items():
        began = time.perf_counter()
        left = deadline - began
        path = out_dir / f"bench_{suite}.csv"
        if left < 20:
            recorder.add("suites", suite, "exit_status", status="skipped: budget", note=f"{left:.0f} s left")
            continue
        command = [sys.executable, "-m", "s2r2lib.bench", suite, *arguments, "--out", str(path)]
        print(f"  python -m s2r2lib.bench {suite} {' '.join(arguments)} (up to {left:.0f} s)", flush=True)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            recorder.add("suites", suite, "exit_status", status=f"failed: not done within {left:.0f} s",
                         wall_s=time.perf_counter() - began)
            continue
        print("\n".join("    " + line for line in done.stdout.strip().splitlines()[-14:]), flush=True)
        last = (done.stderr.strip().splitlines() or [""])[-1][:200]
        recorder.add("suites", suite, "exit_status", done.returncode, "",
                     "measured" if done.returncode == 0 else f"failed: exit {done.returncode}: {last}",
                     note=f"rows in {path.name}", wall_s=time.perf_counter() - began)


# --- The check ------------------------------------------------------------------------------------------

def seed_from_results(out_dir: Path) -> list[Path]:
    """Copy results/'s bench CSVs that ``out_dir`` lacks into it, so that the rows this run merges in sit
    beside the committed ones there: each file in ``out_dir`` can then replace its namesake in results/."""
    source = results.output_dir("results", published=True)
    if source.resolve() == out_dir.resolve():
        return []
    copied = []
    for name in ("bench_gpu.csv", *(f"bench_{suite}.csv" for suite in ("loss", "views", "train"))):
        if (source / name).exists() and not (out_dir / name).exists():
            copied.append(Path(shutil.copy2(source / name, out_dir / name)))
    return copied


PROFILES = {"gpu": gpu_profile, "smoke": smoke_profile}


def environment_rows(recorder: Recorder, device: torch.device) -> None:
    import platform

    recorder.add("environment", "", "device", results.device_name(device), write=False)
    recorder.add("environment", "", "python", platform.python_version(), write=False)
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        recorder.add("environment", "", "cuda", torch.version.cuda, write=False)
        recorder.add("environment", "", "cudnn", torch.backends.cudnn.version(), write=False)
        recorder.add("environment", "", "gpu_memory", properties.total_memory / 2**30, "GiB", write=False)
        recorder.add("environment", "", "multiprocessors", properties.multi_processor_count, write=False)
    recorder.write()


def print_summary(recorder: Recorder) -> None:
    print(f"\n{'suite':11s} {'config':38s} {'metric':26s} {'value':>12s} {'unit':8s} status")
    for row in recorder.rows:
        if row["suite"] == "projection" and row["metric"] != "epoch_hours" or row["suite"] == "environment":
            continue
        print(f"{row['suite']:11s} {row['config'][:38]:38s} {row['metric'][:26]:26s} {str(row['value'])[:12]:>12s} "
              f"{row['unit']:8s} {row['status'][:90]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2r2lib.bench gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", help="where bench_gpu.csv and the suites' CSVs go (default results/ on a GPU, "
                                          "a temporary folder for the CPU smoke)")
    parser.add_argument("--budget", type=float, default=480, help="seconds for the whole check; later stages are "
                                                                  "skipped (rows say so) once it is spent")
    parser.add_argument("--compile-limit", type=int, default=120, help="seconds torch.compile may take")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--smoke", action="store_true", help="the tiny CPU smoke even where a GPU is present")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _compile_worker(**json.loads(args.worker))
        return 0

    began = time.perf_counter()
    cuda = torch.cuda.is_available() and not args.smoke
    profile_name = "gpu" if cuda else "smoke"
    profile = PROFILES[profile_name]()
    if not cuda:
        print("No CUDA device here (or --smoke): a tiny CPU smoke of the same stages follows; its numbers are "
              "not GPU numbers and nothing goes to results/.", flush=True)
    out_dir = Path(args.out_dir) if args.out_dir else (
        results.output_dir("results") if cuda else Path(tempfile.mkdtemp(prefix="s2r2-gpu-smoke-")))
    out_dir.mkdir(parents=True, exist_ok=True)
    if cuda:
        seed_from_results(out_dir)
    device = resolve_device(profile.device)
    recorder = Recorder(out_dir / "bench_gpu.csv", str(device))
    print(f"{recorder.provenance['device']}, torch {torch.__version__}, commit {recorder.provenance['commit']}; "
          f"budget {args.budget:.0f} s; rows to {recorder.path}", flush=True)
    environment_rows(recorder, device)
    measured: dict[str, tuple[float, str]] = {}
    plan = {  # stage -> (seconds it needs at least, what it runs given the seconds left)
        "training": (30, lambda left: training_stage(profile, recorder, measured)),
        "projection": (0, lambda left: projection_stage(recorder, measured)),
        "resume": (40, lambda left: resume_stage(profile, recorder, left)),
        "compile": (60, lambda left: compile_stage(profile, profile_name, recorder, args.compile_limit, left)),
        "suites": (30, lambda left: suites_stage(profile, recorder, out_dir, left)),
    }
    for stage in (s for s in STAGES if s in args.stages and s in plan):
        need, run = plan[stage]
        left = args.budget - (time.perf_counter() - began)
        if left < need:
            recorder.add(stage, "", "stage", status="skipped: budget",
                         note=f"{max(left, 0):.0f} s of the {args.budget:.0f} s budget left; the stage needs {need} s")
            continue
        print(f"== {stage} ({left:.0f} s of the budget left)", flush=True)
        start = time.perf_counter()
        try:
            run(left)
        except Exception as error:  # a stage's failure is a row; the next stage runs
            recorder.add(stage, "", "stage", status=_failure(error), wall_s=time.perf_counter() - start)
            print(f"  {_failure(error)}", flush=True)
    print_summary(recorder)
    failed = recorder.failed()
    print(f"\n{len(recorder.rows)} rows ({len(failed)} failed) in {time.perf_counter() - began:.0f} s; wrote "
          f"{recorder.path}" + ("" if cuda else " (CPU smoke: not GPU numbers)"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
