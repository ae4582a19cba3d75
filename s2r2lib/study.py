"""Train-then-probe experiments: one run, a sweep over the batch's images and views (Figure 1), and
the matched-budget comparison of methods (notebook 06). Every run lands in results/runs.csv with its
provenance; runs already on disk are resumed or reused, never silently retrained."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from . import probe
from .data import ImageSet
from .train import TrainConfig, train


def train_and_probe(config: TrainConfig, train_set: ImageSet, test_set: ImageSet, table: str, dataset: str,
                    probe_name: str = "embedded") -> list[dict]:
    """Train ``config`` (resuming or reusing its run folder), probe it on the labelled sets, and return
    its runs.csv rows (every metric of :data:`s2r2lib.probe.METRICS`)."""
    summary = train(config, resume="auto")
    start = time.perf_counter()
    metrics = probe.evaluate(summary["checkpoint"], train_set.images, train_set.labels, test_set.images,
                             test_set.labels, config.view_size, arch=config.arch, small_input=config.small_input,
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


def as_points(rows: list[dict], metric: str = "linear_top1") -> list[dict]:
    """runs.csv rows of one metric as plottable points: images, views, value (float)."""
    return [{"images": int(row["images"]), "views": int(row["views"]), "value": float(row["value"]), "seed": row["seed"]}
            for row in rows if row["metric"] == metric and row["method"] != "random-init"]
