"""Figures shared by the notebooks. Every figure is saved through :func:`save_figure`."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

from .fileio import atomic_write_bytes
from .results import output_dir

# Fixed metadata so that a rerun on the same software writes the same bytes (no date, no version).
_METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
}


def save_figure(fig: "matplotlib.figure.Figure", name: str, formats: tuple[str, ...] = ("png", "pdf"),
                dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``<figures>/<name>.<fmt>`` for each format, atomically; return the paths."""
    if not name or Path(name).name != name or name.strip(".") == "":
        raise ValueError(f"figure name must be a plain file stem, e.g. '03_confusion', got {name!r}")
    if isinstance(formats, str):
        formats = (formats,)  # formats="png": one format, not the letters p, n, g
    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight", metadata=_METADATA.get(fmt))
        paths.append(atomic_write_bytes(output_dir("figures") / f"{name}.{fmt}", buffer.getvalue()))
    return paths


# --- Notebook 01: the ranking objective -------------------------------------------------------------

def toy_views_2d(images: int = 3, views: int = 4, spread: float = 0.35, seed: int = 0):
    """A 2-D toy embedding: ``views`` points per image scattered (angle std ``spread`` rad) around
    evenly spaced directions. Returns z (images*views, 2) float64 and ids (images*views,)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ids = torch.arange(images).repeat_interleave(views)
    angle = 2 * torch.pi * ids / images + spread * torch.randn(len(ids), generator=gen, dtype=torch.float64)
    radius = 1 + 0.15 * torch.rand(len(ids), generator=gen, dtype=torch.float64)
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1), ids


def descent_directions(loss_fn, z, ids):
    """-d loss / d z for every view: where one gradient step moves each embedding. (N, D)."""
    import torch

    z = z.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss_fn(z, ids), z)
    return -grad


def plot_ranked_list(ax, scores, relevant, title: str = ""):
    """One query's retrieval list, best first: positives filled, negatives hollow, precision at each positive."""
    import torch

    order = torch.argsort(torch.as_tensor(scores), descending=True)
    rel = torch.as_tensor(relevant)[order]
    hits = 0
    for rank, is_pos in enumerate(rel.tolist(), start=1):
        ax.scatter(rank, 0, s=300, marker="o", facecolor="tab:green" if is_pos else "white",
                   edgecolor="tab:green" if is_pos else "tab:red", linewidth=2)
        if is_pos:
            hits += 1
            ax.annotate(f"{hits}/{rank}", (rank, 0), textcoords="offset points", xytext=(0, 16), ha="center")
    ax.set_xlim(0.3, len(rel) + 0.7)
    ax.set_yticks([])
    ax.set_xlabel("rank by cosine similarity to the query")
    ax.set_title(title or "precision at each positive: R(i, P) / R(i, I)")
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)


def plot_relaxation(ax, taus=(0.01, 0.05, 0.2), span: float = 1.0):
    """The indicator 1{d > 0} of eq. 2 beside its sigmoid relaxation phi(d; tau) of eq. 3."""
    import torch

    d = torch.linspace(-span, span, 801)
    ax.plot(d, (d > 0).double(), color="black", linewidth=2.5, label="indicator (eq. 2)")
    for tau in taus:
        ax.plot(d, torch.sigmoid(d / tau), label=f"sigmoid, tau = {tau:g}")
    ax.set_xlabel("d = s_qj - s_qi")
    ax.set_ylabel("counts j as ranked above i")
    ax.legend(loc="upper left", fontsize=9)


def plot_ap_versus_tau(ax, scores, relevant, taus, mark_tau: float | None = None):
    """Smoothed AP of one ranked list as tau varies, against the exact AP it approximates."""
    from .losses import ranking_ap

    smooth = [ranking_ap(scores, relevant, tau).item() for tau in taus]
    ax.semilogx(taus, smooth, marker=".", label="smoothed AP (eqs. 1-3)")
    ax.axhline(ranking_ap(scores, relevant).item(), color="black", linestyle="--", label="exact AP (eqs. 1-2)")
    if mark_tau is not None:
        ax.axvline(mark_tau, color="grey", linewidth=0.8)
    ax.set_xlabel("tau")
    ax.set_ylabel("AP")
    ax.legend(fontsize=9)


