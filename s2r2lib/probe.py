"""Evaluation of a frozen encoder, as the paper evaluates (Sec. 3): a linear classifier on frozen
representations, trained on the labelled training split, top-1 on the test split. Also kNN top-1 and the
retrieval mAP that S2R2 optimises. A random-init encoder is always reported beside a trained one.

The linear-probe protocol (written next to every number it produces, :data:`LINEAR_PROTOCOL`):
features are the representation before the projection head, of the whole image resized to the view
size, with the encoder in eval mode (every norm layer too); they are standardised with the training
split's statistics; a multinomial logistic regression (sklearn's objective, solved by full-batch L-BFGS
in float64) is fitted for each inverse regularisation strength C in a grid on 80 % of the training split and scored on the held-out 20 %;
the best C is refitted on the whole training split; the test split is touched once, at the end.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .losses import average_precision
from .models import S2R2Model, build_model
from .results import atomic_write_bytes, project_dir

C_GRID = (0.01, 0.1, 1.0, 10.0)
LINEAR_PROTOCOL = ("linear probe: multinomial logistic regression (L-BFGS) on standardised frozen features; C in "
                   f"{{{', '.join(f'{c:g}' for c in C_GRID)}}} chosen on a held-out 20% of the training split, "
                   "refit on all of it; test split used once")
KNN_PROTOCOL = "kNN: cosine similarity, the k nearest training images vote with weight exp(s / 0.07)"
MAP_PROTOCOL = "retrieval mAP: exact AP (eqs. 1-2) of every test image as a query, same class = positive"


def load_encoder(checkpoint: str | Path | None, arch: str = "narrow_cnn", small_input: bool = True,
                 seed: int = 0) -> S2R2Model:
    """The model of a training checkpoint (weights only), or a random-init one (the floor) when
    ``checkpoint`` is None; in eval mode."""
    torch.manual_seed(seed)
    model = build_model(arch, small_input=small_input)
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}; train one first (notebook 02 or "
                                    f"python -m s2r2lib.train)")
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    return model.eval()


@torch.no_grad()
def extract_features(model: S2R2Model, images: torch.Tensor, size: int, batch_size: int = 500,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """Representations h (N, feat_dim) of uint8 images (N, 3, H, W), each resized whole to ``size``,
    the encoder in eval mode. float32, on the CPU."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"extract_features needs uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    model = model.eval().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device).float().div_(255)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(model.representation(x).float().cpu())
    return torch.cat(out)


def cached_features(model: S2R2Model, images: torch.Tensor, size: int, key: str,
                    cache_dir: str | Path | None = None, **kwargs) -> torch.Tensor:
    """:func:`extract_features`, saved under a key naming the checkpoint and split (e.g. the checkpoint's
    hash and ``"embedded-test"``) so a second probe of the same pair reads them back."""
    folder = Path(cache_dir) if cache_dir else project_dir() / "build" / "features"
    digest = hashlib.sha256(repr((key, size, tuple(images.shape))).encode()).hexdigest()[:16]
    path = folder / f"{digest}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    features = extract_features(model, images, size, **kwargs)
    buffer = io.BytesIO()
    torch.save(features, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return features


def checkpoint_key(checkpoint: str | Path | None, seed: int = 0) -> str:
    """A name for a checkpoint's features: the hash of its bytes (random-init: the seed)."""
    if checkpoint is None:
        return f"random-init-{seed}"
    return hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:16]


@dataclass
class ProbeResult:
    top1: float            # test accuracy, in [0, 1]
    c: float               # the regularisation strength chosen on the held-out slice
    validation: dict       # C -> held-out accuracy
    predictions: np.ndarray
    protocol: str = LINEAR_PROTOCOL


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, c: float, max_iter: int):
    """Multinomial logistic regression with sklearn's objective, C * sum(cross entropy) + |W|^2 / 2
    (bias not penalised), by full-batch L-BFGS in float64; returns a predict function."""
    weight = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, tolerance_grad=1e-6,
                                  tolerance_change=1e-9, history_size=20, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        # divided by C * n: the same minimiser as sklearn's objective, at a scale L-BFGS likes
        loss = F.cross_entropy(x @ weight + bias, y) + weight.square().sum() / (2 * c * len(x))
        loss.backward()
        return loss

    optimizer.step(objective)
    return lambda z: (z @ weight.detach() + bias.detach()).argmax(1)


