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


def as_points(rows: list[dict], metric: str = "linear_top1") -> list[dict]:
    """runs.csv rows of one metric as plottable points: images, views, value (float)."""
    return [{"images": int(row["images"]), "views": int(row["views"]), "value": float(row["value"]), "seed": row["seed"]}
            for row in rows if row["metric"] == metric and row["method"] != "random-init"]


# --- Notebook 06: the paper's four claims in miniature -------------------------------------------------

FASHION_MISSING = ("not measured: Fashion-MNIST files not found (apt-get install dataset-fashion-mnist, "
                   "or data_root=...)")
# Training sets of the study: name -> (loader, split, image size, loader options, probe family). The
# probe family names the labelled object-centric splits every encoder trained on that set is read on.
STUDY_SETS = {
    "embedded-object": ("embedded", "unlabeled", 40, {"mode": "object"}, "embedded"),
    "embedded-cluttered": ("embedded", "unlabeled", 40, {"mode": "cluttered"}, "embedded"),
    "fashion-mnist": ("fashion_mnist", "train", 32, {}, "fashion"),
    "fashion-mnist-clutter": ("fashion_mnist_clutter", "train", 64, {}, "fashion"),
}
CLUTTER_PAIRS = (("embedded-object", "embedded-cluttered"), ("fashion-mnist", "fashion-mnist-clutter"))
SWAV_SMALL_CROPS = 6  # SwAV per image: 2 large crops (view_size) + 6 small ones (view_size / 2)


