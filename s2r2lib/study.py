"""Train-then-probe experiments: one run, a sweep over the batch's images and views (Figure 1), and
notebook 06's study of the paper's four claims, with its statistics and verdicts (never its figures:
those are in :mod:`s2r2lib.plots`).

The study (notebook 06) in one paragraph. Four methods, all with Adam, a linear warmup and cosine decay:
S2R2 (B x K views), SimCLR (K = 2, the same views per step), SwAV (2 large + 4 small crops, prototypes
frozen for the first 5 % of the steps, a queue) and a control, multi-view NT-Xent at S2R2's B x K, which
separates "more views per image" from "ranking". Every method gets the same *measured training time*: a
timing pass on this machine, in the same run, gives each method's step time, and each trains for
``train_seconds / step time`` steps. Each method's learning rate is chosen from the same grid by a linear
probe on a validation split carved from the labelled training images (the test split is never used for
it); a winner at the edge of the grid extends it once. Every encoder, and the random-init and raw-pixel
floors, is read by the same linear probe (:func:`probe_encoder`). Seeds are paired: a seed fixes the
initialisation and the data order of every method. A claim's effect is a per-seed paired difference; its
95 % t-interval is Holm-corrected within the claim, and :func:`classify` turns it into one of three
verdicts against a threshold declared here before any run (:data:`MIN_EFFECT_SHARE`).

Profiles (:data:`PLANS`): ``full`` (about 150 minutes on an idle 2-core CPU), ``default`` (reruns a subset of the
full runs and checks them against the committed rows), ``extend`` (more seeds), ``long`` (4x the budget),
``fashion`` (the main runs on Fashion-MNIST and its clutter, at the committed budget, lrs searched on
Fashion-MNIST), ``quick`` (the tests), ``gpu`` (ResNet18).
Every run folder is keyed by its config's content, and every probe result is cached beside the runs:
an interrupted study resumes where it stopped, and a finished one is read back, not retrained. Each
finished job's rows also go, as it finishes, to ``<root>/journal.jsonl`` (:class:`Journal`), keyed by the
job and not by where it ran: with the plan's ``budget-*.json`` (:func:`budget_path`), that one small file lets a
study stopped on one machine (a GPU lent for minutes) go on from where it stopped on another.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import probe, synthetic
from .data import ImageSet
from .train import RUNTIME_FIELDS, TrainConfig, read_log, train


def train_and_probe(config: TrainConfig, train_set: ImageSet, test_set: ImageSet, table: str, dataset: str,
                    probe_name: str = "embedded") -> list[dict]:
    """Train ``config`` (resuming or reusing its run folder), probe it on the labelled sets, and return
    its runs.csv rows (every metric of :data:`s2r2lib.probe.METRICS`)."""
    summary = train(config, resume="auto")
    start = time.perf_counter()
    metrics = probe.evaluate(summary["checkpoint"], train_set.images, train_set.labels, test_set.images,
                             test_set.labels, config.view_size,  # the checkpoint gives arch and small_input
                             device=config.device, split_name=f"{probe_name}-{len(train_set)}-{len(test_set)}")
    return probe.result_rows(metrics, table, dataset, summary["checkpoint"], device=config.device,
                             probe_s=time.perf_counter() - start)


def floor_rows(base: TrainConfig, train_set: ImageSet, test_set: ImageSet, table: str, dataset: str,
               probe_name: str = "embedded") -> list[dict]:
    """The random-init encoder's rows: the floor every trained encoder is read against."""
    start = time.perf_counter()
    metrics = probe.evaluate(None, train_set.images, train_set.labels, test_set.images, test_set.labels,
                             base.view_size, arch=base.arch, small_input=base.small_input, device=base.device,
                             split_name=f"{probe_name}-{len(train_set)}-{len(test_set)}", seed=base.seed)
    return probe.result_rows(metrics, table, dataset, arch=base.arch, seed=base.seed, device=base.device,
                             probe_s=time.perf_counter() - start)


def batch_sweep(base: TrainConfig, images_grid: list[int], views_grid: list[int], root: str | Path,
                train_set: ImageSet, test_set: ImageSet, table: str = "figure1", dataset: str = "embedded") -> list[dict]:
    """Figure 1's two axes through ``base``: images per batch over ``images_grid`` at base's views, and
    views per image over ``views_grid`` at base's images; each point trained for ``base.max_steps`` and
    probed. Run folders are ``<root>/B<images>-K<views>``."""
    points = {(b, base.views_per_image) for b in images_grid} | {(base.images_per_batch, k) for k in views_grid}
    rows = []
    for images, views in sorted(points):
        config = dataclasses.replace(base, images_per_batch=images, views_per_image=views,
                                     output=str(Path(root) / f"B{images}-K{views}"))
        rows += train_and_probe(config, train_set, test_set, table, dataset)
    return rows


def figure1_sweep(base: TrainConfig, images_grid: list[int], views_grid: list[int], n_train: int, n_test: int,
                  output: str | Path | None = None) -> list[dict]:
    """Notebook 05's sweep: :func:`batch_sweep` through ``base`` on the embedded data, in ``output`` or the run
    cache's folder for ``base``, probed on ``n_train`` labelled and ``n_test`` test images, with its random-init
    floor; the rows are written to runs.csv (table figure1) and returned."""
    from . import data as datasets
    from .reproduce import cached_run
    from .results import runs_path, write_runs

    root = output or cached_run("05_figure1", base).output
    probe_sets = [datasets.load("embedded", split=split, size=base.image_size, n=n, seed=base.seed)
                  for split, n in (("train", n_train), ("test", n_test))]
    rows = batch_sweep(base, images_grid, views_grid, root, *probe_sets)
    rows += floor_rows(base, *probe_sets, "figure1", "embedded")
    write_runs(rows)
    print(f"trained and probed the grid B in {images_grid} at K = {base.views_per_image}, K in {views_grid} at "
          f"B = {base.images_per_batch}, {base.max_steps} steps each; rows written to {runs_path()}")
    return rows


def committed_figure1() -> tuple[list[dict], int, int]:
    """The committed figure1 rows of results/runs.csv, and the point on both of their axes (the commonest B and
    K): (rows, B, K). FileNotFoundError when there are none."""
    from .results import committed_table

    committed = committed_table("runs")
    committed = committed[(committed["table"] == "figure1") & (committed["source"] == "measured")]
    if committed.empty:
        raise FileNotFoundError("results/runs.csv holds no figure1 rows yet: set retrain = True, or run make reproduce")
    trained = committed[committed["method"] != "random-init"]
    if trained.empty:
        raise FileNotFoundError("results/runs.csv holds only the floor of figure1, no trained point: set retrain = "
                                "True, or run make reproduce")
    images, views = int(trained["images"].mode()[0]), int(trained["views"].mode()[0])
    commits = ", ".join(committed["commit"].dropna().astype(str).unique())
    print(f"the {len(committed)} committed figure1 rows of results/runs.csv (commit {commits}): B in "
          f"{sorted(trained['images'].unique().tolist())}, K in {sorted(trained['views'].unique().tolist())}; set "
          f"retrain = True to train your own grid")
    return committed.to_dict("records"), images, views


def as_points(rows: list[dict], metric: str = "linear_top1") -> list[dict]:
    """runs.csv rows of one metric as plottable points: images, views, value (float)."""
    return [{"images": int(row["images"]), "views": int(row["views"]), "value": float(row["value"]), "seed": row["seed"]}
            for row in rows if row["metric"] == metric and row["method"] != "random-init"]


# --- Notebook 06: the plan --------------------------------------------------------------------------

# Declared before the full profile ran, never tuned on its rows: a claim's effect must reach this share of
# the best baseline's gain over the random-init floor (on the claim's data), and never less than
# MIN_EFFECT_POINTS, to count as the paper's effect.
MIN_EFFECT_SHARE = 0.25
MIN_EFFECT_POINTS = 0.01
ALPHA = 0.05  # 95 % intervals, before Holm's correction within a claim
MAX_LR_EXTENSIONS = 3  # the lr search adds one grid ratio beyond an edge winner, until it is inside, this often
RERUN_TOLERANCE = 0.015  # a subset rerun agrees with the committed row within 2 seed SDs, at least 1.5 points

METHODS = ("S2R2", "SimCLR", "SwAV", "MV-NT-Xent")  # MV-NT-Xent: the control, NT-Xent at S2R2's B x K
BASELINES = ("SimCLR", "SwAV")
FLOOR, RAW = "random-init", "raw pixels"
RAW_PIXELS_SIZE = 16  # the raw-pixel floor reads images resized to 16 x 16 x 3 = 768 numbers
C_GRID = (1.0, 10.0, 100.0)  # the probe's C grid (trained encoders chose 10 in trials), extended past an edge winner
C_LIMITS = (1e-4, 1e4)
# Training sets: name -> (loader, split, loader options, probe family); the family names the labelled
# object-centric splits every encoder trained on that set is read on.
STUDY_SETS = {
    "embedded-object": ("embedded", "unlabeled", {"mode": "object"}, "embedded"),
    "embedded-cluttered": ("embedded", "unlabeled", {"mode": "cluttered"}, "embedded"),
    "fashion-mnist": ("fashion_mnist", "train", {}, "fashion"),
    "fashion-mnist-clutter": ("fashion_mnist_clutter", "train", {"per_image": [4, 4], "scale": [0.44, 0.44]},
                              "fashion"),
}
IMAGE_SIZES = {"embedded": 40, "fashion": 32, "fashion_mnist_clutter": 64}
FASHION_MISSING = ("not measured: Fashion-MNIST files not found (apt-get install dataset-fashion-mnist, "
                   "or data_root=...)")
PROBE_PROTOCOL = ("linear probe: multinomial logistic regression (L-BFGS) on standardised frozen features; C from "
                  f"{{{', '.join(f'{c:g}' for c in C_GRID)}}}, extended by decades while the winner is at an edge, "
                  "chosen on a held-out 20% of the fitting images; lr search: fit on the labelled train split minus "
                  "a validation part, scored on it; claims: fit on the whole train split, scored on the test split")


RERUN_MODES = ("all", "subset", "extend", "long", "sets")
SCALE_TABLES = ("study-gpu",)  # studies at another scale, each with its own rows, verdicts and figures