def plot_descent_field(ax, z, ids, directions, title: str, scale: float | None = None):
    """Views as points coloured by image, with arrows along ``directions`` (e.g. :func:`descent_directions`)."""
    import matplotlib.pyplot as plt
    import torch

    colours = plt.get_cmap("tab10")
    circle = torch.linspace(0, 2 * torch.pi, 200)
    ax.plot(torch.cos(circle), torch.sin(circle), color="lightgrey", linewidth=0.8)
    for image in ids.unique().tolist():
        mine = ids == image
        ax.scatter(z[mine, 0], z[mine, 1], color=colours(image % 10), s=40, zorder=3, label=f"image {image}")
        ax.quiver(z[mine, 0], z[mine, 1], directions[mine, 0], directions[mine, 1], color=colours(image % 10),
                  angles="xy", scale_units="xy", scale=scale, width=0.006, zorder=2)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def relaxation_figure(scores, relevant, tau: float, taus=None):
    """Two panels for one tau: the indicator and its relaxation, and smoothed vs exact AP over tau."""
    import matplotlib.pyplot as plt
    import torch

    taus = torch.logspace(-4, 0, 41).tolist() if taus is None else taus
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    plot_relaxation(axes[0], taus=(tau,))
    plot_ap_versus_tau(axes[1], scores, relevant, taus, mark_tau=tau)
    fig.tight_layout()
    return fig


def interactive_relaxation(scores, relevant, tau: float = 0.01, still_taus=(1e-3, 1e-2, 1e-1, 1.0)):
    """A tau slider over :func:`relaxation_figure`, for JupyterLab (ipywidgets), after a still figure of the
    slider's range at ``still_taus``: the still one stays visible where widgets are not drawn (a reopened
    notebook, a static viewer such as GitHub's)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    import torch

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    plot_relaxation(axes[0], taus=still_taus)
    plot_ap_versus_tau(axes[1], scores, relevant, torch.logspace(-4, 0, 41).tolist())
    for still in still_taus:
        axes[1].axvline(still, color="grey", linewidth=0.8)
    fig.suptitle("the slider's range at a glance; move the slider below to redraw one tau", fontsize=10)
    fig.tight_layout()
    plt.show()

    def draw(tau):
        relaxation_figure(scores, relevant, tau)
        plt.show()

    slider = widgets.FloatLogSlider(value=tau, base=10, min=-4, max=0, step=0.05, description="tau",
                                    continuous_update=False)
    return widgets.interact(draw, tau=slider)


def descent_figure(z, ids, fields: dict):
    """One :func:`plot_descent_field` panel per loss; ``fields`` maps a title to its directions."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fields), figsize=(4.5 * len(fields), 4.5), squeeze=False)
    for ax, (title, directions) in zip(axes[0], fields.items()):
        plot_descent_field(ax, z, ids, directions, title)
    axes[0, 0].legend(loc="lower left", fontsize=9)
    fig.tight_layout()
    return fig


