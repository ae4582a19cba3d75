"""View backends against the encoder's appetite: views/s made beside images/s consumed, in one run.

    python -m s2r2lib.bench views [--size 32 96] [--device cpu] [--images 64] [--views 20] [--arch ARCH]

For each view size: the cpu backend in-process (one worker, one thread, as a DataLoader worker runs),
the cpu backend in a DataLoader with os.cpu_count() workers, the batched backend on --device, the same
recipe as a kornia.augmentation pipeline on --device (the library the hand-written batched backend was
chosen over: this row is the evidence, and the summary prints batched/kornia), the batched backend's
renderer through torch.compile (inductor; compile time not counted), the batched backend's stages timed
one by one (ms per batch: where its time goes), and the encoder's
training step (forward + backward, channels_last; bf16 autocast on CUDA) on views of that size:
narrow_cnn at 64 px and below (small-input stem), resnet18 above, unless --arch. ratio = the backend's
views/s / the encoder's images/s: above 1 the backend keeps the encoder fed. The goal on a
GPU: the batched backend at least 5x a ResNet18. Source images are random uint8 at the view size
(STL10 is 96 px, CIFAR 32 px). Rows go to results/bench_views.csv (or --out), every row with its
provenance, merged by (device, size, backend, workers): a CPU run keeps GPU rows.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.data import DataLoader

from .. import results
from ..models import ARCHS, build_model
from ..views import SIMCLR, ViewCollate, ViewRecipe, draw_view_parameters, make_views, render_stages
from . import OUT_HELP, checked_device, out_path, positive_int, write_rows

GOAL = 5.0  # batched views/s over ResNet18 images/s, on a GPU
NO_KORNIA = "not measured: kornia not installed"


def _seconds(fn, device: torch.device, repeats: int) -> float:
    """Fastest wall time of ``fn()`` over ``repeats`` calls after one warm-up, synchronising CUDA.

    The fastest, not the median: on a shared machine the other calls measure the neighbours' load.
    """
    def timed():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    timed()
    return min(timed() for _ in range(repeats))


def cpu_views_per_second(images: torch.Tensor, views_per_image: int, size: int, repeats: int) -> float:
    """The cpu backend in this process on one thread (a DataLoader worker's setting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds = _seconds(lambda: make_views(images, views_per_image, size, "cpu"), torch.device("cpu"), repeats)
    finally:
        torch.set_num_threads(threads)
    return images.shape[0] * views_per_image / seconds


def loader_views_per_second(images: torch.Tensor, views_per_image: int, size: int, workers: int) -> float:
    """The cpu backend in a DataLoader with ``workers`` processes: views/s from the first batch to the last."""
    batches = 1 + 3 * workers
    dataset = list(images.repeat(batches, 1, 1, 1))
    loader = DataLoader(dataset, batch_size=len(images), num_workers=workers,
                        collate_fn=ViewCollate(views_per_image, size))
    iterator = iter(loader)
    next(iterator)  # worker start-up is not part of the rate
    start = time.perf_counter()
    count = sum(len(views) for views, _ in iterator)
    return count / (time.perf_counter() - start)


def batched_views_per_second(images: torch.Tensor, views_per_image: int, size: int, repeats: int,
                             compile_backend: str | None = None) -> float:
    """The batched backend on the images' device; ``compile_backend``: its renderer through torch.compile
    (the warm-up call compiles, and is not timed)."""
    seconds = _seconds(lambda: make_views(images, views_per_image, size, "batched", compile_backend=compile_backend),
                       images.device, repeats)
    return images.shape[0] * views_per_image / seconds


def stage_milliseconds(images: torch.Tensor, views_per_image: int, size: int, repeats: int,
                       recipe: ViewRecipe = SIMCLR) -> dict[str, float]:
    """The batched backend's stages one by one on the images' device, each timed alone (fastest of ``repeats``
    after a warm-up): {"draw": ms, "crop": ms, "jitter": ms, ...}, where the time of a batch goes."""
    batch, _, height, width = images.shape
    device = images.device
    draw = lambda: draw_view_parameters(batch * views_per_image, height, width, recipe, None, device)  # noqa: E731
    times = {"draw": 1000 * _seconds(draw, device, repeats)}
    draws = draw()
    x = images
    for name, stage in render_stages(draws, size, recipe.blur_kernel_size(size)).items():
        inputs = x.clone()  # stages work in place: each timed call gets a fresh copy of its input
        times[name] = 1000 * _seconds(lambda: stage(inputs.clone()), device, repeats)
        x = stage(inputs)
    return times


def kornia_pipeline(size: int, recipe: ViewRecipe = SIMCLR) -> torch.nn.Module:
    """The batched backend's recipe in kornia.augmentation: float (N, 3, H, W) in [0, 1] -> (N, 3, size, size).

    A comparison, not a library feature; kornia's defaults otherwise (its ColorJitter draws one random
    order of the four steps per call, the batched backend one per view).
    """
    import kornia.augmentation as K

    steps = [K.RandomResizedCrop((size, size), scale=recipe.crop_scale, ratio=recipe.crop_ratio),
             K.RandomHorizontalFlip(p=recipe.flip_p),
             K.ColorJitter(recipe.brightness, recipe.contrast, recipe.saturation, recipe.hue, p=recipe.jitter_p),
             K.RandomGrayscale(p=recipe.grayscale_p)]
    if recipe.blur_kernel_size(size) > 1:  # as the batched backend: no blur below 20 px
        steps.append(K.RandomGaussianBlur(recipe.blur_kernel_size(size), recipe.blur_sigma, p=recipe.blur_p))
    return torch.nn.Sequential(*steps)


def kornia_views_per_second(images: torch.Tensor, views_per_image: int, size: int, repeats: int) -> float:
    """``kornia_pipeline`` on the images' device, over the batch repeated K times (uint8 -> float [0, 1] first)."""
    pipeline = kornia_pipeline(size)
    views = lambda: pipeline(images.repeat_interleave(views_per_image, dim=0).float().div_(255))  # noqa: E731
    seconds = _seconds(views, images.device, repeats)
    return images.shape[0] * views_per_image / seconds


def encoder_images_per_second(arch: str, size: int, batch: int, device: torch.device, repeats: int) -> float:
    """Forward + backward of ``arch`` (with its projection head) on (batch, 3, size, size) views."""
    model = build_model(arch, small_input=size <= 64).to(device, memory_format=torch.channels_last)
    views = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            z = model(views)
        z.float().pow(2).mean().backward()

    return batch / _seconds(step, device, repeats)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2r2lib.bench views", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=positive_int, nargs="+", default=[32, 96], help="view sizes in pixels")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the batched backend and the encoder run")
    parser.add_argument("--images", type=positive_int, default=64, help="B, images per batch (paper: 64)")
    parser.add_argument("--views", type=positive_int, default=20, help="K, views per image (paper: 20)")
    parser.add_argument("--arch", choices=ARCHS, help="encoder (default: narrow_cnn <= 64 px, resnet18 above)")
    parser.add_argument("--encoder-batch", type=positive_int,
                        help="views per encoder step (default: B*K on CUDA, 64 on CPU to keep the run short)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed calls per measurement (the fastest counts)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend of the batched-compiled row ('none' skips the row)")
    parser.add_argument("--stages", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the batched backend's stages one by one (rows stage:<name>, ms per batch)")
    parser.add_argument("--out", default=None, help=OUT_HELP.format(table="bench_views"))
    args = parser.parse_args(argv)
    path = out_path(args.out, "bench_views")
    device = torch.device(checked_device(args.device))
    workers = os.cpu_count() or 1
    encoder_batch = args.encoder_batch or (args.images * args.views if device.type == "cuda" else 64)

    rows = []
    for size in args.size:
        arch = args.arch or ("narrow_cnn" if size <= 64 else "resnet18")
        images = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(size))
        measurements = [
            ("encoder", arch, "", device, "images/s",
             lambda: encoder_images_per_second(arch, size, encoder_batch, device, args.repeats)),
            ("cpu", "", 1, torch.device("cpu"), "views/s",
             lambda: cpu_views_per_second(images, args.views, size, args.repeats)),
            ("cpu", "", workers, torch.device("cpu"), "views/s",
             lambda: loader_views_per_second(images, args.views, size, workers)),
            ("batched", "", "", device, "views/s",
             lambda: batched_views_per_second(images.to(device), args.views, size, args.repeats)),
            ("kornia", "", "", device, "views/s",
             lambda: kornia_views_per_second(images.to(device), args.views, size, args.repeats)),
        ]
        if args.compile_backend != "none":
            measurements.append(("batched-compiled", "", "", device, "views/s",
                                 lambda: batched_views_per_second(images.to(device), args.views, size, args.repeats,
                                                                  args.compile_backend)))
        if args.stages:
            try:
                stages = stage_milliseconds(images.to(device), args.views, size, args.repeats)
                measurements += [(f"stage:{name}", "", "", device, "ms/batch", lambda ms=ms: ms)
                                 for name, ms in stages.items()]
            except Exception as error:  # recorded as a failed row by the loop below, like any other
                measurements.append(("stage:all", "", "", device, "ms/batch", lambda error=error: _raise(error)))
        encoder_rate = None
        for backend, row_arch, row_workers, row_device, unit, measure in measurements:
            print(f"{size} px: measuring {backend}", flush=True)  # a compile or a worker pool takes minutes
            try:
                rate, status = measure(), "ok"
            except Exception as error:  # a failed measurement is a row, not a lost run
                rate, status = None, f"failed: {type(error).__name__}: {error}"
                if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] == "kornia":
                    status = NO_KORNIA  # kornia is optional: the comparison row says so
            if backend == "encoder":
                encoder_rate = rate
            ratio = rate / encoder_rate if unit == "views/s" and rate and encoder_rate else None
            rows.append({"size": size, "images": args.images, "views_per_image": args.views,
                         "backend": backend, "workers": row_workers, "arch": row_arch or arch,
                         "encoder_batch": encoder_batch if backend == "encoder" else "",
                         "rate": "" if rate is None else round(rate, 3 if unit == "ms/batch" else 1), "unit": unit,
                         "ratio_to_encoder": "" if ratio is None else round(ratio, 2), "status": status,
                         **results.provenance(row_device)})

    _print_table(rows, device)
    write_rows(path, "bench_views", rows)  # merged by key: a GPU run keeps the CPU rows
    print(f"wrote {path}")
    return 0 if all(row["status"] in ("ok", NO_KORNIA) for row in rows) else 1