def method_configs(base: TrainConfig, views_per_step: int, paper_lr: float = 1e-4,
                   tuned_lr: float = 1e-3) -> dict[str, TrainConfig]:
    """The four methods of the study at a matched budget: ``views_per_step`` encoder forward passes per
    step for each (every crop counts as one pass, whatever its size), label -> config.

    S2R2 B = V/8, K = 8, at the paper's lr and at a lr tuned for short runs; SimCLR B = V/2, K = 2;
    SwAV B = V/8 with 2 large + 6 small crops. SimCLR and SwAV keep the paper's optimiser settings."""
    if views_per_step % 8:
        raise ValueError(f"views_per_step must be a multiple of 8 (S2R2 K = 8, SwAV 8 crops); got {views_per_step}")
    per8 = views_per_step // 8
    crops = [[2, base.view_size, [0.14, 1.0]], [SWAV_SMALL_CROPS, base.view_size // 2, [0.05, 0.14]]]
    configs = {
        f"S2R2 (lr {paper_lr:g}, paper)": dataclasses.replace(base, method="s2r2", images_per_batch=per8,
                                                              views_per_image=8, lr=paper_lr),
        f"S2R2 (lr {tuned_lr:g}, tuned)": dataclasses.replace(base, method="s2r2", images_per_batch=per8,
                                                              views_per_image=8, lr=tuned_lr),
        "SimCLR": dataclasses.replace(base, method="simclr", images_per_batch=views_per_step // 2, views_per_image=2),
        "SwAV": dataclasses.replace(base, method="swav", images_per_batch=per8, crops=crops),
    }
    for label, config in configs.items():
        if config.views_in_batch != views_per_step:
            raise AssertionError(f"{label}: {config.views_in_batch} views per step, not {views_per_step}")
    return configs


def probe_sets(family: str, n_train: int, n_test: int, data_root: str | None = None) -> tuple[ImageSet, ImageSet]:
    """The labelled object-centric (train, test) splits of a probe family: the embedded object splits
    (40 px), or the first images of Fashion-MNIST train and test (32 px). FileNotFoundError when
    Fashion-MNIST's files are missing."""
    from . import data as datasets

    if family == "embedded":
        return tuple(datasets.load("embedded", split=split, size=40, n=n, mode="object")
                     for split, n in (("train", n_train), ("test", n_test)))
    sets = [datasets.load("fashion_mnist", root=data_root, split=split, size=32) for split in ("train", "test")]
    return tuple(ImageSet(s.images[:n], s.labels[:n], s.classes, f"{s.name}-{n}") for s, n in zip(sets, (n_train, n_test)))


def study_config(config: TrainConfig, dataset: str, data_n: int | None, data_root: str | None) -> TrainConfig:
    """``config`` set to train on the study set ``dataset`` (see :data:`STUDY_SETS`), on ``data_n`` images
    (None: all of them; Fashion-MNIST itself always uses all 60,000)."""
    loader, split, size, options, _ = STUDY_SETS[dataset]
    options = dict(options)
    if data_n is not None and loader != "fashion_mnist":
        options["n"] = data_n
    return dataclasses.replace(config, data=loader, split=split, image_size=size, data_options=options,
                               data_root=data_root if loader.startswith("fashion") else None)


def _relabel(rows: list[dict], **values) -> list[dict]:
    return [{**row, **values} for row in rows]


def compare_methods(configs: dict[str, TrainConfig], datasets_: list[str], seeds: list[int], root: str | Path,
                    n_train: int, n_test: int, data_n: int | None = None, data_root: str | None = None,
                    table: str = "miniature") -> tuple[list[dict], dict[str, str]]:
    """Claims 1-2: every method of ``configs`` on every study set, once per seed, for the same steps;
    each probed on its family's labelled splits, with the random-init floor (one per seed) beside.
    Returns (runs.csv rows, method = the configs' labels; {data set: why it was not measured})."""
    rows, not_measured = [], {}
    for dataset in datasets_:
        family = STUDY_SETS[dataset][4]
        try:
            train_set, test_set = probe_sets(family, n_train, n_test, data_root)
        except FileNotFoundError:
            not_measured[dataset] = FASHION_MISSING
            continue
        for label, config in configs.items():
            for seed in seeds:
                run = dataclasses.replace(study_config(config, dataset, data_n, data_root), seed=seed,
                                          output=str(Path(root) / dataset / _slug(label) / f"seed{seed}"))
                rows += _relabel(train_and_probe(run, train_set, test_set, table, dataset, family), method=label)
        base = next(iter(configs.values()))
        for seed in seeds:
            rows += floor_rows(dataclasses.replace(base, seed=seed), train_set, test_set, table, dataset, family)
    return rows, not_measured


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in label).strip("_")


def convergence_study(configs: dict[str, TrainConfig], dataset: str, data_n: int, steps: list[int], seeds: list[int],
                      root: str | Path, n_train: int, n_test: int, data_root: str | None = None,
                      table: str = "miniature") -> list[dict]:
    """Claim 3: each method trained on a small set (``data_n`` images of ``dataset``) for max(steps), and
    probed at every step count in ``steps`` (snapshots of the same run). Rows carry the data set as
    ``<dataset>-n<data_n>``; their epochs give the step back (:func:`curve_points`)."""
    family = STUDY_SETS[dataset][4]
    train_set, test_set = probe_sets(family, n_train, n_test, data_root)
    name, rows = f"{dataset}-n{data_n}", []
    for label, config in configs.items():
        for seed in seeds:
            run = dataclasses.replace(study_config(config, dataset, data_n, data_root), seed=seed, max_steps=max(steps),
                                      keep_steps=sorted(steps), output=str(Path(root) / name / _slug(label) / f"seed{seed}"))
            summary = train(run, resume="auto")
            for step in sorted(steps):
                start = time.perf_counter()
                checkpoint = Path(summary["checkpoint"]).with_name(f"checkpoint-{step}.pt")
                metrics = probe.evaluate(checkpoint, train_set.images, train_set.labels, test_set.images,
                                         test_set.labels, run.view_size,
                                         device=run.device, split_name=f"{family}-{n_train}-{n_test}")
                rows += _relabel(probe.result_rows(metrics, table, name, checkpoint, device=run.device,
                                                   probe_s=time.perf_counter() - start), method=label)
    return rows


# --- Summaries and verdicts: every sentence computed from the rows --------------------------------------

def summarize(rows: list[dict], metric: str = "linear_top1") -> list[dict]:
    """Mean, standard deviation (over seeds, n - 1) and standard error of ``metric`` per (dataset, method,
    images, epochs) of runs.csv rows; values as fractions in [0, 1]."""
    import numpy as np

    groups: dict[tuple, list[float]] = {}
    for row in rows:
        if row["metric"] == metric:
            key = (row["dataset"], row["method"], str(row["images"]), str(row["epochs"]))
            groups.setdefault(key, []).append(float(row["value"]))
    out = []
    for (dataset, method, images, epochs), values in groups.items():
        std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        out.append({"dataset": dataset, "method": method, "images": images, "epochs": epochs, "n": len(values),
                    "mean": float(np.mean(values)), "std": std, "se": std / len(values) ** 0.5})
    return out


def _cell(summary: list[dict], dataset: str, method: str) -> dict | None:
    """The (final, i.e. most epochs) summary cell of one method on one data set."""
    cells = [c for c in summary if c["dataset"] == dataset and c["method"] == method]
    return max(cells, key=lambda c: float(c["epochs"] or 0)) if cells else None


def difference(a: dict, b: dict, min_effect: float = 0.01) -> tuple[float, float, str]:
    """a's mean minus b's, the threshold it must pass (twice the standard error of the difference; with
    a single seed on either side, where the noise is unknown, ``min_effect``), and "ahead", "behind" or
    "tied" (within the threshold)."""
    import math

    se = math.sqrt(a["se"] ** 2 + b["se"] ** 2)
    threshold = 2 * se if math.isfinite(se) and se > 0 else min_effect
    diff = a["mean"] - b["mean"]
    return diff, threshold, "ahead" if diff > threshold else "behind" if diff < -threshold else "tied"


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _pct(cell: dict) -> str:
    spread = f" ± {100 * cell['std']:.1f}" if cell["n"] > 1 else ""
    return f"{100 * cell['mean']:.1f}{spread}"


def _overall(calls: list[str]) -> str:
    if calls and all(c == "ahead" for c in calls):
        return "supported"
    return "partly supported" if "ahead" in calls else "not supported"


def _best_other(summary, dataset, s2r2, others):
    cells = [c for c in (_cell(summary, dataset, m) for m in others) if c is not None]
    return max(cells, key=lambda c: c["mean"]) if cells else None


def verdict_beats(summary: list[dict], s2r2: str, others: list[str], datasets_: list[str],
                  not_measured: dict[str, str] | None = None) -> str:
    """Claim 1 for the S2R2 variant ``s2r2``: does it beat the best of ``others`` on each data set?"""
    parts, calls = [], []
    for dataset in datasets_:
        mine, best = _cell(summary, dataset, s2r2), _best_other(summary, dataset, s2r2, others)
        if mine is None or best is None:
            parts.append(f"{dataset}: {(not_measured or {}).get(dataset, 'not measured')}")
            continue
        diff, threshold, call = difference(mine, best)
        calls.append(call)
        floor = _cell(summary, dataset, "random-init")
        parts.append(f"{dataset}: {_pct(mine)} vs {best['method']} {_pct(best)} ({_pts(diff)} points, {call}"
                     + (f"; random-init floor {_pct(floor)})" if floor else ")"))
    verdict = _overall(calls)
    text = (f"Claim 1 (S2R2 beats SimCLR and SwAV), {s2r2}: {verdict} by this miniature, ahead on "
            f"{calls.count('ahead')} of {len(calls)} measured data sets; " + "; ".join(parts) + ".")
    if verdict != "supported" and calls:
        text += (" Short step budgets, a narrow CNN and small images may not reproduce the paper's ResNet18 "
                 "setting; 'tied' means within twice the standard error over seeds.")
    return text


def verdict_clutter(summary: list[dict], s2r2: str, others: list[str],
                    pairs=CLUTTER_PAIRS, not_measured: dict[str, str] | None = None) -> str:
    """Claim 2: is S2R2's margin over the best other method larger on cluttered than on object-centric
    training data, for each (object-centric, cluttered) pair?"""
    import math

    parts, calls = [], []
    for object_set, cluttered_set in pairs:
        margins = []
        for dataset in (object_set, cluttered_set):
            mine, best = _cell(summary, dataset, s2r2), _best_other(summary, dataset, s2r2, others)
            if mine is not None and best is not None:
                margins.append({"mean": mine["mean"] - best["mean"], "se": math.sqrt(mine["se"] ** 2 + best["se"] ** 2)})
        if len(margins) < 2:
            missing = (not_measured or {}).get(cluttered_set) or (not_measured or {}).get(object_set) or "not measured"
            parts.append(f"{object_set} / {cluttered_set}: {missing}")
            continue
        diff, threshold, call = difference(margins[1], margins[0])
        calls.append(call)
        parts.append(f"margin {_pts(margins[0]['mean'])} points on {object_set}, {_pts(margins[1]['mean'])} on "
                     f"{cluttered_set} (larger on clutter: {'yes' if call == 'ahead' else 'no, ' + call})")
    verdict = _overall(calls)
    text = (f"Claim 2 (a larger margin on cluttered scenes), {s2r2}: {verdict}; " + "; ".join(parts) + ".")
    if verdict != "supported" and calls:
        text += (" Our clutter is synthetic (pasted objects on black), probed on object-centric images; "
                 "COCO's scenes differ in kind, and a margin difference needs more seeds to resolve than a margin.")
    return text


def curve_points(rows: list[dict], data_n: int, metric: str = "linear_top1") -> list[dict]:
    """Claim 3's rows as (method, step, mean, std, se): the step is epochs * data_n / images."""
    return [{**cell, "step": round(float(cell["epochs"]) * data_n / int(cell["images"]))}
            for cell in summarize(rows, metric)]


def verdict_convergence(points: list[dict], s2r2: str, others: list[str]) -> str:
    """Claim 3: on the small set, is S2R2 ahead of the best other method early (at the first snapshot),
    and how does the lead evolve over the snapshots?"""
    steps = sorted({p["step"] for p in points})
    parts, calls = [], []
    for step in steps:
        at = [p for p in points if p["step"] == step]
        mine = next((p for p in at if p["method"] == s2r2), None)
        rivals = [p for p in at if p["method"] in others]
        if mine is None or not rivals:
            continue
        best = max(rivals, key=lambda p: p["mean"])
        diff, _, call = difference(mine, best)
        calls.append(call)
        parts.append(f"step {step}: {_pct(mine)} vs {best['method']} {_pct(best)} ({_pts(diff)}, {call})")
    if not calls:
        return f"Claim 3 (faster convergence on a small set), {s2r2}: not measured."
    verdict = "supported" if calls[0] == "ahead" else "not supported"
    relation = {"ahead": "ahead of", "behind": "behind", "tied": "tied with"}[calls[0]]
    text = (f"Claim 3 (faster convergence on a small set), {s2r2}: {verdict}: at the first snapshot S2R2 is "
            f"{relation} the best other method; " + "; ".join(parts) + ".")
    if verdict != "supported":
        text += (f" The paper counts epochs of ResNet18 training on 5,000 COCO images; ours stop at {steps[-1]} "
                 "steps of a narrow CNN, and at equal views per step SimCLR sees 4x as many images per step.")
    return text


def verdict_batch(points: list[dict], min_effect: float = 0.01) -> str:
    """Claim 4: does accuracy first rise, then fall as images per batch B grow (at fixed views per image)?
    ``points``: dicts with images and value (several seeds per B are averaged). A rise or fall counts
    when it exceeds twice the standard error over seeds, or ``min_effect`` with one seed per point."""
    import numpy as np

    by_b: dict[int, list[float]] = {}
    for p in points:
        by_b.setdefault(int(p["images"]), []).append(float(p["value"]))
    if len(by_b) < 3:
        return f"Claim 4 (accuracy rises, then falls, with images per batch): not measured (only {len(by_b)} values of B)."
    cells = {b: {"mean": float(np.mean(v)), "n": len(v), "std": float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"),
                 "se": (float(np.std(v, ddof=1)) / len(v) ** 0.5) if len(v) > 1 else float("nan")}
             for b, v in sorted(by_b.items())}
    bs = list(cells)
    peak = max(bs, key=lambda b: cells[b]["mean"])
    rise = difference(cells[peak], cells[bs[0]], min_effect)
    fall = difference(cells[peak], cells[bs[-1]], min_effect)
    curve = ", ".join(f"B={b}: {100 * c['mean']:.1f}" for b, c in cells.items())
    supported = peak not in (bs[0], bs[-1]) and rise[2] == "ahead" and fall[2] == "ahead"
    text = (f"Claim 4 (accuracy rises, then falls, with images per batch): {'supported' if supported else 'not supported'}; "
            f"{curve}; peak at B={peak}, {_pts(rise[0])} points over B={bs[0]} and {_pts(fall[0])} over B={bs[-1]} "
            f"(noise threshold {100 * max(rise[1], fall[1]):.1f}).")
    if not supported:
        text += (" Larger B also means more views per step here, and short runs; the paper attributes the fall to "
                 "similar images in a batch, which ten well-separated classes may not produce at these B.")
    return text


# --- Notebook 06's figures ----------------------------------------------------------------------------

def method_bars(summary: list[dict], datasets_: list[str], methods: list[str], floor: str = "random-init",
                title: str = ""):
    """Grouped bars of linear top-1 (mean ± std over seeds) per data set, one bar per method, the floor as a
    grey tick over each group."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(2.2 * len(datasets_) + 2, 3.6))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        cells = [_cell(summary, d, method) for d in datasets_]
        means = [100 * c["mean"] if c else np.nan for c in cells]
        stds = [100 * np.nan_to_num(c["std"]) if c else 0 for c in cells]
        ax.bar(np.arange(len(datasets_)) + i * width, means, width, yerr=stds, capsize=2, label=method)
    for j, dataset in enumerate(datasets_):
        cell = _cell(summary, dataset, floor)
        if cell:
            ax.hlines(100 * cell["mean"], j - width / 2, j + 0.8 - width / 2, colors="grey", linestyles=":",
                      label="random-init floor" if j == 0 else None)
    ax.set_xticks(np.arange(len(datasets_)) + width * (len(methods) - 1) / 2, datasets_, fontsize=8)
    ax.set_ylabel("linear probe top-1 (%)")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def curve_figure(points: list[dict], title: str = ""):
    """Claim 3: linear top-1 (mean ± std) against training steps, one line per method."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for method in dict.fromkeys(p["method"] for p in points):
        mine = sorted((p for p in points if p["method"] == method), key=lambda p: p["step"])
        ax.errorbar([p["step"] for p in mine], [100 * p["mean"] for p in mine],
                    yerr=[100 * np.nan_to_num(p["std"]) for p in mine], marker="o", capsize=3, label=method)
    ax.set_xlabel("training steps (same views per step for every method)")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def margin_figure(summary: list[dict], s2r2: str, others: list[str], pairs=CLUTTER_PAIRS, title: str = ""):
    """Claim 2: S2R2's margin over the best other method (points), object-centric beside cluttered."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for j, pair in enumerate(pairs):
        for k, dataset in enumerate(pair):
            mine, best = _cell(summary, dataset, s2r2), _best_other(summary, dataset, s2r2, others)
            if mine and best:
                ax.bar(j + 0.4 * k, 100 * (mine["mean"] - best["mean"]), 0.38,
                       color="tab:orange" if k else "tab:blue", label=("cluttered" if k else "object-centric") if j == 0 else None)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks([j + 0.2 for j in range(len(pairs))], [" / ".join(p) for p in pairs], fontsize=7)
    ax.set_ylabel(f"{s2r2} minus best other (points)", fontsize=8)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