def plot_gradient_norms(ax, norms: dict):
    """Bars of each view's gradient norm, one group of bars per loss (log scale)."""
    import numpy as np

    width = 0.8 / len(norms)
    for offset, (name, values) in enumerate(norms.items()):
        positions = np.arange(len(values)) + offset * width
        ax.bar(positions, np.asarray(values) + 1e-30, width=width, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("view")
    ax.set_ylabel("|d loss / d z|")
    ax.legend(fontsize=9)


# --- Notebook 02: views and training -----------------------------------------------------------------

def view_grid(rows: dict, max_views: int = 8):
    """A grid of images: one row per entry of ``rows`` (title -> (n, 3, H, W) float in [0, 1] or uint8),
    at most ``max_views`` per row."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), max_views, figsize=(1.3 * max_views, 1.4 * len(rows)), squeeze=False)
    for row, (title, images) in zip(axes, rows.items()):
        images = images if images.dtype.is_floating_point else images.float() / 255
        for col, ax in enumerate(row):
            ax.axis("off")
            if col < len(images):
                ax.imshow(images[col].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        row[0].set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def training_curves(log: list[dict], title: str = ""):
    """Loss, the batch's exact AP and views/s against the step, from a run's per-step log."""
    import matplotlib.pyplot as plt
    import numpy as np

    steps = np.array([row["step"] for row in log])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for ax, key, label in zip(axes, ("loss", "batch_ap", "views_per_s"),
                              ("training loss", "exact AP of the batch", "views / s")):
        values = np.array([row[key] for row in log])
        ax.plot(steps, values, color="lightsteelblue", linewidth=0.8)
        window = max(1, len(values) // 20)
        if len(values) >= window:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], smooth, color="tab:blue")
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- Notebooks 03-05: evaluation and the paper's results ---------------------------------------------

def probe_bars(scores: dict, title: str = ""):
    """Grouped bars: metric -> {encoder name: value in [0, 1]}, e.g. trained beside the random-init floor."""
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = list(scores)
    encoders = list(dict.fromkeys(name for values in scores.values() for name in values))
    fig, ax = plt.subplots(figsize=(1.8 * len(metrics) + 2, 3.2))
    width = 0.8 / len(encoders)
    for i, name in enumerate(encoders):
        values = [scores[m].get(name, np.nan) for m in metrics]
        bars = ax.bar(np.arange(len(metrics)) + i * width, values, width, label=name)
        ax.bar_label(bars, labels=[f"{100 * v:.1f}" for v in values], fontsize=9)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(encoders) - 1) / 2, metrics)
    ax.set_ylabel("score")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def confusion_matrix(true, predicted, classes: list[str], title: str = ""):
    """Row-normalised confusion matrix of a classifier's test predictions."""
    import matplotlib.pyplot as plt
    import numpy as np

    true, predicted = np.asarray(true), np.asarray(predicted)
    counts = np.zeros((len(classes), len(classes)))
    np.add.at(counts, (true, predicted), 1)
    counts /= np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    image = ax.imshow(counts, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, fontsize=9)
    ax.set_yticks(range(len(classes)), classes, fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def retrieval_strip(views, query: int, order, is_positive, top: int = 12):
    """The query view, then its ``top`` nearest views: green frame for a view of the same image."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, top + 1, figsize=(1.2 * (top + 1), 1.6))
    shown = [(views[query], "query", "black")]
    shown += [(views[j], f"#{rank + 1}", "tab:green" if pos else "tab:red")
              for rank, (j, pos) in enumerate(zip(order[:top].tolist(), is_positive[:top].tolist()))]
    for ax, (image, label, colour) in zip(axes, shown):
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    return fig


def paper_margins_figure(margins: dict, epochs: list[int], title: str = ""):
    """The paper's margins (see ``results.paper_margins``): S2R2's printed top-1 minus the best other model's,
    one line per training set, against the epoch budget. Text at 10 pt or more."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for dataset, values in margins.items():
        ax.plot(epochs, values, marker="o", label=dataset)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xticks(epochs, [str(e) for e in epochs])
    ax.set_xlabel("training epochs", fontsize=11)
    ax.set_ylabel("S2R2 minus the best baseline (points)", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.legend(fontsize=10)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def sweep_figure(rows: list[dict], x: str, series: str, metric: str = "value", title: str = ""):
    """Lines of ``metric`` against ``x``, one per value of ``series`` (e.g. accuracy vs images per batch,
    one line per views per image), with the spread over seeds when there are several."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for value in sorted({row[series] for row in rows}):
        mine = [row for row in rows if row[series] == value]
        xs = sorted({row[x] for row in mine})
        means = [np.mean([r[metric] for r in mine if r[x] == v]) for v in xs]
        spread = [np.std([r[metric] for r in mine if r[x] == v]) for v in xs]
        ax.errorbar(xs, means, yerr=spread, marker="o", capsize=3, label=f"{series} = {value}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(x)
    ax.set_ylabel("linear probe top-1")
    ax.legend(fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- Notebook 06: the study's figures, from study.summary() and study.verdicts() ----------------------

def study_methods_figure(cells, datasets: list[str], methods: list[str], floors: dict, title: str = ""):
    """Grouped bars of final linear top-1 (mean ± std over seeds) per training set, one bar per method;
    ``floors`` maps a floor's name to {training set: its top-1} (study.floors), drawn as a line across that
    set's bars. ``cells``: study.summary()."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(2.6 * len(datasets) + 2, 3.6))
    width = 0.8 / len(methods)
    final = cells[cells["final"]]
    for i, method in enumerate(methods):
        rows = [final[(final["dataset"] == d) & (final["method"] == method)] for d in datasets]
        means = [100 * r["mean"].max() if len(r) else np.nan for r in rows]
        stds = [100 * np.nan_to_num(r["std"].iloc[0]) if len(r) else 0 for r in rows]
        ax.bar(np.arange(len(datasets)) + i * width, means, width, yerr=stds, capsize=2, label=method)
    for (name, values), style in zip(floors.items(), (":", "--", "-.")):
        for i, dataset in enumerate(datasets):
            ax.hlines(100 * values[dataset], i - width / 2, i + width * (len(methods) - 0.5), color="grey",
                      linestyle=style, linewidth=1, label=name if i == 0 else None)
    ax.set_xticks(np.arange(len(datasets)) + width * (len(methods) - 1) / 2, datasets, fontsize=8)
    ax.set_ylabel("linear probe top-1 (%)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def study_curves_figure(cells, datasets: list[str], methods: list[str], title: str = ""):
    """Linear top-1 (mean ± std) against training seconds, one panel per data set, one line per method
    (claim 3: the lead over the curve, small set beside full set)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for method in methods:
            mine = cells[(cells["dataset"] == dataset) & (cells["method"] == method)].sort_values("snapshot")
            if len(mine):
                ax.errorbar(mine["train_s"], 100 * mine["mean"], yerr=100 * np.nan_to_num(mine["std"]), marker="o",
                            capsize=3, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("training seconds (log)")
        ax.set_title(dataset, fontsize=9)
    axes[0][0].set_ylabel("linear probe top-1 (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def study_batch_figure(cells, series: dict, title: str = ""):
    """Claim 4: final top-1 (mean ± std) of S2R2 against the images per batch B, one line per entry of
    ``series`` (label -> list of data set names whose S2R2 rows hold its points)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    final = cells[cells["final"] & (cells["method"] == "S2R2")]
    for label, datasets in series.items():
        mine = final[final["dataset"].isin(datasets)].sort_values("images")
        ax.errorbar(mine["images"], 100 * mine["mean"], yerr=100 * np.nan_to_num(mine["std"]), marker="o",
                    capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("images per batch B (images x steps fixed)")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def verdicts_figure(table, title: str = ""):
    """Each comparison's effect with its (Holm-corrected) interval, and the threshold it had to reach (a
    grey tick), coloured by verdict; one line per row of ``table`` (study.verdicts())."""
    import matplotlib.pyplot as plt
    import numpy as np

    table = table[np.isfinite(table["effect"].astype(float))]
    colours = {"supported": "tab:green", "contradicted": "tab:red", "inconclusive": "tab:grey"}
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(table) + 1.2))
    for y, (_, row) in enumerate(table.iloc[::-1].iterrows()):
        colour = colours.get(row["verdict"], "black")
        ax.plot([100 * row["ci_low"], 100 * row["ci_high"]], [y, y], color=colour, linewidth=2)
        ax.plot(100 * row["effect"], y, "o", color=colour)
        ax.plot(100 * row["threshold"], y, "|", color="grey", markersize=12)
    labels = [f"{row['claim']}: {row['data']}" for _, row in table.iloc[::-1].iterrows()]
    labels = [label + (f"\n{row['comparison'].split(' (')[0]}" if labels.count(label) > 1 else "")
              for label, (_, row) in zip(labels, table.iloc[::-1].iterrows())]
    ax.set_yticks(range(len(table)), labels, fontsize=7)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("effect (points of top-1); | = threshold; green supported, red contradicted, grey inconclusive",
                  fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