@dataclass(frozen=True)
class StudyPlan:
    """Everything that sizes notebook 06's study; :data:`PLANS` holds the profiles."""

    train_seconds: float             # measured training time of every main run, each method alike
    seeds: tuple = (0, 1, 2)
    lrs: tuple = (3e-4, 1e-3, 3e-3)  # Adam; a winner at an edge adds lrs beyond it (MAX_LR_EXTENSIONS)
    main_sets: tuple = ("embedded-object", "embedded-cluttered")
    search_set: str = "embedded-object"
    data_n: int = 10000              # images of each embedded training set (the "full" set of claim 3)
    small_n: int = 500               # claim 3's small set: this many of small_set's images
    small_set: str = "embedded-cluttered"
    sweep_images: tuple = (4, 16, 64)  # claim 4: S2R2's B at K views, images x steps fixed
    sweep_classes: int = 2           # claim 4's explanation: the sweep's peak and last B with this many classes
    images: int = 16                 # S2R2's and the control's B ...
    views: int = 8                   # ... and K; SimCLR takes B * K / 2 images of 2 views
    swav_small_crops: int = 4
    swav_prototypes: int = 30
    swav_queue: int = 256
    warmup: float = 0.05             # warmup steps, as a share of the run
    freeze: float = 0.05             # SwAV's prototypes frozen for this share of the run
    snapshots: tuple = (0.25, 0.5, 1.0)  # probed at these shares of every main run (log-spaced)
    n_probe_train: int = 10000
    n_probe_test: int = 5000
    n_validation: int = 2000         # carved from the probe's train split for the lr search
    probe_max_iter: int = 500        # L-BFGS iterations of each probe fit
    arch: str = "narrow_cnn"
    small_input: bool = True
    view_size: int = 32
    recipe: str = "simclr-cifar"     # views.RECIPES: SimCLR's colour strength for 32-px views (s = 0.5)
    device: str = "cpu"
    workers: int = 2                 # processes training side by side
    threads: int = 1                 # torch threads per process
    timing_steps: int = 8            # steps timed per method (after 3 warm-up steps)
    rerun_sets: tuple | None = None  # rerun="subset": the main sets it reruns (None: all of main_sets)
    rerun: str = "all"               # "all"; "subset": seed 0 of the main sets, the rest read from results/;
                                     # "extend": the seeds results/ lacks, at its steps and lrs (all claims);
                                     # "long": the main runs at budget_factor x the committed steps (table
                                     # study-long), at the committed lrs: is the budget long enough?
                                     # "sets": the main runs on main_sets at the committed steps, with an lr
                                     # search of their own on the first set's validation split (table study)
    budget_factor: int = 1           # rerun="long": the committed main runs' steps are multiplied by this
    checkpoint_every: int = 100      # steps between a run's resume checkpoints (its snapshots are always kept)
    table: str = "study"             # its rows' table (its lr search's: "<table>-lr"); another scale's study
                                     # (study-gpu) keeps its rows, tables and figures apart (output_name)

    def __post_init__(self):
        if len(self.lrs) < 3 or max(self.lrs) < 10 * min(self.lrs) * 0.99:
            raise ValueError(f"StudyPlan: lrs must hold at least 3 learning rates spanning 10x, got {self.lrs}")
        if len(self.seeds) < 2:
            raise ValueError(f"StudyPlan: seeds needs at least 2 seeds for an interval, got {self.seeds}")
        if self.rerun not in RERUN_MODES:
            raise ValueError(f"StudyPlan: rerun must be one of {RERUN_MODES}, got {self.rerun!r}")
        if self.budget_factor < 1 or (self.budget_factor > 1) != (self.rerun == "long"):
            raise ValueError(f"StudyPlan: budget_factor must be 1, or an integer above 1 with rerun='long'; got "
                             f"{self.budget_factor} with rerun={self.rerun!r}")
        if self.images not in self.sweep_images or self.images in (min(self.sweep_images), max(self.sweep_images)):
            raise ValueError(f"StudyPlan: sweep_images {self.sweep_images} must hold images={self.images} strictly "
                             "inside it (the main runs are the sweep's middle point)")
        if self.table != "study" and (self.table not in SCALE_TABLES or self.rerun != "all"):
            raise ValueError(f"StudyPlan: table must be 'study' or one of {SCALE_TABLES} (with rerun='all': a "
                             f"study of its own, never mixed with the committed CPU rows), got {self.table!r} "
                             f"with rerun={self.rerun!r}")
        unknown = [d for d in (*self.main_sets, self.search_set, self.small_set) if d not in STUDY_SETS]
        if unknown:
            raise ValueError(f"StudyPlan: unknown data set(s) {unknown}; expected names from {list(STUDY_SETS)}")


_FULL = StudyPlan(train_seconds=60.0, seeds=(0, 1, 2, 3, 4))
PLANS = {
    # About 150 minutes on an idle 2-core CPU (two 1-thread workers); the README gives the measured times.
    "full": _FULL,
    # make reproduce: seed 0 of the main runs again, compared with the committed full rows.
    # (The object set only: with both sets make reproduce took 25 min on a fresh clone, over its 20.)
    "default": dataclasses.replace(_FULL, rerun="subset", rerun_sets=("embedded-object",)),
    # The seeds of the full plan that the committed rows lack, at their steps and lrs (how the committed
    # 3-seed study was taken to 5).
    "extend": dataclasses.replace(_FULL, rerun="extend"),
    # Is 60 s enough? The main runs of seeds 0-2 at 4x the committed steps and the committed lrs, probed at a
    # quarter (the committed runs' steps), half and all of them (table study-long; see budget_checks).
    "long": dataclasses.replace(_FULL, rerun="long", budget_factor=4, seeds=(0, 1, 2)),
    # Real images: the main runs (and floors) on Fashion-MNIST and its 4-item clutter, seeds 0-2, at the
    # committed steps; each method's lr searched again, the same way, on Fashion-MNIST's validation split.
    # The probe: 10,000 labelled train and 10,000 test images.
    "fashion": dataclasses.replace(_FULL, rerun="sets", seeds=(0, 1, 2), n_probe_test=10000,
                                   main_sets=("fashion-mnist", "fashion-mnist-clutter")),
    # The tests: every step of the pipeline, in under a minute, in the calling process (make test's workers
    # already fill the cores; the process pool has a test of its own). Its numbers mean nothing: runs of a few
    # steps, probes of 150 labelled and 100 test images with 20 L-BFGS iterations (56 s on an idle CPU, where
    # 0.6 s of training and probes of 300 and 200 images with 50 iterations took 95 s).
    "quick": StudyPlan(train_seconds=0.4, seeds=(0, 1), lrs=(1e-3, 3e-3, 1e-2), data_n=256, small_n=64,
                       sweep_images=(2, 4, 8), images=4, views=4, swav_small_crops=2, swav_queue=16,
                       n_probe_train=150, n_probe_test=100, n_validation=50, probe_max_iter=20,
                       snapshots=(0.5, 1.0), timing_steps=3, workers=1),
    # On one GPU (python -m s2r2lib.study run --plan gpu; no Jupyter needed): the whole study with ResNet18 at
    # 32 px, seeds 0-2, its own timing pass and lr search; rows of table study-gpu, results/*_gpu.csv.
    # Measured on an H100 (commit 939bb87, three 5-thread workers): timing pass 26 s, lr search 126 s, then 12
    # of the 49 jobs after it in 249 s before its 490-s limit: 30-80 s a run for 6 s of training, the GPU mostly
    # idle and the time in the probes' CPU-bound L-BFGS (float64, 10,000 x 512 features; about 14 s a probe on a
    # 2-core CPU). So the plan now runs eight 2-thread processes on the machine's 16 cores, each timed under
    # that load (eight ResNet18s sharing the GPU: a slower step than one alone), and 12 s of training a run
    # to keep the steps near the CPU study's ~400. Its probes fit on the GPU (fit_probe on the plan's device).
    # It needs more than one device call by estimate: each finished job's rows are in build/study's journal
    # (Journal), which with its budget-*.json lets the next call, on any machine, go on from there. Resume
    # checkpoints only at the snapshots: about 60 runs would otherwise write some 50 GB. Fashion-MNIST's files
    # are not on the device machine.
    "gpu": dataclasses.replace(_FULL, table="study-gpu", train_seconds=12.0, seeds=(0, 1, 2), arch="resnet18",
                               device="cuda", workers=8, threads=2, checkpoint_every=10**6),
}


