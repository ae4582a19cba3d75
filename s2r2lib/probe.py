"""Evaluation of a frozen encoder, as the paper evaluates (Sec. 3): a linear classifier on frozen
representations, trained on the labelled training split, top-1 on the test split. Also kNN top-1 and the
retrieval mAP that S2R2 optimises. A random-init encoder is always reported beside a trained one.

The linear-probe protocol (written next to every number it produces, :data:`LINEAR_PROTOCOL`):
features are the representation before the projection head, of the whole image resized to the view
size, with the encoder in eval mode (every norm layer too); they are standardised with the training
split's statistics; a multinomial logistic regression (sklearn's objective, solved by full-batch L-BFGS
in float64) is fitted for each inverse regularisation strength C in a grid on 80 % of the training split and scored on the held-out 20 %;
the best C is refitted on the whole training split; the test split is touched once, at the end.

Every metric runs on the ``device`` it is given (default: where the features are), so a probe of a GPU
encoder's features stays on the GPU; on the CPU, torch uses its configured threads.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .losses import average_precision
from .models import S2R2Model, build_model
from .results import atomic_write_bytes, project_dir

C_GRID = (0.01, 0.1, 1.0, 10.0)
LINEAR_PROTOCOL = ("linear probe: multinomial logistic regression (L-BFGS) on standardised frozen features; C in "
                   f"{{{', '.join(f'{c:g}' for c in C_GRID)}}} chosen on a held-out 20% of the training split, "
                   "refit on all of it; test split used once")
KNN_PROTOCOL = "kNN: cosine similarity, the k nearest training images vote with weight exp(s / 0.07)"
MAP_PROTOCOL = ("retrieval mAP: exact AP (eqs. 1-2, ties as sklearn) of every test image as a query over all others, "
                "same class = positive")


# The encoder's architecture, as a training config names it; a random-init encoder's defaults.
ENCODER_FIELDS = {"arch": "narrow_cnn", "small_input": True, "proj_dim": 128}


def read_checkpoint(checkpoint: str | Path) -> dict:
    """A checkpoint of ``s2r2lib.train`` (a dict with model, config, step, ...), loaded with
    ``weights_only=True`` so that nothing in the file runs. FileNotFoundError for a missing file;
    ValueError for any file that is not such a checkpoint (torch's own text is not passed on: it suggests
    loading with weights_only=False, which would run whatever the file holds)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one first (notebook 02 or python -m s2r2lib.train), "
                                f"or point to a run's checkpoint.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated zip, random bytes, a pickle with code or foreign classes in it
        state = None
    if not (isinstance(state, dict) and isinstance(state.get("model"), dict) and isinstance(state.get("config"), dict)):
        raise ValueError(f"checkpoint {path} is not a weights-only s2r2 checkpoint: it is corrupt, truncated, or "
                         f"was not written by s2r2lib.train (which saves model, config and step). Point to a run's "
                         f"checkpoint.pt, or train again")
    return state


def load_encoder(checkpoint: str | Path | None, arch: str | None = None, small_input: bool | None = None,
                 proj_dim: int | None = None, seed: int = 0) -> S2R2Model:
    """The model of a training checkpoint, built with the arch, small_input and proj_dim of the run's saved
    config; or a random-init one (the floor) when ``checkpoint`` is None, built as given (defaults:
    :data:`ENCODER_FIELDS`). In eval mode. For a checkpoint, a value given must match the saved one."""
    given = {"arch": arch, "small_input": small_input, "proj_dim": proj_dim}
    state = None if checkpoint is None else read_checkpoint(checkpoint)
    if state is None:
        settings = {k: ENCODER_FIELDS[k] if v is None else v for k, v in given.items()}
    else:
        saved = state["config"]
        missing = [k for k in ENCODER_FIELDS if k not in saved]
        if missing:
            raise ValueError(f"checkpoint {checkpoint}: its config lacks {missing}; it is not a checkpoint of "
                             f"s2r2lib.train")
        settings = {k: saved[k] for k in ENCODER_FIELDS}
        mismatched = {k: v for k, v in given.items() if v is not None and v != settings[k]}
        if mismatched:
            raise ValueError("load_encoder: " + ", ".join(f"{k}={v!r}" for k, v in mismatched.items())
                             + f" was asked for, but checkpoint {checkpoint} was trained with "
                             + ", ".join(f"{k}={settings[k]!r}" for k in mismatched)
                             + "; leave them out (None) to use the checkpoint's own")
    torch.manual_seed(seed)
    model = build_model(**settings)
    if state is not None:
        model.load_state_dict(state["model"])
    return model.eval()