def linear_probe(train_x, train_y, test_x, test_y, c_grid=C_GRID, held_out: float = 0.2, seed: int = 0,
                 max_iter: int = 500) -> ProbeResult:
    """The linear probe of :data:`LINEAR_PROTOCOL`: C chosen without the test split, then one test score."""
    train_x, test_x = (torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in (train_x, test_x))
    train_y, test_y = (torch.as_tensor(np.asarray(a), dtype=torch.long) for a in (train_y, test_y))
    if len(train_x) != len(train_y) or len(test_x) != len(test_y) or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"linear_probe: features and labels disagree: train {tuple(train_x.shape)} / "
                         f"{tuple(train_y.shape)}, test {tuple(test_x.shape)} / {tuple(test_y.shape)}")
    classes = int(max(train_y.max(), test_y.max())) + 1
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(train_x)))
    cut = int(len(order) * (1 - held_out))
    fit, val = order[:cut], order[cut:]

    def fitted(x, y, c):
        mean, std = x.mean(0), x.std(0).clamp_min(1e-12)  # standardised with the fitting data's statistics
        predict = _fit_logistic((x - mean) / std, y, classes, c, max_iter)
        return lambda z: predict((z - mean) / std)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: more threads only add synchronisation (and suffer on a busy machine)
    try:
        validation = {c: float((fitted(train_x[fit], train_y[fit], c)(train_x[val]) == train_y[val]).double().mean())
                      for c in c_grid}
        best = max(c_grid, key=lambda c: (validation[c], -c))
        predictions = fitted(train_x, train_y, best)(test_x)
    finally:
        torch.set_num_threads(threads)
    return ProbeResult(float((predictions == test_y).double().mean()), best, validation, predictions.numpy())