def method_config(method: str, plan: StudyPlan, lr: float, steps: int, dataset: str | None = None,
                  seed: int = 0, images: int | None = None, data_n: int | None = None,
                  num_classes: int | None = None) -> TrainConfig:
    """The TrainConfig of one study run: ``method`` (one of :data:`METHODS`) at ``lr`` for ``steps`` steps on
    the study set ``dataset`` (default: the plan's search set), with the shared optimiser (Adam, linear warmup
    over ``plan.warmup`` of the steps, cosine decay). ``images`` overrides S2R2's B (claim 4's sweep)."""
    if method not in METHODS:
        raise ValueError(f"method_config: unknown method {method!r}; expected one of {METHODS}")
    dataset = dataset or plan.search_set
    loader, split, options, family = STUDY_SETS[dataset]
    options = dict(options)
    if loader == "embedded" or loader == "fashion_mnist_clutter":
        options["n"] = data_n or plan.data_n
    if num_classes is not None:
        options["num_classes"] = num_classes
    b, k = images or plan.images, plan.views
    shape = {"S2R2": dict(method="s2r2", images_per_batch=b, views_per_image=k),
             "MV-NT-Xent": dict(method="simclr", images_per_batch=b, views_per_image=k),
             "SimCLR": dict(method="simclr", images_per_batch=b * k // 2, views_per_image=2),
             "SwAV": dict(method="swav", images_per_batch=b, prototypes=plan.swav_prototypes,
                          queue_length=plan.swav_queue, prototype_freeze_steps=round(plan.freeze * steps),
                          crops=[[2, plan.view_size, [0.14, 1.0]],
                                 [plan.swav_small_crops, plan.view_size // 2, [0.05, 0.14]]])}[method]
    return TrainConfig(**shape, data=loader, split=split, data_options=options,
                       image_size=IMAGE_SIZES.get(loader, IMAGE_SIZES[family]), view_size=plan.view_size,
                       arch=plan.arch, small_input=plan.small_input, recipe=plan.recipe, optimizer="adam",
                       schedule="cosine", lr=lr,
                       warmup_steps=round(plan.warmup * steps), max_steps=steps, seed=seed, device=plan.device,
                       progress=False, checkpoint_every=plan.checkpoint_every,
                       keep_steps=snapshot_steps(steps, plan.snapshots))


def snapshot_steps(steps: int, shares) -> list[int]:
    """The steps at which a run of ``steps`` steps is probed: each share of it, rounded, at least step 1."""
    return sorted({min(steps, max(1, round(share * steps))) for share in shares})


@functools.cache
def _training_code() -> str:
    """The digest of the library's training code (``reproduce.code_digest``, as notebook runs are keyed): a
    study run or job made by other training code is never read back as this code's."""
    from .reproduce import code_digest

    return code_digest()


def run_folder(config: TrainConfig, root: str | Path, label: str) -> str:
    """``<root>/<label>/<hash>``: a run folder keyed by the config's content (runtime fields aside), the
    embedded data's version and the training code, so a changed config or code never reuses an old run and an
    unchanged one always does."""
    fields = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_FIELDS}
    digest = hashlib.sha256(json.dumps([fields, synthetic.VERSION, _training_code()], sort_keys=True,
                                       default=str).encode())
    return str(Path(root) / label / digest.hexdigest()[:12])


@functools.cache
def forward_flops(arch: str, small_input: bool, size: int) -> float:
    """Floating-point operations of one view's forward pass through the encoder and projection head at
    ``size`` px, counted by ``torch.utils.flop_counter``: convolutions and matrix products, a multiply-add as
    2; norms and activations are not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model

    model = build_model(arch, small_input=small_input).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(2, 3, size, size))
    return counter.get_total_flops() / 2


def flops_per_step(config: TrainConfig) -> float:
    """Training FLOPs of one step, estimated as 3 x the forward FLOPs of every view (backward ~ 2 x forward)."""
    crops = ([(c, s) for c, s, _ in config.crops] if config.method == "swav"
             else [(config.views_per_image, config.view_size)])
    return 3 * config.images_per_batch * sum(c * forward_flops(config.arch, config.small_input, s) for c, s in crops)


# --- Running jobs: two processes of one thread each beat one of two threads on a busy 2-core CPU ------

def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


class Workers:
    """Run study jobs on ``workers`` processes (spawned, ``threads`` torch threads each), or in this
    process when ``workers`` is 1. ``map`` returns results in the order of the jobs."""

    def __init__(self, workers: int = 1, threads: int = 1):
        self.workers, self.pool = workers, None
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=(threads,))
        else:
            _init_worker(threads)

    def map(self, fn, jobs: list, what: str = "jobs", on_result=None) -> list:
        """``fn`` over ``jobs``; ``on_result(job, result)`` is called in this process as each job finishes.
        When a job fails (or the study is interrupted), the queued jobs are cancelled, the running ones finish
        and go to ``on_result`` too, and the failure is raised: nothing finished is lost, nothing more starts."""
        start, done = time.perf_counter(), 0
        if self.pool is None:
            results = []
            for job in jobs:
                results.append(fn(job))
                if on_result is not None:
                    on_result(job, results[-1])
                done += 1
            print(f"{what}: {done} done in {time.perf_counter() - start:.0f} s", flush=True)
            return results
        from concurrent.futures import as_completed

        futures = {self.pool.submit(fn, job): i for i, job in enumerate(jobs)}
        results, reported = [None] * len(jobs), set()

        def report(future):
            results[futures[future]] = future.result()
            reported.add(future)
            if on_result is not None:
                on_result(jobs[futures[future]], results[futures[future]])

        try:
            for future in as_completed(futures):
                report(future)
                done += 1
                if done % max(1, len(jobs) // 10) == 0 or done == len(jobs):
                    print(f"{what}: {done}/{len(jobs)} done, {time.perf_counter() - start:.0f} s", flush=True)
        except BaseException:
            cancelled = sum(future.cancel() for future in futures)
            print(f"{what}: stopped by a failure; {cancelled} queued jobs cancelled, waiting for the running ones",
                  flush=True)
            for future in futures:
                if future not in reported and not future.cancelled() and future.exception() is None:
                    report(future)
            raise
        return results

    def close(self, cancel: bool = False) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=cancel)

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        self.close(cancel=kind is not None)  # on an error, jobs still queued never start


# --- The journal: each finished job's rows, kept as it finishes -------------------------------------

JOURNAL = "journal.jsonl"
_PATH_FIELDS = ("output", "data_root", "cache")  # where this machine keeps a job, not what the job is
# Left out of a job's key, per part: the config's runtime fields too; the probe keeps its device (rows probed
# on CUDA never stand in for CPU rows).
_NOT_IN_KEY = {"config": (*RUNTIME_FIELDS, *_PATH_FIELDS), "probe": _PATH_FIELDS}


def job_key(job: dict) -> str:
    """A study job's identity: its config (runtime fields aside), table, data, snapshots and probe, the
    embedded data's and the probe's versions and the training code; never the folders it runs in, so that the
    same job keeps its key under another root (another machine, a later session at the same code)."""
    identity = {part: {k: v for k, v in value.items() if k not in _NOT_IN_KEY[part]} if part in _NOT_IN_KEY
                else value for part, value in job.items()}
    return hashlib.sha256(json.dumps([identity, synthetic.VERSION, PROBE_PROTOCOL, _training_code()],
                                     sort_keys=True, default=str).encode()).hexdigest()[:20]


class Journal:
    """``<root>/journal.jsonl``: one line per finished study job, ``{"job": job_key, "rows": [...]}``,
    appended (under the file's lock) as the job finishes, so that a stopped study loses only its unfinished
    jobs. :meth:`run` answers the jobs it holds from it and runs the rest. A line cut short by a kill is
    skipped when read, and the next line starts on a line of its own. ``rm <root>/journal.jsonl`` makes a
    study run every job again (its run folders and probe caches are still reused)."""

    def __init__(self, root: str | Path):
        self.path = Path(root) / JOURNAL

    def read(self) -> dict[str, list[dict]]:
        if not self.path.is_file():
            return {}
        done = {}
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a study killed while writing it
            done[entry["job"]] = entry["rows"]
        return done

    def append(self, job: dict, rows: list[dict]) -> None:
        from .fileio import locked

        line = json.dumps({"job": job_key(job), "rows": rows}) + "\n"
        with locked(self.path):
            with open(self.path, "a+b") as handle:  # (appends go to the end, wherever it has read)
                size = handle.seek(0, os.SEEK_END)
                if size:
                    handle.seek(size - 1)
                    if handle.read(1) != b"\n":
                        line = "\n" + line  # after a line cut short by a kill
                handle.write(line.encode())
                handle.flush()
                os.fsync(handle.fileno())

    def run(self, workers: "Workers", fn, jobs: list[dict], what: str) -> list[list[dict]]:
        """``workers.map(fn, jobs)``, each job's rows taken from the journal where it holds them and written
        to it as the others finish; results in the order of ``jobs``."""
        done, keys = self.read(), [job_key(job) for job in jobs]
        todo = [job for job, key in zip(jobs, keys) if key not in done]
        if len(todo) < len(jobs):
            print(f"{what}: {len(jobs) - len(todo)} of {len(jobs)} jobs read from {self.path}", flush=True)
        fresh = iter(workers.map(fn, todo, what, on_result=self.append) if todo else [])
        return [done[key] if key in done else next(fresh) for key in keys]


def clear_for_fresh(root: str | Path) -> None:
    """Empty the study folder ``root`` for ``make reproduce FRESH=1`` (every run trained and probed again),
    keeping what this machine could not remake: the journal's jobs that ran on a GPU and the budgets of plans
    on a GPU (carried here from a lent device; ``--fresh`` retrains the CPU study only)."""
    from .fileio import atomic_write_bytes, locked

    root = Path(root)
    if not root.exists():
        return
    journal = Journal(root)
    with locked(journal.path):
        kept = {key: rows for key, rows in journal.read().items() if _ran_on_gpu(rows)}
        budgets = {path.name: path.read_bytes() for path in root.glob("budget-*.json")
                   if str(json.loads(path.read_text())["plan"].get("device", "")).startswith("cuda")}
        for path in root.iterdir():
            if path != journal.path and not path.name.startswith(f".{journal.path.name}"):  # (the lock stays held)
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for name, data in budgets.items():
            atomic_write_bytes(root / name, data)
        atomic_write_bytes(journal.path, "".join(f"{json.dumps({'job': key, 'rows': rows})}\n"  # as append writes
                                                 for key, rows in kept.items()).encode())


def _ran_on_gpu(rows: list[dict]) -> bool:
    return bool(rows) and all(str(row.get("device", "")).startswith("cuda") for row in rows)


# --- The probe: one for every encoder and every floor ------------------------------------------------

@functools.lru_cache(maxsize=2)
def probe_data(family: str, n_train: int, n_test: int, data_root: str | None = None) -> tuple[ImageSet, ImageSet]:
    """The labelled object-centric (train, test) splits of a probe family: the embedded object splits at
    40 px, or the first images of Fashion-MNIST train and test at 32 px. FileNotFoundError when
    Fashion-MNIST's files are missing."""
    from . import data as datasets

    if family == "embedded":
        return tuple(datasets.load("embedded", split=split, size=40, n=n, mode="object")
                     for split, n in (("train", n_train), ("test", n_test)))
    sets = [datasets.load("fashion_mnist", root=data_root, split=split, size=32) for split in ("train", "test")]
    return tuple(ImageSet(s.images[:n], s.labels[:n], s.classes, f"{s.name}-{n}") for s, n in zip(sets, (n_train, n_test)))


def raw_pixels(images: torch.Tensor) -> torch.Tensor:
    """The raw-pixel floor's features: uint8 images resized to :data:`RAW_PIXELS_SIZE`, flattened, in [0, 1]."""
    x = F.interpolate(images.float() / 255, size=(RAW_PIXELS_SIZE, RAW_PIXELS_SIZE), mode="bilinear",
                      antialias=True, align_corners=False)
    return x.flatten(1)


def fit_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
              max_iter: int = 500, device: str | torch.device = "cpu") -> dict:
    """:func:`s2r2lib.probe.linear_probe` over :data:`C_GRID`, then, while the winner sits at an edge of the
    Cs tried, one decade beyond it (within :data:`C_LIMITS`) against the winner. Returns top1 on (test_x,
    test_y), the chosen c and every validation score (the same held-out slice for every C). The fits run on
    ``device``: the study's own (a GPU study's L-BFGS would otherwise hold eight processes on the CPU)."""
    def fit(grid):
        return probe.linear_probe(train_x, train_y, test_x, test_y, c_grid=grid, max_iter=max_iter, device=device)

    result = fit(list(C_GRID))
    validation = dict(result.validation)
    while True:
        beyond = (result.c * 10 if result.c == max(validation) else result.c / 10 if result.c == min(validation)
                  else None)
        if beyond is None or not C_LIMITS[0] <= beyond <= C_LIMITS[1]:
            return {"top1": result.top1, "c": result.c, "validation": {f"{c:g}": v for c, v in sorted(validation.items())}}
        result = fit([result.c, beyond])
        validation.update(result.validation)


def probe_encoder(checkpoint: str | Path | None, family: str, n_train: int, n_test: int, n_validation: int,
                  validation: bool, cache: str | Path, arch: str = "narrow_cnn", small_input: bool = True,
                  size: int = 32, seed: int = 0, data_root: str | None = None, device: str = "cpu",
                  max_iter: int = 500) -> dict:
    """Linear top-1 of one encoder (a checkpoint; the random-init encoder of ``seed`` when None; raw pixels
    when ``checkpoint == "raw"``) by :func:`fit_probe`: with ``validation``, fitted on the first
    n_train - n_validation labelled train images and scored on the last n_validation (the lr search);
    otherwise fitted on all n_train and scored on the test split. Cached in ``cache`` by the checkpoint's
    bytes and the probe's settings."""
    if checkpoint in (None, "raw"):
        who = f"{checkpoint or 'random-init'}-{arch}-{small_input}-{seed}"
    else:
        who = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    key = hashlib.sha256(repr((who, family, n_train, n_test, n_validation, validation, size, C_GRID, max_iter,
                               synthetic.VERSION)).encode()).hexdigest()[:20]
    path = Path(cache) / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    start = time.perf_counter()
    train_set, test_set = probe_data(family, n_train, n_test, data_root)
    if checkpoint == "raw":
        train_x, test_x = raw_pixels(train_set.images), raw_pixels(test_set.images)
    else:
        model = probe.load_encoder(checkpoint, arch=arch, small_input=small_input, seed=seed)
        train_x, test_x = (probe.extract_features(model, s.images, size, device=device) for s in (train_set, test_set))
    train_y, test_y = train_set.labels, test_set.labels
    if validation:
        cut = len(train_x) - n_validation
        train_x, test_x, train_y, test_y = train_x[:cut], train_x[cut:], train_y[:cut], train_y[cut:]
    result = {**fit_probe(train_x.double(), train_y, test_x.double(), test_y, max_iter, device),
              "probe_s": time.perf_counter() - start}
    from .results import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(result).encode())
    return result


# --- Jobs: train (resuming) and probe ----------------------------------------------------------------

def _row(table: str, dataset: str, method: str, value: float, arch: str, seed: int, device: str, images="",
         views="", epochs=0.0, lr="", steps=0, views_seen=0, train_s=0.0, probe_s=0.0) -> dict:
    from .results import provenance

    prov = {k: v for k, v in provenance(device).items() if k in ("commit", "device", "date")}
    return {"table": table, "arch": arch, "dataset": dataset, "method": method, "images": images, "views": views,
            "epochs": epochs, "seed": seed, "lr": lr, "steps": steps, "views_seen": views_seen,
            "train_s": f"{train_s:.1f}", "metric": "linear_top1", "value": f"{value:.4f}", "source": "measured",
            "protocol": PROBE_PROTOCOL, "wall_s": f"{train_s + probe_s:.1f}", **prov}


def run_job(job: dict) -> list[dict]:
    """One study job (run in a worker): train ``job["config"]`` unless its run folder holds it finished, then
    probe the snapshots ``job["probe_steps"]``; or, for a floor (``job["floor"]``), probe that. Returns its
    runs.csv rows (``table=job["table"]``, values as fractions)."""
    p = job["probe"]
    common = dict(family=p["family"], n_train=p["n_train"], n_test=p["n_test"], n_validation=p["n_validation"],
                  validation=job["table"].endswith("-lr"), cache=p["cache"], data_root=p["data_root"],
                  max_iter=p["max_iter"])
    if "floor" in job:
        result = probe_encoder(job["floor"], arch=p["arch"], small_input=p["small_input"], size=p["size"],
                               seed=job["seed"], device=p["device"], **common)
        method = RAW if job["floor"] == "raw" else FLOOR
        return [_row(job["table"], job["dataset"], method, result["top1"], p["arch"], job["seed"], p["device"],
                     probe_s=result["probe_s"])]
    config = TrainConfig.from_dict(job["config"])
    checkpoint = Path(config.output) / "checkpoint.pt"
    finished = checkpoint.is_file() and torch.load(checkpoint, map_location="cpu", weights_only=True)["step"] >= config.max_steps
    if not finished:
        train(config, resume="auto")
    rows = []
    for step in job["probe_steps"]:
        path = checkpoint if step == config.max_steps else checkpoint.with_name(f"checkpoint-{step}.pt")
        state = torch.load(path, map_location="cpu", weights_only=True)
        result = probe_encoder(path, arch=config.arch, small_input=config.small_input, size=config.view_size,
                               seed=config.seed, device=config.device, **common)
        views = sum(c for c, _, _ in config.crops) if config.method == "swav" else config.views_per_image
        rows.append(_row(job["table"], job["dataset"], job["method"], result["top1"], config.arch, config.seed,
                         config.device, images=config.images_per_batch, views=views,
                         epochs=round(step * config.images_per_batch / state["num_images"], 3), lr=f"{config.lr:g}",
                         steps=step, views_seen=step * config.views_in_batch, train_s=state["train_wall_s"],
                         probe_s=result["probe_s"]))
    return rows


def time_job(job: dict) -> dict[str, float]:
    """The timing pass (run in a worker): each method's median step time, in seconds, over
    ``job["timing_steps"]`` steps after 3 warm-up steps, on 512 images of the search set."""
    plan = StudyPlan(**job["plan"])
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for method in METHODS:
            steps = 3 + plan.timing_steps
            config = dataclasses.replace(method_config(method, plan, plan.lrs[0], steps, data_n=512, seed=job["seed"]),
                                         output=str(Path(folder) / method), keep_steps=[], checkpoint_every=10**6,
                                         log_every=1)  # every step read and timed on its own
            train(config)
            out[method] = statistics.median(row["wall_s"] for row in read_log(config.output)[3:])
    return out


def _timed_plan(plan: StudyPlan) -> dict:
    """What a timing pass of ``plan`` depends on: the plan but for the fields that name its rows and files."""
    return {k: v for k, v in dataclasses.asdict(plan).items() if k not in ("table", "checkpoint_every")}


def budget_path(plan: StudyPlan, root: str | Path) -> Path:
    """``<root>/budget-<digest>.json``: the timing pass of ``plan``, named by what it times
    (:func:`_timed_plan`), one file per plan."""
    digest = hashlib.sha256(json.dumps(_timed_plan(plan), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path(root) / f"budget-{digest}.json"


def measure_budget(plan: StudyPlan, root: str | Path, workers: Workers) -> dict:
    """Steps per method for equal measured training time: every worker times every method at once (the
    load they will train under), the medians averaged over workers; steps = train_seconds / step time.
    Saved in ``<root>/budget-<plan digest>.json`` (:func:`budget_path`) and read back on a rerun of the same
    plan (whatever table its rows go to), so a resumed study keeps its runs, and a study of another plan in
    the same root (the quick one, say) never replaces it: a new timing would change every run's steps."""
    wanted = {"plan": _timed_plan(plan)}
    path = budget_path(plan, root)
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["plan"] == json.loads(json.dumps(wanted["plan"])):
            return saved
    timings = workers.map(time_job, [{"plan": dataclasses.asdict(plan), "seed": i} for i in range(plan.workers)],
                          "timing pass")
    step_s = {m: float(np.mean([t[m] for t in timings])) for m in METHODS}
    budget = {**wanted, "step_s": step_s, "steps": {m: max(4, round(plan.train_seconds / s)) for m, s in step_s.items()},
              "measured": {m: [t[m] for t in timings] for m in METHODS}}
    from .results import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(budget, indent=1).encode())
    print("budget: " + ", ".join(f"{m} {1e3 * step_s[m]:.1f} ms a step -> {budget['steps'][m]} steps" for m in METHODS),
          flush=True)
    return json.loads(path.read_text())  # as a rerun reads it back


def budget_table(rows, plan: StudyPlan, budget: dict | None = None) -> "pd.DataFrame":
    """What each method got on each main set, from the final probes' rows (mean over seeds): its steps,
    images, views and training FLOPs seen (:func:`flops_per_step`), and the training seconds it measured;
    with ``budget``, the step time the timing pass measured beside it."""
    import pandas as pd

    df = frame(rows)
    out = []
    for dataset in _judged(df, plan).main_sets:
        for method in METHODS:
            runs = df[(df["table"] == "study") & (df["dataset"] == dataset) & (df["method"] == method) & df["final"]]
            if runs.empty:
                continue
            steps = int(runs["steps"].iloc[0])
            config = method_config(method, plan, float(runs["lr"].iloc[0]), steps, dataset)
            out.append({"data": dataset, "method": method, "B": config.images_per_batch,
                        "views per image": int(runs["views"].iloc[0]), "lr": float(runs["lr"].iloc[0]),
                        "step_s (timed)": (budget or {}).get("step_s", {}).get(method, float("nan")), "steps": steps,
                        "images seen": steps * config.images_per_batch, "views seen": int(runs["views_seen"].iloc[0]),
                        "TFLOPs": steps * flops_per_step(config) / 1e12, "train_s": float(runs["train_s"].mean())})
    return pd.DataFrame(out)


# --- The whole study ---------------------------------------------------------------------------------

def winning_lr(scores: dict[float, float]) -> float:
    """The winner of an lr search's ``scores`` (lr -> validation top-1): the best score, the smaller lr on a tie."""
    return max(scores, key=lambda lr: (scores[lr], -lr))


def lr_extension(scores: dict[float, float], grid) -> float | None:
    """The learning rate to add when the best of ``scores`` (lr -> validation top-1) sits at an edge of the lrs
    scored so far: one ``grid`` ratio beyond it. None when the winner is inside, or once
    :data:`MAX_LR_EXTENSIONS` lrs beyond ``grid`` have been scored (:func:`lr_at_edge` then says so)."""
    grid, tried = sorted(grid), sorted(scores)
    if len(set(tried) - set(grid)) >= MAX_LR_EXTENSIONS:
        return None
    best = winning_lr(scores)
    if best not in (tried[0], tried[-1]):
        return None
    beyond = best * grid[-1] / grid[-2] if best == tried[-1] else best * grid[0] / grid[1]
    return float(f"{beyond:.3g}")


def lr_at_edge(scores: dict[float, float]) -> bool:
    """Whether the best of ``scores`` is the smallest or largest lr scored: a search that ended there (after
    :data:`MAX_LR_EXTENSIONS`) did not find the method's best lr."""
    best = winning_lr(scores)
    return best in (min(scores), max(scores))


def _probe_settings(plan: StudyPlan, family: str, root: Path, data_root: str | None) -> dict:
    return {"family": family, "n_train": plan.n_probe_train, "n_test": plan.n_probe_test,
            "n_validation": plan.n_validation, "cache": str(root / "probes"), "data_root": data_root,
            "arch": plan.arch, "small_input": plan.small_input, "size": plan.view_size, "device": plan.device,
            "max_iter": plan.probe_max_iter}


def _job(plan, root, data_root, table, method, lr, steps, dataset, seed, label, images=None, data_n=None,
         num_classes=None, probe_steps=None) -> dict:
    config = method_config(method, plan, lr, steps, dataset, seed, images, data_n, num_classes)
    if STUDY_SETS[dataset][3] == "fashion":
        config = dataclasses.replace(config, data_root=data_root)
    config = dataclasses.replace(config, output=run_folder(config, root, f"{label}/{method}"))
    return {"config": config.to_dict(), "table": table, "method": method, "dataset": label,
            "probe_steps": probe_steps or config.keep_steps,
            "probe": _probe_settings(plan, STUDY_SETS[dataset][3], root, data_root)}


def lr_search(plan: StudyPlan, budget: dict, root: Path, workers: Workers, data_root: str | None = None,
              dataset: str | None = None):
    """Every method at every lr of the grid (seed 0, the search set or ``dataset``, the full budget), scored
    by the probe on the validation split; a winner at an edge adds one lr beyond it, and again while the
    winner is at an edge (:func:`lr_extension`). Returns (rows, {method: best lr})."""
    dataset = dataset or plan.search_set
    rows = []
    pending = [(m, lr) for m in METHODS for lr in plan.lrs]
    while pending:
        jobs = [_job(plan, root, data_root, f"{plan.table}-lr", m, lr, budget["steps"][m], dataset, plan.seeds[0],
                     dataset, probe_steps=[budget["steps"][m]]) for m, lr in pending]
        rows += [row for result in Journal(root).run(workers, run_job, jobs, "lr search") for row in result]
        pending = []
        for method in METHODS:
            extra = lr_extension({float(r["lr"]): float(r["value"]) for r in rows if r["method"] == method}, plan.lrs)
            if extra is not None:
                pending.append((method, extra))
    best = {}
    for method in METHODS:
        scores = {float(r["lr"]): float(r["value"]) for r in rows if r["method"] == method}
        best[method] = winning_lr(scores)
        if lr_at_edge(scores):
            print(f"lr search: {method}'s best lr, {best[method]:g}, is still at an edge after {MAX_LR_EXTENSIONS} "
                  f"extensions: its runs are not at its best lr", flush=True)
    print("lr search: " + ", ".join(f"{m} {lr:g}" for m, lr in best.items()), flush=True)
    return rows, best


def _longest_first(job: dict) -> float:
    """A sort key putting the longest runs first (steps, discounted for small batches' faster steps)."""
    return -job["config"]["max_steps"] * job["config"]["images_per_batch"] ** -0.5


def study_jobs(plan: StudyPlan, budget: dict, best_lr: dict, root: Path, data_root: str | None = None,
               done_seeds: tuple = ()) -> list[dict]:
    """Every job after the lr search: the main runs (every method, main set and seed, probed at the
    snapshots), claim 3's small-set runs, claim 4's sweep (at images x steps fixed) with its fewer-classes
    arm, and the floors; the longest first. With ``plan.rerun == "subset"``: seed 0 of the main runs only;
    ``done_seeds`` are left out (``rerun == "extend"``: the seeds the committed rows hold). With ``"long"``:
    the main runs only (table study-long), seed by seed, so that a study stopped early holds whole seeds;
    their floors are the committed ones (the same probe, the same random-init encoders). With ``"sets"``:
    the main runs and the floors of ``plan.main_sets``, no claim 3 or 4 runs (those are the search set's)."""
    steps, jobs = budget["steps"], []
    seeds = plan.seeds[:1] if plan.rerun == "subset" else tuple(s for s in plan.seeds if s not in done_seeds)
    table = {"subset": "study-rerun", "long": LONG_TABLE}.get(plan.rerun, plan.table)
    for dataset in (plan.rerun_sets or plan.main_sets) if plan.rerun == "subset" else plan.main_sets:
        for method in METHODS:
            jobs += [_job(plan, root, data_root, table, method, best_lr[method], steps[method], dataset, seed, dataset)
                     for seed in seeds]
    if plan.rerun == "long":
        return sorted(jobs, key=lambda job: (job["config"]["seed"], _longest_first(job)))
    if plan.rerun not in ("subset", "sets"):
        small = f"{plan.small_set}-n{plan.small_n}"
        for method in ("S2R2", *BASELINES):
            jobs += [_job(plan, root, data_root, table, method, best_lr[method], steps[method], plan.small_set,
                          seed, small, data_n=plan.small_n) for seed in seeds]
        s2r2_steps = steps["S2R2"]
        sweep = [(b, None) for b in plan.sweep_images if b != plan.images]
        sweep += [(b, plan.sweep_classes) for b in (plan.images, max(plan.sweep_images))]
        for images, classes in sweep:
            label = f"{plan.search_set}-{classes}classes" if classes else f"{plan.search_set}-bsweep"
            b_steps = max(1, round(s2r2_steps * plan.images / images))  # images per batch x steps fixed
            jobs += [_job(plan, root, data_root, table, "S2R2", best_lr["S2R2"], b_steps, plan.search_set, seed,
                          label, images=images, num_classes=classes, probe_steps=[b_steps]) for seed in seeds]
        jobs.sort(key=_longest_first)
    for family in dict.fromkeys(STUDY_SETS[d][3] for d in plan.main_sets):
        probe_settings = _probe_settings(plan, family, root, data_root)
        jobs += [{"floor": None, "seed": seed, "table": table, "dataset": family, "probe": probe_settings}
                 for seed in seeds]
        if 0 not in done_seeds:
            jobs.append({"floor": "raw", "seed": 0, "table": table, "dataset": family, "probe": probe_settings})
    return jobs


def measured_sets(plan: StudyPlan, data_root: str | None = None) -> tuple[StudyPlan, dict[str, str]]:
    """``plan`` without the Fashion-MNIST sets whose files are missing (either split: the study trains on the
    train split and probes on both), and {set: why not measured}."""
    from . import data as datasets

    missing = {}
    for dataset in plan.main_sets:
        if STUDY_SETS[dataset][3] == "fashion":
            try:
                for split in ("train", "test"):
                    datasets.fashion_files(data_root, split)
            except FileNotFoundError:
                missing[dataset] = FASHION_MISSING
    return dataclasses.replace(plan, main_sets=tuple(d for d in plan.main_sets if d not in missing)), missing


def run_study(plan: StudyPlan, root: str | Path, data_root: str | None = None) -> dict:
    """The whole study: timing pass, lr search, then every run and floor; or, for ``rerun="subset"``, seed 0
    of the main runs at the committed full profile's steps and lrs (rows of table ``study-rerun``), in
    ``<root>/rerun`` so that they are trained again even where the full profile's runs are on disk.
    For ``rerun="extend"``, the seeds of ``plan.seeds`` that the committed rows lack, for every claim, at the
    committed steps and lrs (rows of table ``study``, in ``root`` beside the full profile's runs). For
    ``rerun="long"``, the main runs of ``plan.seeds`` at ``plan.budget_factor`` x the committed steps, at the
    committed lrs (rows of table ``study-long``). For ``rerun="sets"``, the main runs and floors of
    ``plan.main_sets`` at the committed steps, each method's lr searched on the first set's validation split
    (rows of tables ``study-lr`` and ``study``). Returns {"budget", "best_lr", "search": rows, "rows": rows,
    "not_measured"}."""
    root = Path(root)
    plan, missing = measured_sets(plan, data_root)
    done_seeds: tuple = ()
    with Workers(plan.workers, plan.threads) as workers:
        if plan.rerun in ("subset", "extend", "long", "sets"):  # the committed full rows say what to train:
            committed = committed_rows()                            # no timing pass
            budget, best = committed_plan(committed, plan)
            budget["steps"] = {m: s * plan.budget_factor for m, s in budget["steps"].items()}
            search = []
            if plan.rerun == "sets":
                if not plan.main_sets:  # every set of the plan is missing here: nothing to train
                    return {"budget": budget, "best_lr": {}, "search": [], "rows": [], "not_measured": missing}
                search, best = lr_search(plan, budget, root, workers, data_root, dataset=plan.main_sets[0])
            elif plan.rerun == "subset":
                root = root / "rerun"  # never the full profile's own runs, read back
            elif plan.rerun == "extend":
                done_seeds = tuple(sorted({int(r["seed"]) for r in committed if r["table"] == "study" and r["seed"]}))
        else:
            budget = measure_budget(plan, root, workers)
            search, best = lr_search(plan, budget, root, workers, data_root)
        jobs = study_jobs(plan, budget, best, root, data_root, done_seeds)
        rows = [row for result in Journal(root).run(workers, run_job, jobs, "runs") for row in result]
    return {"budget": budget, "best_lr": best, "search": search, "rows": rows, "not_measured": missing}


def default_root() -> Path:
    """Where the study's runs and probe results live: ``<runs>/../study`` (build/study), outside the folder
    ``make reproduce`` clears, so that the full profile resumes and reuses what it finished."""
    from .results import output_dir

    return output_dir("runs").parent / "study"


# --- From rows to claims ------------------------------------------------------------------------------

def frame(rows) -> "pd.DataFrame":
    """Study rows (dicts or a DataFrame) with numeric columns; ``snapshot`` numbers a run's probes 0, 1, ...
    by step and ``final`` marks its last. Rows of a subset rerun (table study-rerun) count as table study."""
    import pandas as pd

    df = pd.DataFrame(rows).copy()
    df["table"] = df["table"].replace({"study-rerun": "study"})  # a rerun reads like the rows it reruns
    df = df[df["table"].isin(["study", "study-lr"]) & (df["metric"] == "linear_top1")]
    for column in ("value", "lr", "train_s"):
        df[column] = pd.to_numeric(df[column], errors="coerce")
    for column in ("images", "views", "seed", "steps", "views_seen"):
        df[column] = pd.to_numeric(df[column], errors="coerce").fillna(0).astype(int)
    run = ["table", "dataset", "method", "images", "views", "lr", "seed"]
    df["snapshot"] = df.groupby(run, dropna=False)["steps"].rank(method="dense").astype(int) - 1
    df["final"] = df["snapshot"] == df.groupby(run, dropna=False)["snapshot"].transform("max")
    return df.reset_index(drop=True)


def summary(rows) -> "pd.DataFrame":
    """Mean, standard deviation over seeds and count of the study's top-1 per (data set, method, images,
    snapshot), with the mean steps, views seen and training seconds there: what the figures draw."""
    df = frame(rows)
    df = df[df["table"] == "study"]
    grouped = df.groupby(["dataset", "method", "images", "snapshot"], dropna=False)
    out = grouped.agg(mean=("value", "mean"), std=("value", "std"), n=("value", "size"), steps=("steps", "mean"),
                      views_seen=("views_seen", "mean"), train_s=("train_s", "mean"), final=("final", "all"))
    return out.reset_index()


def t_interval(differences, alpha: float = ALPHA) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided (1 - alpha) Student-t interval: mean -/+ t(n - 1) x SD /
    sqrt(n), SD with n - 1 (the standard error of the mean, not the spread of the seeds)."""
    from scipy import stats

    x = np.asarray(differences, dtype=float)
    if len(x) < 2:
        raise ValueError(f"t_interval needs at least 2 paired differences (seeds), got {len(x)}")
    mean, se = float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))
    half = float(stats.t.ppf(1 - alpha / 2, len(x) - 1)) * se
    return mean, mean - half, mean + half


def t_pvalue(differences) -> float:
    """Two-sided p-value of the paired t-test of mean difference 0 (1.0 when every difference is 0)."""
    from scipy import stats

    x = np.asarray(differences, dtype=float)
    se = x.std(ddof=1) / math.sqrt(len(x))
    if se == 0:
        return 0.0 if x.mean() != 0 else 1.0
    return float(2 * stats.t.sf(abs(x.mean()) / se, len(x) - 1))


def holm_alphas(pvalues, alpha: float = ALPHA) -> list[float]:
    """Holm's levels for m comparisons: the one with the k-th smallest p-value (k = 0, 1, ...) is judged at
    alpha / (m - k); once one fails at its level, every later one is judged at that same level (Holm stops
    there). The intervals are then (1 - level) intervals."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    levels, stopped = [0.0] * m, None
    for k, i in enumerate(order):
        level = alpha / (m - k) if stopped is None else stopped
        if stopped is None and pvalues[i] > level:
            stopped = level
        levels[i] = level
    return levels


def classify(effect: float, ci_low: float, ci_high: float, threshold: float) -> str:
    """The three verdicts: "supported" when the interval lies above 0 and the effect reaches the threshold;
    "contradicted" when the whole interval lies below the threshold (an effect of the claimed size is
    excluded); "inconclusive" otherwise."""
    if ci_low > 0 and effect >= threshold:
        return "supported"
    if ci_high < threshold:
        return "contradicted"
    return "inconclusive"


def _by_seed(df, dataset, method, images=None, snapshot=None) -> "pd.Series":
    """Top-1 per seed of one (data set, method) run group at its final probe (or at ``snapshot``)."""
    sel = df[(df["table"] == "study") & (df["dataset"] == dataset) & (df["method"] == method)]
    if images is not None:
        sel = sel[sel["images"] == images]
    sel = sel[sel["final"]] if snapshot is None else sel[sel["snapshot"] == snapshot]
    return sel.groupby("seed")["value"].mean()


def _best_baseline(df, dataset, snapshot=None) -> str | None:
    means = {m: _by_seed(df, dataset, m, snapshot=snapshot).mean() for m in BASELINES}
    means = {m: v for m, v in means.items() if not math.isnan(v)}
    return max(means, key=means.get) if means else None


def judged_plan(rows, plan: StudyPlan) -> StudyPlan:
    """``plan`` judging every main set its rows hold: its own main sets and each other study set with a main
    S2R2 run in ``rows`` (say, the fashion profile's beside the committed embedded ones), in
    :data:`STUDY_SETS` order whichever profile ran. Every verdict, check and figure of the study reads this
    plan's sets."""
    return _judged(frame(rows) if len(rows) else None, plan)


def _judged(df, plan: StudyPlan) -> StudyPlan:
    """:func:`judged_plan` of rows already read by :func:`frame` (None: no rows)."""
    held = set() if df is None else set(df[(df["table"] == "study") & (df["method"] == "S2R2")
                                            & (df["images"] == plan.images)]["dataset"])
    sets = tuple(d for d in STUDY_SETS if d in held or d in plan.main_sets)
    sets += tuple(d for d in plan.main_sets if d not in sets)  # (StudyPlan refuses names outside STUDY_SETS)
    return plan if sets == plan.main_sets else dataclasses.replace(plan, main_sets=sets)


def long_plan(rows, plan: StudyPlan) -> StudyPlan:
    """``plan`` judging the sets the long profile's rows hold, and only those (:func:`long_rows`)."""
    return judged_plan(long_rows(rows), dataclasses.replace(plan, main_sets=()))


def floors(rows, datasets) -> dict[str, dict[str, float]]:
    """The floors' top-1 per data set: {random-init or raw pixels: {set: mean over its rows}}, each set read
    through its probe family (the same probe, so the same floor, for a set and its clutter)."""
    df = frame(rows)
    return {name: {d: float(_floor(df, d, name).mean()) for d in datasets} for name in (FLOOR, RAW)}


def _floor(df, dataset, floor: str = FLOOR) -> "pd.Series":
    """A floor's top-1 per seed for ``dataset`` (random-init by default, or raw pixels)."""
    family = STUDY_SETS[dataset][3]  # the probe's data family: every study set's floor is its family's
    return df[(df["table"] == "study") & (df["dataset"] == family) & (df["method"] == floor)].groupby("seed")["value"].mean()


def _threshold(df, datasets) -> float:
    gains = []
    for dataset in datasets:
        best = _best_baseline(df, dataset)
        if best is not None:
            gains.append(_by_seed(df, dataset, best).mean() - _floor(df, dataset).mean())
    gain = float(np.mean(gains)) if gains else float("nan")
    return max(MIN_EFFECT_SHARE * gain, MIN_EFFECT_POINTS) if math.isfinite(gain) else MIN_EFFECT_POINTS


def _lead(df, dataset, snapshot=None) -> "pd.Series":
    best = _best_baseline(df, dataset, snapshot)
    if best is None:
        return _by_seed(df, dataset, "S2R2") * float("nan")
    return _by_seed(df, dataset, "S2R2", snapshot=snapshot) - _by_seed(df, dataset, best, snapshot=snapshot)


def _curve_lead(df, dataset) -> "pd.Series":
    """S2R2's lead over the best baseline, averaged over a run's snapshots (log-spaced): a curve's area."""
    snapshots = sorted(df[(df["table"] == "study") & (df["dataset"] == dataset)]["snapshot"].unique())
    zero = _by_seed(df, dataset, "S2R2") * 0.0  # a series even when the set has no snapshot (then empty)
    return sum((_lead(df, dataset, s) for s in snapshots), zero) / max(1, len(snapshots))


def comparisons(rows, plan: StudyPlan) -> list[dict]:
    """Every paired comparison of the study: claim, data, what is compared, per-seed differences, and the
    data sets whose best-baseline gain sets the threshold."""
    df = frame(rows)
    plan = _judged(df, plan)
    out = []

    def add(claim, data, comparison, diffs, reference):
        diffs = diffs.dropna()
        out.append({"claim": claim, "data": data, "comparison": comparison, "diffs": diffs.tolist(),
                    "threshold": _threshold(df, reference)})

    for dataset in plan.main_sets:
        add("1", dataset, f"S2R2 - best of SimCLR, SwAV ({_best_baseline(df, dataset)})", _lead(df, dataset), [dataset])
    cluttered = [(o, c) for o, c in (("embedded-object", "embedded-cluttered"), ("fashion-mnist", "fashion-mnist-clutter"))
                 if o in plan.main_sets and c in plan.main_sets]
    for object_set, cluttered_set in cluttered:
        add("2", f"{cluttered_set} vs {object_set}", "S2R2's lead on clutter - its lead on objects",
            _lead(df, cluttered_set) - _lead(df, object_set), [object_set, cluttered_set])
    small = f"{plan.small_set}-n{plan.small_n}"
    add("3", f"{small} vs {plan.small_set}", "S2R2's lead over the curve (mean over log-spaced snapshots), small set - "
        "full set", _curve_lead(df, small) - _curve_lead(df, plan.small_set), [plan.small_set])
    bs = sorted(plan.sweep_images)
    peak = plan.images  # the main runs' B; the sweep adds the others at the same images x steps
    a = {b: _by_seed(df, plan.search_set if b == peak else f"{plan.search_set}-bsweep", "S2R2", images=b) for b in bs}
    add("4", f"{plan.search_set}, B in {{{', '.join(map(str, bs))}}} at equal images x steps",
        f"min(rise B={bs[0]} to B={peak}, fall B={peak} to B={bs[-1]})",
        np.minimum(a[peak] - a[bs[0]], a[peak] - a[bs[-1]]), [plan.search_set])
    few = f"{plan.search_set}-{plan.sweep_classes}classes"
    fall_few = _by_seed(df, few, "S2R2", images=peak) - _by_seed(df, few, "S2R2", images=bs[-1])
    add("4", f"{few} vs {plan.search_set}", f"fall from B={peak} to B={bs[-1]} with {plan.sweep_classes} classes - "
        "with 10 (the paper's explanation: similar images in a batch)", fall_few - (a[peak] - a[bs[-1]]),
        [plan.search_set])
    for dataset in plan.main_sets:
        add("control", dataset, "S2R2 - MV-NT-Xent (ranking, at equal views)",
            _by_seed(df, dataset, "S2R2") - _by_seed(df, dataset, "MV-NT-Xent"), [dataset])
        add("control", dataset, "MV-NT-Xent - SimCLR (more views per image)",
            _by_seed(df, dataset, "MV-NT-Xent") - _by_seed(df, dataset, "SimCLR"), [dataset])
    return out


VERDICT_COLUMNS = ["claim", "data", "verdict", "effect", "ci_low", "ci_high", "threshold", "seeds", "comparison",
                   "level"]


def verdicts(rows, plan: StudyPlan, not_measured: dict[str, str] | None = None) -> "pd.DataFrame":
    """The verdicts table, one row per comparison (:data:`VERDICT_COLUMNS`): the mean paired difference, its
    Holm-corrected t-interval within the claim (``level`` is the alpha used), the threshold declared before
    the runs, and :func:`classify`'s verdict; "not measured" where fewer than 2 seeds pair up."""
    import pandas as pd

    found = comparisons(rows, plan)
    table = []
    for claim in dict.fromkeys(c["claim"] for c in found):
        group = [c for c in found if c["claim"] == claim]
        testable = [c for c in group if len(c["diffs"]) >= 2]
        levels = holm_alphas([t_pvalue(c["diffs"]) for c in testable]) if testable else []
        level_of = {id(c): level for c, level in zip(testable, levels)}
        for c in group:
            row = {"claim": c["claim"], "data": c["data"], "comparison": c["comparison"], "seeds": len(c["diffs"]),
                   "threshold": c["threshold"]}
            if id(c) in level_of:
                effect, low, high = t_interval(c["diffs"], level_of[id(c)])
                row.update(effect=effect, ci_low=low, ci_high=high, level=level_of[id(c)],
                           verdict=classify(effect, low, high, c["threshold"]))
            else:
                row.update(effect=float("nan"), ci_low=float("nan"), ci_high=float("nan"), level=float("nan"),
                           verdict="not measured")
            table.append(row)
    for dataset, why in (not_measured or {}).items():
        table.append({"claim": "1", "data": dataset, "comparison": why, "seeds": 0, "verdict": "not measured",
                      "effect": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                      "threshold": float("nan"), "level": float("nan")})
    return pd.DataFrame(table, columns=VERDICT_COLUMNS)


def checks(rows, plan: StudyPlan) -> "pd.DataFrame":
    """The budget's two checks, per (main set, method), as verdict-shaped rows: "above floor" (the paired
    gain over the random-init floor of the same seed: its 95 % interval above 0, the effect above
    MIN_EFFECT_POINTS) and "levelled off" (the last snapshot minus the one before: within the seed noise,
    |mean| <= the standard deviation of the final top-1 over seeds)."""
    import pandas as pd

    df = frame(rows)
    table = []
    for dataset in _judged(df, plan).main_sets:
        floor = _floor(df, dataset)
        for method in METHODS:
            final = _by_seed(df, dataset, method)
            if len(final) < 2:
                continue
            gain = (final - floor).dropna()
            effect, low, high = t_interval(gain)
            table.append({"claim": "floor", "data": dataset, "comparison": f"{method} - random-init",
                          "verdict": "above floor" if low > 0 and effect >= MIN_EFFECT_POINTS else "not above floor",
                          "effect": effect, "ci_low": low, "ci_high": high, "threshold": MIN_EFFECT_POINTS,
                          "seeds": len(gain), "level": ALPHA})
            last = int(df[(df["dataset"] == dataset) & (df["method"] == method) & (df["table"] == "study")]["snapshot"].max())
            if last < 1:
                continue
            step = (final - _by_seed(df, dataset, method, snapshot=last - 1)).dropna()
            effect, low, high = t_interval(step)
            noise = float(final.std(ddof=1))
            table.append({"claim": "levelled", "data": dataset, "comparison": f"{method}: last snapshot - the one before",
                          "verdict": "levelled off" if abs(effect) <= noise else "still moving", "effect": effect,
                          "ci_low": low, "ci_high": high, "threshold": noise, "seeds": len(step), "level": ALPHA})
    return pd.DataFrame(table, columns=VERDICT_COLUMNS)


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


_CLAIMS = {
    "1": "S2R2 beats SimCLR and SwAV",
    "2": "S2R2's margin is larger on cluttered scenes",
    "3": "S2R2 converges faster on a small data set",
    "4": "accuracy rises, then falls, with the images per batch",
    "control": "the control (multi-view NT-Xent at S2R2's B x K)",
}


def verdict_sentence(row) -> str:
    """The one sentence of a verdicts or checks row (:func:`verdicts`, :func:`checks`): every statement of
    notebook 06 about its results is made here."""
    row = dict(row)
    claim, data, comparison, verdict = row["claim"], row["data"], row["comparison"], row["verdict"]
    if verdict == "not measured":
        return f"Claim {claim} ({_CLAIMS.get(claim, claim)}) on {data}: not measured ({comparison})."
    if claim == "rerun":
        return (f"Rerun of {comparison} on {data}: {100 * row['ci_low']:.1f} % against the committed "
                f"{100 * row['ci_high']:.1f} % ({_pts(row['effect'])} points, tolerance "
                f"{100 * row['threshold']:.1f}): {verdict}.")
    interval = (f"{_pts(row['effect'])} points, {100 * (1 - row['level']):.1f} % interval "
                f"[{_pts(row['ci_low'])}, {_pts(row['ci_high'])}] over {row['seeds']} paired seeds")
    if claim == "floor":
        return f"{data}: {comparison} is {interval}: {verdict}."
    if claim == "levelled":
        return (f"{data}: {comparison} is {interval}, against a seed noise (SD) of {100 * row['threshold']:.1f} points: "
                f"{verdict}.")
    what = f"Claim {claim} ({_CLAIMS[claim]})" if claim != "control" else "The control"
    threshold = f"the threshold of {100 * row['threshold']:.1f} points (set by a rule declared before the runs)"
    rule = {"supported": f"the interval lies above 0 and the effect reaches {threshold}",
            "contradicted": f"the whole interval lies below {threshold}",
            "inconclusive": f"the interval reaches below 0 or the effect falls short of {threshold}, "
                            f"and the interval is not wholly below it"}[verdict]
    return f"{what}, {data}: {verdict}. {comparison}: {interval}; {rule}."


def _brief(row) -> str:
    name = f"claim {row['claim']}" if row["claim"] != "control" else "the control"
    return (f"{name} on {row['data']} ({row['comparison']}: {_pts(row['effect'])} points, "
            f"[{_pts(row['ci_low'])}, {_pts(row['ci_high'])}])")


def summary_lines(table: "pd.DataFrame") -> list[str]:
    """The verdicts gathered by kind, each comparison named with its effect and interval; then whether any
    of the paper's claims (1-4) is supported. Made from the table alone, so no summary is written by hand."""
    rows = [row for row in table.to_dict("records") if row["claim"] in _CLAIMS]
    lines = []
    for verdict in ("supported", "contradicted", "inconclusive"):
        chosen = [row for row in rows if row["verdict"] == verdict]
        if chosen:
            lines.append(f"{verdict.capitalize()}, {len(chosen)} of {len(rows)} comparisons: "
                         + "; ".join(_brief(row) for row in chosen) + ".")
    supported = sorted({row["claim"] for row in rows if row["verdict"] == "supported" and row["claim"] != "control"})

    def where(claim):  # the data a claim holds on, and the data it does not
        mine = [row for row in rows if row["claim"] == claim]
        held = [row["data"] for row in mine if row["verdict"] == "supported"]
        other = [f"{row['data']} ({row['verdict']})" for row in mine if row["verdict"] != "supported"]
        return f"claim {claim} (on {', '.join(held)}" + (f"; not on {', '.join(other)}" if other else "") + ")"

    lines.append("Of the paper's four claims, " + ("none is supported" if not supported else
                 "supported: " + "; ".join(where(claim) for claim in supported)) + " at this scale.")
    return lines


def readme_lines(table: "pd.DataFrame") -> list[str]:
    """The README's verdict section (:mod:`s2r2lib.readme` puts it between its markers): a table, one
    :func:`verdict_sentence` per row, and :func:`summary_lines`."""
    rows = [row for row in table.to_dict("records") if row["claim"] in _CLAIMS]
    lines = ["| claim | data | comparison | verdict | effect (points) | interval | threshold | seeds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['claim']} | {r['data']} | {r['comparison']} | {r['verdict']} | {_pts(r['effect'])} | "
              f"[{_pts(r['ci_low'])}, {_pts(r['ci_high'])}] | {100 * r['threshold']:.1f} | {r['seeds']} |" for r in rows]
    return lines + ["", *(f"- {verdict_sentence(row)}" for row in rows), "", "In short:",
                    *(f"- {line}" for line in summary_lines(table))]


def lr_search_lines(rows) -> list[str]:
    """The lr search (rows of table study-lr), a line per search set and method: the validation top-1 at each lr
    scored, the winner in bold, and whether it lies inside the lrs scored (:func:`lr_at_edge`); then whether
    every winner does."""
    import pandas as pd

    rows = pd.DataFrame(rows)
    search = rows[rows["table"] == "study-lr"] if not rows.empty else rows
    if search.empty:
        return []
    lines, at_edge = [], []
    for (dataset, method), group in frame(search).groupby(["dataset", "method"], sort=False):
        scores = dict(zip(group["lr"], group["value"]))
        best, edge = winning_lr(scores), lr_at_edge(scores)
        cells = ", ".join(f"**{_lr(lr)}: {100 * value:.1f} %**" if lr == best else f"{_lr(lr)}: {100 * value:.1f} %"
                          for lr, value in sorted(scores.items()))
        if edge:
            at_edge.append(f"{method} on {dataset}")
        where = "at an edge of the lrs scored, so not shown to be its best" if edge else "inside them"
        lines.append(f"- {dataset}, {method}: {cells}; the winner lies {where}.")
    if lines:
        lines += ["", "Every winner lies inside the learning rates scored." if not at_edge else
                  f"Winners at an edge: {'; '.join(at_edge)}."]
    return lines


def _lr(lr: float) -> str:
    """A learning rate as the code writes it: 3e-4, 2.7e-2."""
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def judged_provenance(rows) -> dict[str, str]:
    """How a table judged from study ``rows`` was made: ``rows_commits``, the commits of the rows it read
    (their devices, dates and times are in runs.csv), and the judging code's commit, device and date."""
    from .results import provenance

    prov = provenance("cpu")
    commits = sorted({str(row["commit"]) for row in rows if str(row.get("commit", "")).strip()})
    return {"rows_commits": " ".join(commits), "commit": prov["commit"], "device": prov["device"],
            "date": prov["date"]}


def write_verdicts(table: "pd.DataFrame", plan: StudyPlan, rows) -> Path:
    """results/study_verdicts.csv (a table of :data:`s2r2lib.results.TABLES`; the name is ``plan``'s
    :func:`output_name`, so a study at another scale writes its own): the verdicts judged from ``rows``, numbers
    as fractions with 4 decimals, with :func:`judged_provenance`, merged by (claim, data, comparison) under the
    file's lock."""
    return _write_judged("study_verdicts", table, plan, rows)


def _write_judged(name: str, table: "pd.DataFrame", plan: StudyPlan, rows) -> Path:
    """``table``, judged from ``rows``, into results/<name> under ``plan``'s :func:`output_name`: 4 decimals,
    with :func:`judged_provenance`."""
    from .results import write_table

    return write_table(output_name(plan, name), table.round(4).assign(**judged_provenance(rows)))


# --- The long profile: is the budget long enough? -------------------------------------------------------

LONG_TABLE = "study-long"
BUDGET_CLAIMS = ("1", "2", "control")  # the comparisons the long profile's main runs can decide


def long_rows(rows) -> list[dict]:
    """The long profile's rows (table study-long) read as table study, beside the committed floors (the same
    probe on the same random-init encoders, so seeds still pair): the rows :func:`checks` and
    :func:`comparisons` read at the long budget. Empty when ``rows`` hold no study-long row."""
    rows = [dict(r) for r in (rows.to_dict("records") if hasattr(rows, "to_dict") else rows)]
    long = [dict(r, table="study") for r in rows if r["table"] == LONG_TABLE]
    floors = [r for r in rows if r["table"] == "study" and r["method"] in (FLOOR, RAW)]
    return long + floors if long else []


def budget_factor(rows, plan: StudyPlan) -> int:
    """How many times the committed main runs' steps the long rows trained (0 when there are none)."""
    long = long_rows(rows)
    if not long:
        return 0

    def main_steps(df) -> int:  # S2R2's main run on the search set: its last probe's steps
        return df[(df["method"] == "S2R2") & (df["dataset"] == plan.search_set) & (df["images"] == plan.images)
                  & (df["table"] == "study")]["steps"].max()

    return round(main_steps(frame(long)) / main_steps(frame(rows)))


def budget_checks(rows, plan: StudyPlan) -> "pd.DataFrame":
    """Is the budget long enough? :func:`checks` at the committed budget (``budget`` 1) and, where the long
    profile ran, :func:`checks` and the verdicts of claims :data:`BUDGET_CLAIMS` at its budget
    (``budget`` = the factor), verdict-shaped rows with a ``budget`` column: results/study_budget.csv."""
    import pandas as pd

    tables = [checks(rows, plan).assign(budget=1)]
    factor, long = budget_factor(rows, plan), long_rows(rows)
    if factor:
        plan = long_plan(rows, plan)
        claims = verdicts(long, plan)
        tables += [checks(long, plan).assign(budget=factor),
                   claims[claims["claim"].isin(BUDGET_CLAIMS)].assign(budget=factor)]
    return pd.concat(tables, ignore_index=True)[["budget", *VERDICT_COLUMNS]]


def write_budget_checks(table: "pd.DataFrame", plan: StudyPlan, rows) -> Path:
    """results/study_budget.csv (a table of :data:`s2r2lib.results.TABLES`, named by ``plan``'s
    :func:`output_name`): the checks judged from ``rows``, with :func:`judged_provenance`, merged by (budget,
    claim, data, comparison) under the file's lock."""
    return _write_judged("study_budget", table, plan, rows)


# --- The default profile: a subset rerun against the committed rows ------------------------------------

def rows_to_judge(plan: StudyPlan, outcome: dict, committed: list[dict]) -> list[dict]:
    """The rows the verdicts read: this run's (``rerun="all"``), the committed ones (``"subset"``: the rerun is
    only compared with them), or both (``"extend"``, ``"long"``, ``"sets"``: this run's rows merged into the
    committed ones as results/runs.csv merges them, each taking the place of a committed row with its key)."""
    if plan.rerun == "all":
        return as_study_rows(outcome["search"] + outcome["rows"], plan)
    if plan.rerun == "subset":
        return committed
    from .results import RUN_DTYPES, RUN_KEY, merge_rows, typed

    merged = merge_rows(typed(committed, RUN_DTYPES), typed(outcome["search"] + outcome["rows"], RUN_DTYPES), RUN_KEY)
    return merged.astype("string").fillna("").to_dict("records")


def as_study_rows(rows: list[dict], plan: StudyPlan) -> list[dict]:
    """``plan``'s rows under the CPU study's table names (study, study-lr), the names every verdict, check and
    figure reads: a study at another scale (``plan.table``, say study-gpu) is judged by the same code, on its
    own rows only."""
    if plan.table == "study":
        return rows
    names = {plan.table: "study", f"{plan.table}-lr": "study-lr"}
    return [dict(r, table=names.get(r["table"], r["table"])) for r in rows]


def output_name(plan: StudyPlan, name: str) -> str:
    """The name under which ``plan`` publishes the table or figure ``name``: ``name`` itself for the CPU study,
    ``<name>_<scale>`` for a study at another scale (study-gpu: study_verdicts_gpu, 06_claim1_methods_gpu),
    so that no profile writes over another's results."""
    return name if plan.table == "study" else f"{name}_{plan.table.removeprefix('study-')}"


def committed_rows() -> list[dict]:
    """The study rows of results/runs.csv (``table`` study, study-lr or study-long), as dicts of strings."""
    from .results import read_runs

    runs = read_runs()
    runs = runs[runs["table"].isin(["study", "study-lr", LONG_TABLE])].astype("string").fillna("")
    return runs.to_dict("records")


def committed_plan(rows: list[dict], plan: StudyPlan) -> tuple[dict, dict]:
    """The budget (steps per method) and the winning lrs of the committed full rows: what a subset rerun must
    train to reproduce them."""
    df = frame(rows)
    main = df[(df["table"] == "study") & (df["dataset"] == plan.search_set) & df["final"] & (df["images"] != 0)]
    steps, best = {}, {}
    for method in METHODS:
        mine = main[(main["method"] == method) & ((main["images"] == plan.images) | (method == "SimCLR"))]
        if mine.empty:
            raise ValueError(f"results/runs.csv holds no committed study rows of {method} on {plan.search_set}; "
                             "run the full profile first (python -m s2r2lib.reproduce --profile full --only 06)")
        steps[method], best[method] = int(mine["steps"].iloc[0]), float(mine["lr"].iloc[0])
    return {"steps": steps}, best


def agreement(rerun: list[dict], committed: list[dict]) -> "pd.DataFrame":
    """Each rerun probe beside the committed one of the same (data set, method, images, lr, seed, steps), as
    verdict-shaped rows (claim "rerun"): the difference, and the tolerance it must stay within: twice the
    committed seeds' standard deviation of that cell, at least :data:`RERUN_TOLERANCE`."""
    import pandas as pd

    new, old = frame(rerun), frame(committed)
    old = old[old["table"] == "study"]  # the lr search's rows share a run's key but for its lr
    cell = ["dataset", "method", "images", "lr", "steps"]
    merged = new.merge(old, on=[*cell, "seed"], suffixes=("", "_committed"))  # NaN lr (a floor) matches NaN
    spread = old.groupby(cell, dropna=False)["value"].std(ddof=1).rename("seed_sd").reset_index()
    merged = merged.merge(spread, on=cell, how="left")
    table = []
    for _, r in merged.iterrows():
        difference = r["value"] - r["value_committed"]
        tolerance = max(2 * (0.0 if pd.isna(r["seed_sd"]) else r["seed_sd"]), RERUN_TOLERANCE)
        table.append({"claim": "rerun", "data": r["dataset"], "verdict": "agrees" if abs(difference) <= tolerance
                      else "disagrees", "effect": difference, "ci_low": r["value"], "ci_high": r["value_committed"],
                      "threshold": tolerance, "seeds": 1, "level": float("nan"),
                      "comparison": f"{r['method']} (B = {r['images']}), seed {r['seed']}, step {r['steps']}"})
    return pd.DataFrame(table, columns=VERDICT_COLUMNS)


class Collected(NamedTuple):
    """A study run and what its verdicts read (:func:`run_and_collect`), in the order a cell unpacks them."""

    outcome: dict     # run_study's: budget, best_lr, search and main rows, not_measured
    committed: list   # results/runs.csv's study rows, for the reruns that read or extend them ([] for "all")
    rows: list        # the rows the verdicts, checks and figures read (:func:`rows_to_judge`)
    plan: StudyPlan   # the plan judged: its main sets and every other set the rows hold (:func:`judged_plan`)


def run_and_collect(plan: StudyPlan, root: str | Path, data_root: str | None = None) -> Collected:
    """Run ``plan``'s study (:func:`run_study`), add its rows to runs.csv, and gather the rows and plan its
    verdicts read: notebook 06's study cell and :func:`run_and_publish` alike."""
    from .results import write_runs

    outcome = run_study(plan, root, data_root)
    committed = committed_rows() if plan.rerun != "all" else []
    rows = rows_to_judge(plan, outcome, committed)
    write_runs(outcome["search"] + outcome["rows"])
    return Collected(outcome, committed, rows, judged_plan(rows, plan))


def run_and_publish(plan: StudyPlan, root: str | Path, data_root: str | None = None) -> "pd.DataFrame":
    """Notebook 06's study of ``plan`` without the notebook (for a machine with no Jupyter, such as the GPU's):
    :func:`run_and_collect`, then its verdicts and budget checks written under :func:`output_name`. Figures
    are the notebook's. Returns the verdicts."""
    run = run_and_collect(plan, root, data_root)
    table = verdicts(run.rows, run.plan, run.outcome["not_measured"])
    write_verdicts(table, run.plan, run.rows)
    write_budget_checks(budget_checks(run.rows, run.plan), run.plan, run.rows)
    return table


def main(argv: list[str] | None = None) -> int:
    """``python -m s2r2lib.study run --plan gpu``: run a plan's study and write its rows and verdicts
    (:func:`run_and_publish`; results/ with S2R2_PUBLISH=1, else build/scratch/). The README's verdict section
    is written by ``python -m s2r2lib.readme``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m s2r2lib.study", description=main.__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--plan", choices=sorted(PLANS), help="run: the profile of s2r2lib.study.PLANS to run")
    parser.add_argument("--root", default=None, help="run: where runs and probes live (default build/study)")
    parser.add_argument("--data-root", default=None, help="run: a folder with Fashion-MNIST's files")
    args = parser.parse_args(argv)
    if args.plan is None:
        parser.error("run needs --plan, one of " + ", ".join(sorted(PLANS)))
    if PLANS[args.plan].device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"plan {args.plan} trains on CUDA, which is not available here; on the CPU, run plan full "
                     "(or make reproduce PROFILE=full)")
    start = time.perf_counter()
    table = run_and_publish(PLANS[args.plan], args.root or default_root(), args.data_root)
    for _, row in table.iterrows():
        print(verdict_sentence(row))
    print(f"plan {args.plan}: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