@torch.no_grad()
def extract_features(model: S2R2Model, images: torch.Tensor, size: int, batch_size: int = 500,
                     device: str | torch.device = "cpu", progress: bool = False) -> torch.Tensor:
    """Representations h (N, feat_dim) of uint8 images (N, 3, H, W), each resized whole to ``size``,
    the encoder in eval mode. float32, on the CPU. ``progress``: a bar over the batches."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"extract_features needs uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    model = model.eval().to(device)
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=f"features of {len(images)} images", disable=not progress,
                      leave=False):
        x = images[start:start + batch_size].to(device).float().div_(255)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(model.representation(x).float().cpu())
    return torch.cat(out)


def cached_features(model: S2R2Model, images: torch.Tensor, size: int, key: str,
                    cache_dir: str | Path | None = None, **kwargs) -> torch.Tensor:
    """:func:`extract_features`, saved under a key naming the checkpoint and split (e.g. the checkpoint's
    hash and ``"embedded-test"``) and the images' content, so a second probe of the same encoder and images
    reads them back, while other images under the same key (another subset of the split) are extracted."""
    folder = Path(cache_dir) if cache_dir else project_dir() / "build" / "features"
    content = hashlib.sha256(images.contiguous().cpu().numpy().tobytes()).hexdigest()
    digest = hashlib.sha256(repr((key, size, tuple(images.shape), content)).encode()).hexdigest()[:16]
    path = folder / f"{digest}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    features = extract_features(model, images, size, **kwargs)
    buffer = io.BytesIO()
    torch.save(features, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return features


def checkpoint_key(checkpoint: str | Path | None, model: S2R2Model, seed: int) -> str:
    """A name for an encoder's features: the hash of its checkpoint's bytes; for a random-init encoder,
    its seed and architecture (the hash of its module tree, strides included)."""
    if checkpoint is None:
        return f"random-init-{seed}-{hashlib.sha256(repr(model).encode()).hexdigest()[:8]}"
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
    (bias not penalised), by full-batch L-BFGS in float64 on x's device; returns a predict function."""
    weight = torch.zeros(x.shape[1], classes, dtype=torch.float64, device=x.device, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, device=x.device, requires_grad=True)
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


def _as_tensor(a, dtype: torch.dtype, device) -> torch.Tensor:
    """A tensor (kept where it is unless ``device`` says otherwise, out of any autograd graph) or an array, as
    ``dtype`` on the device."""
    a = a.detach() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    return a.to(device=device if device is not None else a.device, dtype=dtype)


def linear_probe(train_x, train_y, test_x, test_y, c_grid=C_GRID, held_out: float = 0.2, seed: int = 0,
                 max_iter: int = 500, device: str | torch.device | None = None, progress: bool = False) -> ProbeResult:
    """The linear probe of :data:`LINEAR_PROTOCOL`: C chosen without the test split, then one test score.

    Features and labels are arrays or tensors; the fits run on ``device`` (default: train_x's device).
    ``progress``: a bar over the fits (one per C, then the refit)."""
    if not c_grid or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and 0 < c < math.inf
                             for c in c_grid):
        raise ValueError(f"linear_probe: c_grid must be a non-empty list of positive finite numbers (inverse "
                         f"regularisation strengths), got {c_grid!r}")
    if not isinstance(held_out, float) or not 0 < held_out < 1:
        raise ValueError(f"linear_probe: held_out must be a fraction strictly between 0 and 1, got {held_out!r}")
    device = device if device is not None else (train_x.device if isinstance(train_x, torch.Tensor) else "cpu")
    train_x, test_x = (_as_tensor(a, torch.float64, device) for a in (train_x, test_x))
    train_y, test_y = (_as_tensor(a, torch.long, device) for a in (train_y, test_y))
    if len(train_x) != len(train_y) or len(test_x) != len(test_y) or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"linear_probe: features and labels disagree: train {tuple(train_x.shape)} / "
                         f"{tuple(train_y.shape)}, test {tuple(test_x.shape)} / {tuple(test_y.shape)}")
    _check_labels("linear_probe", "train_y", train_y)
    _check_labels("linear_probe", "test_y", test_y)
    classes = int(max(train_y.max(), test_y.max())) + 1
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(train_x))).to(train_x.device)
    cut = int(len(order) * (1 - held_out))
    fit, val = order[:cut], order[cut:]

    fits = tqdm(total=len(c_grid) + 1, desc="linear probe fits (each C, then the refit)", disable=not progress,
                leave=False)

    def fitted(x, y, c):
        mean, std = x.mean(0), x.std(0).clamp_min(1e-12)  # standardised with the fitting data's statistics
        predict = _fit_logistic((x - mean) / std, y, classes, c, max_iter)
        fits.update()
        return lambda z: predict((z - mean) / std)

    with fits:
        validation = {c: float((fitted(train_x[fit], train_y[fit], c)(train_x[val]) == train_y[val]).double().mean())
                      for c in c_grid}
        best = max(c_grid, key=lambda c: (validation[c], -c))
        predictions = fitted(train_x, train_y, best)(test_x)
    return ProbeResult(float((predictions == test_y).double().mean()), best, validation, predictions.cpu().numpy())