def knn_top1(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
             k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> float:
    """kNN top-1 (:data:`KNN_PROTOCOL`): cosine similarity, k neighbours weighted by exp(s / temperature)."""
    train_x, test_x = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    classes = int(max(train_y.max(), test_y.max())) + 1
    k = min(k, len(train_x))
    correct = 0
    for start in range(0, len(test_x), chunk):
        sims, idx = (test_x[start:start + chunk] @ train_x.T).topk(k, dim=1)
        votes = torch.zeros(len(sims), classes).scatter_add_(1, train_y[idx], (sims / temperature).exp())
        correct += (votes.argmax(1) == test_y[start:start + chunk]).sum().item()
    return correct / len(test_x)


def retrieval_map(features: torch.Tensor, labels: torch.Tensor, per_class: int | None = None, seed: int = 0) -> float:
    """Exact retrieval mAP (:data:`MAP_PROTOCOL`) via :func:`s2r2lib.losses.average_precision`, every
    class an "image" whose members are its "views". ``average_precision`` needs equal class sizes: with
    ``per_class`` (or unequal classes) a class-balanced random subset of that many per class is used."""
    counts = torch.bincount(labels)
    counts = counts[counts > 0]
    take = per_class or int(counts.min())
    if per_class is not None or (counts != counts[0]).any():
        gen = torch.Generator().manual_seed(seed)
        keep = torch.cat([torch.nonzero(labels == c)[:, 0][torch.randperm(int((labels == c).sum()), generator=gen)[:take]]
                          for c in labels.unique()])
        features, labels = features[keep], labels[keep]
    return float(average_precision(features, labels))


def evaluate(checkpoint: str | Path | None, train_images, train_labels, test_images, test_labels, size: int,
             arch: str = "narrow_cnn", small_input: bool = True, device: str = "cpu", split_name: str = "",
             seed: int = 0) -> dict:
    """Every metric of one encoder (a checkpoint, or the random-init floor when None): linear top-1,
    kNN top-1 at k = 20 and 200, retrieval mAP; with the chosen C and the protocol. Cached: the same
    checkpoint bytes, images, labels and settings under the same probe code are read back, not probed again."""
    inputs = (checkpoint_key(checkpoint, seed), size, arch, small_input, seed,
              *(hashlib.sha256(t.contiguous().cpu().numpy().tobytes()).hexdigest()
                for t in (train_images, train_labels, test_images, test_labels)),
              *(Path(__file__).with_name(name).read_text() for name in ("probe.py", "losses.py", "models.py")))
    path = project_dir() / "build" / "features" / f"probe-{hashlib.sha256(repr(inputs).encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return {**saved, "linear_predictions": saved["linear_predictions"].numpy()}
    model = load_encoder(checkpoint, arch, small_input, seed)
    key = checkpoint_key(checkpoint, seed)
    train_x = cached_features(model, train_images, size, f"{key}-{split_name}-train", device=device)
    test_x = cached_features(model, test_images, size, f"{key}-{split_name}-test", device=device)
    linear = linear_probe(train_x.numpy(), train_labels.numpy(), test_x.numpy(), test_labels.numpy(), seed=seed)
    metrics = {
        "linear_top1": linear.top1, "linear_c": linear.c, "linear_predictions": linear.predictions,
        "knn20_top1": knn_top1(train_x, train_labels, test_x, test_labels, k=20),
        "knn200_top1": knn_top1(train_x, train_labels, test_x, test_labels, k=200),
        "retrieval_map": retrieval_map(test_x, test_labels),
        "test_features": test_x,
    }
    buffer = io.BytesIO()
    torch.save({**metrics, "linear_predictions": torch.from_numpy(linear.predictions)}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return metrics


METRICS = {
    "linear_top1": LINEAR_PROTOCOL,
    "knn20_top1": KNN_PROTOCOL + ", k = 20",
    "knn200_top1": KNN_PROTOCOL + ", k = 200",
    "retrieval_map": MAP_PROTOCOL,
}
METHOD_NAMES = {"s2r2": "S2R2", "simclr": "SimCLR", "swav": "SwAV"}


def run_config(checkpoint: str | Path) -> dict:
    """The training config a checkpoint was made with (see ``s2r2lib.train.TrainConfig``)."""
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["config"]


def result_rows(metrics: dict, table: str, dataset: str, checkpoint: str | Path | None = None,
                arch: str = "narrow_cnn", seed: int = 0, device: str = "cpu", probe_s: float = 0.0) -> list[dict]:
    """runs.csv rows (``source=measured``) for the metrics of :func:`evaluate`: of a checkpoint, its
    method, batch and epochs read from it; of the random-init floor (``checkpoint=None``), method
    ``random-init``. wall_s is training plus probing time."""
    from .results import provenance

    setting = {"arch": arch, "method": "random-init", "images": "", "views": "", "epochs": 0, "seed": seed}
    wall = probe_s
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        config = state["config"]
        views = (sum(c for c, _, _ in config["crops"]) if config["method"] == "swav" else config["views_per_image"])
        setting = {"arch": config["arch"], "method": METHOD_NAMES[config["method"]],
                   "images": config["images_per_batch"], "views": views, "seed": config["seed"],
                   "epochs": round(state["step"] * config["images_per_batch"] / state["num_images"], 3)}
        wall += state["train_wall_s"]
    prov = {k: v for k, v in provenance(device).items() if k in ("commit", "device", "date")}
    return [{"table": table, "dataset": dataset, **setting, "metric": metric, "value": f"{metrics[metric]:.4f}",
             "source": "measured", "protocol": protocol, "wall_s": f"{wall:.1f}", **prov}
            for metric, protocol in METRICS.items()]


@torch.no_grad()
def rank_views(model: S2R2Model, images: torch.Tensor, views_per_image: int, size: int, query: int = 0,
               seed: int = 0):
    """A retrieval example: K views of each image, ranked by cosine similarity of their projections to
    view ``query``. Returns (views (N, 3, size, size), order (N - 1,) of the other views, best first,
    is_positive (N - 1,) bool: same image as the query)."""
    from .views import make_views

    views, ids = make_views(images, views_per_image, size, generator=torch.Generator().manual_seed(seed))
    z = F.normalize(model.eval()(views), dim=1)
    sims = z @ z[query]
    sims[query] = -float("inf")
    order = sims.argsort(descending=True)[:-1]
    return views, order, ids[order] == ids[query]