def _raise(error: Exception):
    raise error


def _print_table(rows: list[dict], device: torch.device) -> None:
    print(f"{'size':>4}  {'measurement':<34} {'rate':>10}  {'unit':<9} {'ratio':>6}  status")
    for row in rows:
        if row["backend"] == "encoder":
            what = f"encoder {row['arch']} fwd+bwd, batch {row['encoder_batch']}"
        elif row["backend"] == "cpu":
            what = f"cpu backend, {row['workers']} worker{'s' if row['workers'] != 1 else ''}"
            what += " (in-process)" if row["workers"] == 1 else " (DataLoader)"
        elif row["backend"] == "kornia":
            what = f"kornia.augmentation on {device.type}"
        elif row["backend"].startswith("stage:"):
            what = f"  batched stage {row['backend'][6:]} alone"
        elif row["backend"] == "batched-compiled":
            what = f"batched, torch.compile, {device.type}"
        else:
            what = f"batched backend on {device.type}"
        print(f"{row['size']:>4}  {what:<34} {row['rate']:>10}  {row['unit']:<9} "
              f"{row['ratio_to_encoder']:>6}  {row['status']}")
    rates = {(row["size"], row["backend"]): row["rate"] for row in rows}
    for size in dict.fromkeys(row["size"] for row in rows):
        batched, kornia = rates.get((size, "batched"), ""), rates.get((size, "kornia"), "")
        if batched != "" and kornia != "":
            print(f"{size} px: batched backend at {batched / kornia:.1f}x kornia.augmentation's views/s")
    for row in rows:
        if row["backend"].startswith("batched") and row["arch"] == "resnet18" and row["ratio_to_encoder"] != "":
            verdict = "meets" if row["ratio_to_encoder"] >= GOAL else "misses"
            scope = "" if device.type == "cuda" else " (the goal is for a GPU)"
            print(f"{row['size']} px: {row['backend']} backend at {row['ratio_to_encoder']}x ResNet18 {verdict} "
                  f"the {GOAL:g}x goal{scope}")