def knn_top1(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
             k: int = 20, temperature: float = 0.07, chunk: int = 1024,
             device: str | torch.device | None = None) -> float:
    """kNN top-1 (:data:`KNN_PROTOCOL`): cosine similarity, k neighbours weighted by exp(s / temperature),
    on ``device`` (default: train_x's device)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"knn_top1: k must be a whole number of neighbours >= 1, got {k!r}")
    if not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
        raise ValueError(f"knn_top1: temperature must be a positive finite number, got {temperature!r}")
    device = device if device is not None else train_x.device
    train_x, test_x = (F.normalize(x.to(device, torch.float32), dim=1) for x in (train_x, test_x))
    train_y, test_y = train_y.to(device), test_y.to(device)
    classes = int(max(train_y.max(), test_y.max())) + 1
    k = min(k, len(train_x))
    correct = torch.zeros((), dtype=torch.long, device=device)
    for start in range(0, len(test_x), chunk):
        sims, idx = (test_x[start:start + chunk] @ train_x.T).topk(k, dim=1)
        votes = torch.zeros(len(sims), classes, device=device).scatter_add_(1, train_y[idx], (sims / temperature).exp())
        correct += (votes.argmax(1) == test_y[start:start + chunk]).sum()
    return correct.item() / len(test_x)


def retrieval_map(features: torch.Tensor, labels: torch.Tensor, device: str | torch.device | None = None,
                  memory_budget: int | None = None) -> float:
    """Exact retrieval mAP (:data:`MAP_PROTOCOL`) via :func:`s2r2lib.losses.average_precision`, every class
    an "image" whose members are its "views": each feature is a query, all the others its retrieval set.
    Ties count as ``sklearn.metrics.average_precision_score`` counts them, so collapsed features score
    chance (the fraction of same-class items), not 1. Classes may differ in size; each needs 2 members.
    Queries are ranked many at a time, in chunks under ``memory_budget`` bytes, on ``device`` (default:
    the features' device)."""
    if not isinstance(features, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(f"retrieval_map: features and labels must be tensors, got {type(features).__name__} and "
                        f"{type(labels).__name__}; wrap arrays with torch.as_tensor")
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"retrieval_map: features must be (N, D) and labels (N,), got {tuple(features.shape)} "
                         f"and {tuple(labels.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError("retrieval_map: features hold NaN or inf; check the encoder")
    _check_labels("retrieval_map", "labels", labels)
    classes, counts = labels.unique(return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        raise ValueError(f"retrieval_map needs at least 2 classes of at least 2 members each (a query needs a "
                         f"positive); labels give {len(classes)} classes, the smallest with {counts.min().item()}")
    device = device if device is not None else features.device
    return float(average_precision(features.to(device), labels.to(device), memory_budget=memory_budget))


def _check_labels(name: str, argument: str, labels: torch.Tensor) -> None:
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dim() != 1:
        raise ValueError(f"{name}: {argument} must be 1-D integer class labels, got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"{name}: {argument} must be class indices >= 0, got {labels.min().item()}")


def evaluate(checkpoint: str | Path | None, train_images, train_labels, test_images, test_labels, size: int,
             arch: str | None = None, small_input: bool | None = None, proj_dim: int | None = None,
             device: str = "cpu", split_name: str = "", seed: int = 0, progress: bool = False) -> dict:
    """Every metric of one encoder (a checkpoint, or the random-init floor when None): linear top-1,
    kNN top-1 at k = 20 and 200, retrieval mAP; with the chosen C, the linear probe's test predictions, and the
    features probed (``train_features``, ``test_features``: float32 on the CPU). The encoder is built as
    :func:`load_encoder` builds it: a checkpoint's with its own architecture. Cached: the same encoder, images,
    labels and settings under the same probe code are read back, not probed again. ``progress``: bars over
    the feature batches and the linear probe's fits."""
    model = load_encoder(checkpoint, arch, small_input, proj_dim, seed)
    key = checkpoint_key(checkpoint, model, seed)
    inputs = (key, size, seed,
              *(hashlib.sha256(t.contiguous().cpu().numpy().tobytes()).hexdigest()
                for t in (train_images, train_labels, test_images, test_labels)),
              *(Path(__file__).with_name(name).read_text() for name in ("probe.py", "losses.py", "models.py")))
    path = project_dir() / "build" / "features" / f"probe-{hashlib.sha256(repr(inputs).encode()).hexdigest()[:16]}.pt"
    train_x, test_x = (cached_features(model, images, size, f"{key}-{split_name}-{split}", device=device,
                                       progress=progress)
                       for images, split in ((train_images, "train"), (test_images, "test")))
    features = {"train_features": train_x, "test_features": test_x}  # kept once, in the feature cache
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return {**saved, "linear_predictions": saved["linear_predictions"].numpy(), **features}
    linear = linear_probe(train_x, train_labels, test_x, test_labels, seed=seed, device=device, progress=progress)
    metrics = {
        "linear_top1": linear.top1, "linear_c": linear.c, "linear_predictions": linear.predictions,
        "knn20_top1": knn_top1(train_x, train_labels, test_x, test_labels, k=20, device=device),
        "knn200_top1": knn_top1(train_x, train_labels, test_x, test_labels, k=200, device=device),
        "retrieval_map": retrieval_map(test_x, test_labels, device=device),
    }
    buffer = io.BytesIO()
    torch.save({**metrics, "linear_predictions": torch.from_numpy(linear.predictions)}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return {**metrics, **features}


METRICS = {
    "linear_top1": LINEAR_PROTOCOL,
    "knn20_top1": KNN_PROTOCOL + ", k = 20",
    "knn200_top1": KNN_PROTOCOL + ", k = 200",
    "retrieval_map": MAP_PROTOCOL,
}
METHOD_NAMES = {"s2r2": "S2R2", "simclr": "SimCLR", "swav": "SwAV"}


def run_config(checkpoint: str | Path) -> dict:
    """The training config a checkpoint was made with (see ``s2r2lib.train.TrainConfig``); a field the
    checkpoint predates reads as the default it was trained with (``recipe``: simclr-cifar)."""
    return {"recipe": "simclr-cifar", **read_checkpoint(checkpoint)["config"]}


def result_rows(metrics: dict, table: str, dataset: str, checkpoint: str | Path | None = None,
                arch: str = "narrow_cnn", seed: int = 0, device: str = "cpu", *, probe_s: float) -> list[dict]:
    """runs.csv rows (``source=measured``) for the metrics of :func:`evaluate`: of a checkpoint, its
    method, batch, epochs, views seen and training time read from it; of the random-init floor
    (``checkpoint=None``), method ``random-init``, untrained. wall_s is training plus probing time (``probe_s``,
    measured by the caller)."""
    from .results import provenance

    setting = {"arch": arch, "method": "random-init", "images": "", "views": "", "epochs": 0, "seed": seed,
               "views_seen": 0, "train_s": "0.0"}
    wall = probe_s
    if checkpoint is not None:
        state = read_checkpoint(checkpoint)
        config = state["config"]
        views = (sum(c for c, _, _ in config["crops"]) if config["method"] == "swav" else config["views_per_image"])
        setting = {"arch": config["arch"], "method": METHOD_NAMES[config["method"]],
                   "images": config["images_per_batch"], "views": views, "seed": config["seed"],
                   "epochs": round(state["step"] * config["images_per_batch"] / state["num_images"], 3),
                   "views_seen": state["step"] * config["images_per_batch"] * views,
                   "train_s": f"{state['train_wall_s']:.1f}"}
        wall += state["train_wall_s"]
    prov = {k: v for k, v in provenance(device).items() if k in ("commit", "device", "date")}
    return [{"table": table, "dataset": dataset, **setting, "metric": metric, "value": f"{metrics[metric]:.4f}",
             "source": "measured", "protocol": protocol, "wall_s": f"{wall:.1f}", **prov}
            for metric, protocol in METRICS.items()]


@torch.no_grad()
def rank_views(model: S2R2Model, images: torch.Tensor, views_per_image: int, size: int, query: int = 0,
               seed: int = 0, recipe: str = "simclr-cifar"):
    """A retrieval example: K views of each image (``recipe``: a name of :data:`s2r2lib.views.RECIPES`, the
    run's), ranked by cosine similarity of their projections to view ``query``. Returns (views (N, 3, size,
    size), order (N - 1,) of the other views, best first, is_positive (N - 1,) bool: same image as the query)."""
    from .views import RECIPES, make_views

    if recipe not in RECIPES:
        raise ValueError(f"rank_views: unknown recipe {recipe!r}; expected one of {sorted(RECIPES)} (the run's "
                         f"config names it)")
    views, ids = make_views(images, views_per_image, size, generator=torch.Generator().manual_seed(seed),
                            recipe=RECIPES[recipe])
    z = F.normalize(model.eval()(views), dim=1)
    sims = z @ z[query]
    sims[query] = -float("inf")
    order = sims.argsort(descending=True)[:-1]
    return views, order, ids[order] == ids[query]
