"""Benchmark: one training step of each method beside the encoder-only step on the same views, in one run.

    python -m s2r2lib.bench train [--archs resnet18 resnet50] [--methods s2r2 simclr swav] [--scale 1]
                                  [--device cpu|cuda] [--repeats 3]

The method step is exactly what ``s2r2lib.train`` runs: views made on the images' device by the batched
backend, forward, loss, backward and the optimiser step, through the engine's own ``Learner``,
``_optimizer``, ``_ranking_step`` and ``_swav_step``, at the sizes of the paper's presets
(``PRESETS["paper-<arch>-stl10-<method>"]``; an arch or method without one takes resnet18's, and the
``preset`` column names the one used). Images are random uint8 (B, 3, 96, 96), already on the device.
The encoder-only step is the same Learner's forward + backward on the same views made beforehand (the
same count and sizes), with a trivial loss (mean of z squared), and the same optimiser step. So

    time_vs_encoder = step_s / encoder_step_s,   overhead_share = 1 - encoder_step_s / step_s

is what the views and the loss add; the goal is overhead_share under 10% (``meets_goal``).

``--scale`` divides the images per batch (at least 2 remain): the paper's sizes take seconds to minutes
a step on a CPU, so the CPU defaults are scale 8 and resnet18 only; CUDA's are scale 1, both archs,
bf16 autocast and channels_last as the presets say (the CPU runs fp32, on ``--threads`` 1). Each
measurement (the method step, or the encoder-only step, of one arch and method) runs in a fresh
subprocess so that its peak memory is its own: on the CPU the growth of peak resident memory
(``ru_maxrss``) above the set-up (model, optimiser, images; the encoder-only step's views too), on CUDA
``torch.cuda.max_memory_allocated`` above it. Time is the median of ``--repeats`` steps after one
warm-up; ``load_avg`` (the 1-minute load average as the row began) tells a CPU timing disturbed by other
work: on a shared machine rerun the rows where it passes the core count.

Rows go to ``results/bench_train.csv``, merged by (device, arch, method, scale): a CPU run keeps GPU rows.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time

import torch

from .. import train
from ..distributed import resolve_device
from ..models import ARCHS
from ..views import make_multicrop_views, make_views
from . import (OUT_HELP, checked_device, out_path, positive_int, provenance_at, run_worker, serve_worker,
               suite_parser, write_rows)

GOAL = 0.10  # the views and the loss together: under this share of the step
COLUMNS = ["arch", "method", "preset", "scale", "images", "views", "view_sizes", "precision", "channels_last",
           "device", "threads", "step_s", "views_per_s", "peak_mib", "encoder_step_s", "encoder_views_per_s",
           "encoder_peak_mib", "time_vs_encoder", "overhead_share", "meets_goal", "memory_measure", "repeats",
           "load_avg", "status", "commit", "torch", "date"]


def preset_name(arch: str, method: str) -> str:
    """The paper preset whose sizes (arch, method) is measured at: STL10's, resnet18's where the paper has none."""
    name = f"paper-{arch}-stl10-{method}"
    return name if name in train.PRESETS else f"paper-resnet18-stl10-{method}"


def bench_config(arch: str, method: str, scale: int, device: str, precision: str) -> train.TrainConfig:
    """The preset's config on ``device`` at ``precision``, its images per batch divided by ``scale``."""
    preset = train.PRESETS[preset_name(arch, method)]
    images = max(2, preset["images_per_batch"] // scale)  # every view needs other images' views as negatives
    return train.TrainConfig.from_dict({**preset, "arch": arch, "device": device, "precision": precision,
                                        "images_per_batch": images}).resolved()


def view_shapes(config: train.TrainConfig) -> list[tuple[int, int]]:
    """(count, size) of each view batch a step makes: one for s2r2/simclr, one per crop size for swav."""
    if config.method == "swav":
        return [(config.images_per_batch * count, size) for count, size, _ in config.crops]
    return [(config.views_in_batch, config.view_size)]


def premade_views(config: train.TrainConfig, images: torch.Tensor) -> list[torch.Tensor]:
    """The view batches a step of ``config`` makes from ``images``, made once: the encoder-only step's input."""
    generator = torch.Generator(images.device).manual_seed(0)
    if config.method == "swav":
        crops = [(count, size, tuple(scale)) for count, size, scale in config.crops]
        return [views for views, _ in make_multicrop_views(images, crops, generator=generator)]
    return [make_views(images, config.views_per_image, config.view_size, generator=generator)[0]]


def _measure(arch: str, method: str, scale: int, device: str, precision: str, threads: int, repeats: int,
             encoder_only: bool) -> dict:
    """Run in a worker process: time and peak memory of one training step (or the encoder-only step)."""
    torch.set_num_threads(threads)
    device = resolve_device(device)  # "cuda" -> cuda:0, as the tensors on it report
    config = bench_config(arch, method, scale, str(device), precision)
    with train.backend_settings(config, device):  # cuDNN autotuning on CUDA, as in training
        return _measure_step(config, device, repeats, encoder_only)


def _measure_step(config: train.TrainConfig, device: torch.device, repeats: int, encoder_only: bool) -> dict:
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    learner = train.Learner(config).to(device)
    if config.channels_last:
        learner = learner.to(memory_format=torch.channels_last)
    optimizer = train._optimizer(config, learner.parameters())
    learner.train()
    images = torch.randint(0, 256, (config.images_per_batch, 3, config.image_size, config.image_size),
                           dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).to(device)
    views = premade_views(config, images)

    def method_loss(step: int) -> torch.Tensor:
        generator = torch.Generator(device).manual_seed(step)
        if config.method == "swav":
            return train._swav_step(learner, learner.prototypes, images, generator, config, None)[0]
        return train._ranking_step(learner, images, generator, config)[0]

    def encoder_loss(step: int) -> torch.Tensor:
        return sum(z.square().mean() for z in learner(views))

    loss_fn = encoder_loss if encoder_only else method_loss

    def step(index: int) -> float:
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = loss_fn(index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = [step(index) for index in range(1 + repeats)][1:]
    peak = (torch.cuda.max_memory_allocated(device) - base if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
    return {"step_s": statistics.median(times), "peak_mib": peak / 2**20, "repeats": repeats,
            "memory_measure": "cuda_max_allocated" if cuda else "peak_rss_growth"}


def measure_row(arch: str, method: str, scale: int, device: str, precision: str, threads: int, repeats: int,
                timeout: int) -> dict:
    """One CSV row: the method step and the encoder-only step of (arch, method), each in its own worker."""
    config = bench_config(arch, method, scale, device, precision)
    load = os.getloadavg()[0]  # the machine's other work: a CPU timing under load is suspect
    job = dict(arch=arch, method=method, scale=scale, device=device, precision=precision, threads=threads,
               repeats=repeats)
    hint = " (raise --timeout or --scale)"
    encoder = run_worker("s2r2lib.bench.train", {**job, "encoder_only": True}, timeout, hint)
    step = run_worker("s2r2lib.bench.train", {**job, "encoder_only": False}, timeout, hint)
    row = {"arch": arch, "method": method, "preset": preset_name(arch, method), "scale": scale,
           "images": config.images_per_batch, "views": config.views_in_batch,
           "view_sizes": " + ".join(f"{count}@{size}px" for count, size in view_shapes(config)),
           "precision": precision, "channels_last": config.channels_last,
           "threads": threads if device == "cpu" else "", "memory_measure": step.get("memory_measure", ""),
           "repeats": repeats, "load_avg": f"{load:.2f}"}
    bad = [part["status"] for part in (step, encoder) if part["status"] != "measured"]
    if bad:
        return {**row, "status": bad[0]}
    overhead = round(1 - encoder["step_s"] / step["step_s"], 3)  # as written, so that meets_goal agrees with it
    return {**row, "status": "measured",
            "step_s": f"{step['step_s']:.4g}", "views_per_s": f"{config.views_in_batch / step['step_s']:.4g}",
            "peak_mib": f"{step['peak_mib']:.4g}", "encoder_step_s": f"{encoder['step_s']:.4g}",
            "encoder_views_per_s": f"{config.views_in_batch / encoder['step_s']:.4g}",
            "encoder_peak_mib": f"{encoder['peak_mib']:.4g}",
            "time_vs_encoder": f"{step['step_s'] / encoder['step_s']:.3f}", "overhead_share": f"{overhead:.3f}",
            "meets_goal": "yes" if overhead < GOAL else "no"}


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser("train", __doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--archs", nargs="+", choices=ARCHS,
                        help="encoders (default: resnet18 resnet50 on CUDA, resnet18 on the CPU)")
    parser.add_argument("--methods", nargs="+", choices=train.METHODS, default=list(train.METHODS))
    parser.add_argument("--scale", type=positive_int, help="divide the paper's images per batch by this "
                                                  "(default: 1 on CUDA, 8 on the CPU)")
    parser.add_argument("--precision", choices=("fp32", "bf16"),
                        help="default: bf16 (autocast) on CUDA as the presets say, fp32 on the CPU")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads (default 1: on a shared machine two threads waiting on each other "
                             "made steps 3-5x slower, and the views' many small ops most of all)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed steps after one warm-up (the median counts)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per measurement")
    parser.add_argument("--out", default=None, help=OUT_HELP.format(table="bench_train"))
    args = parser.parse_args(argv)
    if serve_worker(args, _measure):
        return 0

    path = out_path(args.out, "bench_train")
    cuda = torch.device(checked_device(args.device)).type == "cuda"
    archs = args.archs or (["resnet18", "resnet50"] if cuda else ["resnet18"])
    scale = args.scale or (1 if cuda else 8)
    precision = args.precision or ("bf16" if cuda else "fp32")
    prov = provenance_at(args.device, args.threads)
    print(f"{prov['device']}, scale {scale}, {precision}; goal: views + loss under {GOAL:.0%} of the step")
    print(f"{'arch':9s} {'method':7s} {'views':>5s} {'step s':>8s} {'views/s':>8s} {'MiB':>7s} "
          f"{'enc s':>8s} {'enc MiB':>7s} {'x enc':>6s} {'overhead':>8s} {'load':>5s}")
    rows = []
    for arch in archs:
        for method in args.methods:
            row = {**measure_row(arch, method, scale, args.device, precision, args.threads, args.repeats,
                                 args.timeout), **prov}
            rows.append(row)
            if row["status"] == "measured":
                print(f"{arch:9s} {method:7s} {row['views']:5d} {row['step_s']:>8s} {row['views_per_s']:>8s} "
                      f"{row['peak_mib']:>7s} {row['encoder_step_s']:>8s} {row['encoder_peak_mib']:>7s} "
                      f"{row['time_vs_encoder']:>6s} {float(row['overhead_share']):>8.1%} {row['load_avg']:>5s}  "
                      f"{'meets' if row['meets_goal'] == 'yes' else 'misses'} the goal", flush=True)
            else:
                print(f"{arch:9s} {method:7s} {row['views']:5d} {row['status']}", flush=True)
    write_rows(path, "bench_train", [{c: row.get(c, "") for c in COLUMNS} for row in rows])
    print(f"wrote {path}")
    return 0 if all(row["status"] == "measured" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
