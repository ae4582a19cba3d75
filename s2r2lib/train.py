"""One training engine for S2R2, SimCLR and SwAV: a config, a step per method, checkpoints that resume
everything, and torchrun + DDP past one process.

    python -m s2r2lib.train --config run.yaml [--preset NAME] [--resume] [key=value ...]
    torchrun --nproc-per-node 4 -m s2r2lib.train --config run.yaml
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-id run1 --rdzv-backend c10d --rdzv-endpoint host0:29500 \
             -m s2r2lib.train --config run.yaml          # the same command on each node

Methods as the paper trains them (Sec. 3):
  s2r2    smooth_ap_loss over the B*K views; Adam, lr 1e-4, fixed.
  simclr  NT-Xent (K = 2 in the paper); Adam, lr 3e-4 with cosine decay.
  swav    multi-crop, prototypes, Sinkhorn-Knopp codes, prototypes frozen in the first epoch, optional
          queue; LARS, lr 1 with cosine decay.

The engine reads nothing back from the device inside a step: the loss and batch AP stay there and are
read every ``log_every`` steps. On CUDA, cuDNN autotunes its kernels and Adam is fused; images that fit
stay on the GPU.

Exact resume. Each step's batch is drawn from a permutation fixed by (seed, epoch), and its views from a
generator seeded by (seed, step, rank); the learning rate is a function of the step. A checkpoint holds
the model, prototypes, optimiser, SwAV queue, RNG states and the step, so a run killed at any point and
resumed from its last checkpoint ends as one never stopped: with the same weights, bitwise, on the CPU and,
with ``deterministic=true`` (deterministic kernels, cuBLAS's fixed workspace), on a GPU; on a GPU without
it, within the difference between two uninterrupted runs (cuDNN's autotuned and atomic kernels differ from
run to run; ``python -m s2r2lib.bench gpu`` measures both). Checkpoints are written atomically and loaded
with ``torch.load(weights_only=True)``; configs with ``yaml.safe_load``: nothing a file holds is ever run.

Distributed (set-up and gather in :mod:`s2r2lib.distributed`). Under torchrun, each process takes
B / world of the images of a step; the embeddings of all processes are gathered with their gradients
(:func:`gather_with_grad`), so the ranking, NT-Xent and Sinkhorn see the global batch, and DDP's gradient
averaging then yields the global batch's gradient. All K views of an image sit on one process, so batch
norm sees per-process statistics unless ``sync_bn=true``. Rank 0 builds the data cache before the others
read it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import hashlib
import inspect
import io
import math
import os
import sys
import time
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm.auto import tqdm

from . import data as datasets
from . import probe
from .distributed import (check_sync_bn, ddp_device_ids, gather_with_grad, rank_zero_first, resolve_device,
                          setup, with_sync_bn)
from .fileio import locked
from .losses import (BatchGroups, average_precision, check_embeddings, nt_xent_loss, ranking_groups, smooth_ap_loss,
                     swav_loss)
from .models import ARCHS, build_model
from .results import atomic_write_bytes
from .views import RECIPES, make_multicrop_views, make_views

METHODS = ("s2r2", "simclr", "swav")
# The paper's optimiser settings (Sec. 3); tau is eq. 3's for S2R2, the softmax temperature otherwise.
METHOD_DEFAULTS = {
    "s2r2": {"optimizer": "adam", "lr": 1e-4, "schedule": "constant", "tau": 0.01},
    "simclr": {"optimizer": "adam", "lr": 3e-4, "schedule": "cosine", "tau": 0.1},
    "swav": {"optimizer": "lars", "lr": 1.0, "schedule": "cosine", "tau": 0.1},
}
# Fields that may change between a run and its resumption; every other field must match the checkpoint.
RUNTIME_FIELDS = ("output", "device", "progress", "checkpoint_every", "compile", "keep_steps", "knn_every",
                  "log_every", "deterministic", "sync_bn")  # how a run is executed, as device and world size


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``<output>/config.yaml`` beside it.

    Every field is checked against its declared type when the config is made (from Python, a dict, a YAML
    file or the command line) and coerced where YAML 1.1 reads a value loosely: ``lr: 1e-3`` is a string
    to YAML 1.1 and becomes the float 0.001 here. :meth:`resolved` then checks ranges, names and the device.
    """

    method: str = "s2r2"
    data: str = "embedded"              # a name from s2r2lib.data.DATASETS
    data_root: str | None = None
    split: str | None = "unlabeled"     # the pre-training split (None: the loader's default)
    data_options: dict = field(default_factory=dict)  # extra loader keywords, e.g. {"mode": "cluttered"}
    image_size: int = 40                # images are resized (cached) to this before views are cut
    view_size: int = 32                 # K views of view_size x view_size (paper: 96)
    arch: str = "narrow_cnn"
    small_input: bool = True            # a stem for 32-px views
    proj_dim: int = 128
    images_per_batch: int = 16          # B (global, over all processes)
    views_per_image: int = 8            # K; for swav the crops below instead
    crops: list = field(default_factory=lambda: [[2, 32, [0.14, 1.0]], [4, 16, [0.05, 0.14]]])
    recipe: str = "simclr-cifar"        # views.RECIPES: simclr (s = 1, paper presets), simclr-cifar (s = 0.5, 32 px)
    prototypes: int = 30                # swav
    queue_length: int = 0               # swav: stored embeddings per code crop (0: no queue)
    prototype_freeze_steps: int | None = None  # swav: prototypes frozen for these first steps (None: one epoch)
    epsilon: float = 0.05               # swav: Sinkhorn's entropic regularisation
    epochs: int = 1
    max_steps: int | None = None        # a budget in steps instead of epochs
    optimizer: str | None = None        # None: the method's paper default (METHOD_DEFAULTS)
    lr: float | None = None
    schedule: str | None = None
    warmup_steps: int = 0               # linear warmup from lr / warmup_steps to lr, then the schedule
    tau: float | None = None
    weight_decay: float = 0.0
    seed: int = 0
    output: str = "runs/s2r2"
    device: str = "cpu"                 # cpu, cuda, cuda:<index> or mps; resolved() writes it with its index
    precision: str = "fp32"             # fp32 or bf16 (autocast)
    channels_last: bool = True
    compile: bool = False               # torch.compile the learner and the view renderer
    deterministic: bool = False         # bitwise-reproducible CUDA kernels (slower); see "Exact resume"
    sync_bn: bool = False               # under DDP: batch norm statistics over the global batch
    log_every: int = 10                 # steps between reads of the loss from the device (log rows)
    checkpoint_every: int = 50          # steps
    keep_steps: list = field(default_factory=list)  # also keep checkpoint-<step>.pt after these steps
    progress: bool = True
    knn_every: int = 0                  # steps between kNN monitors (0: none); logged as knn_top1
    knn_data: str = "embedded"          # the labelled data set the monitor probes (train and test splits)
    knn_images: int = 1000              # training images the monitor uses (half as many test images)

    def __post_init__(self):
        for name, declared in _field_types().items():
            setattr(self, name, _coerce(name, getattr(self, name), declared))
        if not all(_is_int(step) for step in self.keep_steps):
            raise TypeError(f"TrainConfig: keep_steps must be a list of step numbers (integers), got {self.keep_steps!r}")
        self.crops = _checked_crops(self.crops)
        if not all(isinstance(key, str) for key in self.data_options):
            raise TypeError(f"TrainConfig: data_options must map option names (strings) to values, got {self.data_options!r}")

    def resolved(self) -> TrainConfig:
        """This config with the method's defaults filled in and the device written with its index
        (:func:`resolve_device`), validated."""
        if self.method not in METHODS:
            raise ValueError(f"TrainConfig: unknown method {self.method!r}; expected one of {METHODS}")
        filled = {k: v for k, v in METHOD_DEFAULTS[self.method].items() if getattr(self, k) is None}
        config = dataclasses.replace(self, **filled, device=str(resolve_device(self.device)))
        config.validate()
        return config

    def validate(self) -> None:
        """Refuse values out of range, unknown names, and an output that cannot be a run folder."""
        def bad(message: str):
            raise ValueError(f"TrainConfig: {message}")

        def positive_finite(name: str):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                bad(f"{name} must be a positive finite number, got {value}")

        if self.arch not in ARCHS:
            bad(f"unknown arch {self.arch!r}; expected one of {ARCHS}")
        for name in ("image_size", "view_size", "proj_dim", "checkpoint_every", "epochs", "log_every"):
            if getattr(self, name) < 1:
                bad(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            bad(f"max_steps must be at least 1 (or null: train for `epochs`), got {self.max_steps}")
        if self.images_per_batch < 2:
            bad(f"images_per_batch (B) must be at least 2 so that every view has negatives; got {self.images_per_batch}")
        if self.method != "swav" and self.views_per_image < 2:
            bad(f"views_per_image (K) must be at least 2 so that every view has a positive; got {self.views_per_image}")
        if self.view_size > self.image_size:
            bad(f"view_size {self.view_size} is larger than image_size {self.image_size}; views are crops")
        for name in ("lr", "tau", "epsilon"):
            positive_finite(name)
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            bad(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if self.method == "swav":
            if len(self.crops) < 1 or self.crops[0][0] < 2:
                bad(f"swav needs at least 2 large crops first in `crops`, got {self.crops}")
            for count, size, scale in self.crops:
                if size > self.image_size:
                    bad(f"swav crop {[count, size, scale]} does not fit {self.image_size}-px images "
                        f"(crop size <= image_size)")
            if self.prototypes < 1:
                bad(f"prototypes must be at least 1, got {self.prototypes}")
        if self.optimizer not in (None, "adam", "lars", "sgd"):
            bad(f"unknown optimizer {self.optimizer!r}; expected adam, lars or sgd")
        if self.schedule not in (None, "constant", "cosine"):
            bad(f"unknown schedule {self.schedule!r}; expected constant or cosine")
        if self.recipe not in RECIPES:
            bad(f"unknown recipe {self.recipe!r}; expected one of {sorted(RECIPES)} (s2r2lib.views.RECIPES)")
        if self.precision not in ("fp32", "bf16"):
            bad(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.queue_length < 0 or (self.method == "swav" and 0 < self.queue_length < self.images_per_batch):
            bad(f"queue_length {self.queue_length} must be 0 or at least images_per_batch {self.images_per_batch}")
        if any(step < 1 for step in self.keep_steps):
            bad(f"keep_steps are step numbers from 1, got {self.keep_steps}")
        if self.warmup_steps < 0:
            bad(f"warmup_steps must be 0 (no warmup) or a number of steps, got {self.warmup_steps}")
        if self.prototype_freeze_steps is not None and self.prototype_freeze_steps < 0:
            bad(f"prototype_freeze_steps must be None (one epoch), 0 or a number of steps, got "
                f"{self.prototype_freeze_steps}")
        _check_data_set("data", self.data, self.data_options)
        if self.knn_every < 0:
            bad(f"knn_every must be 0 (no kNN monitor) or a number of steps, got {self.knn_every}")
        if self.knn_every:
            _check_data_set("knn_data", self.knn_data, {})
            if self.knn_data not in KNN_DATA:
                bad(f"knn_data {self.knn_data!r} has no labelled train and test splits for the kNN monitor; use one "
                    f"of {list(KNN_DATA)}, or knn_every=0 for no monitor")
            if self.knn_images < 2:
                bad(f"knn_images must be at least 2 (half of them are test images), got {self.knn_images}")
        if not self.output.strip():
            bad("output is empty; name the run folder, e.g. output=runs/my_run")
        for folder in (Path(self.output), *Path(self.output).parents):
            try:
                is_file = folder.exists() and not folder.is_dir()
            except OSError as error:  # a name too long for the file system, say
                bad(f"output {self.output!r} cannot be a run folder ({error.strerror}); choose another output")
            if is_file:
                bad(f"output {self.output!r} cannot be a run folder: {folder} is a file; choose another output")

    @property
    def views_in_batch(self) -> int:
        per_image = sum(c for c, _, _ in self.crops) if self.method == "swav" else self.views_per_image
        return self.images_per_batch * per_image

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        if not isinstance(values, dict):
            raise TypeError(f"TrainConfig.from_dict needs a mapping of field: value, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(values) - known))
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, partial: bool = False):
        """The config in a YAML file (safe, alias bombs refused: :func:`read_yaml`); with ``partial``,
        just its checked fields."""
        try:
            text = Path(path).read_text()
        except UnicodeDecodeError:
            raise ValueError(f"config {path} is not a text (UTF-8) YAML file") from None
        values = read_yaml(text, f"config {path}") or {}
        if not isinstance(values, dict):
            raise ValueError(f"config {path}: a config is a mapping of field: value, got {type(values).__name__}")
        config = cls.from_dict(values)
        return {k: getattr(config, k) for k in values} if partial else config

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """``["lr=1e-3", "data_options={mode: cluttered}"]`` -> a new config (values parsed as YAML)."""
        values = self.to_dict()
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            if not sep:
                raise ValueError(f"override {assignment!r} is not key=value")
            values[key.strip()] = read_yaml(raw, f"override {assignment!r}")
        return TrainConfig.from_dict(values)


@functools.cache
def _field_types() -> dict:
    return typing.get_type_hints(TrainConfig)


_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
          dict: "a mapping {key: value}"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coerce(name: str, value, declared):
    """``value`` as field ``name``'s declared type (``int``, ``float | None``, ...), or TypeError.

    Floats take integers and the strings YAML 1.1 leaves unread (``1e-3``); strings take numbers and
    torch devices written as text (``output=2024``); nothing else is converted (``images_per_batch=2.5``
    and ``small_input=1`` are errors, not 2 and True)."""
    options = [kind for kind in typing.get_args(declared) if kind is not type(None)] or [declared]
    kind, optional = options[0], len(options) < len(typing.get_args(declared))
    if value is None and optional:
        return value
    if kind is float and (_is_int(value) or isinstance(value, str)):
        try:
            return float(value)
        except ValueError:
            pass
    if kind is str and (_is_int(value) or isinstance(value, (float, torch.device))):
        return str(value)
    if kind is list and isinstance(value, tuple):
        return list(value)
    if isinstance(value, kind) and (kind is not int or _is_int(value)):
        return value
    expected = _KINDS[kind] + (" or null" if optional else "")
    raise TypeError(f"TrainConfig: {name} must be {expected}, got {value!r} ({type(value).__name__})")


def _checked_crops(crops: list) -> list:
    """SwAV's crops as [[count, size, [scale_min, scale_max]], ...] (counts, sizes >= 1; 0 < min <= max <= 1)."""
    def number(x) -> bool:
        return (_is_int(x) or isinstance(x, float)) and math.isfinite(x)

    checked = []
    for i, crop in enumerate(crops):
        ok = (isinstance(crop, (list, tuple)) and len(crop) == 3 and _is_int(crop[0]) and _is_int(crop[1])
              and isinstance(crop[2], (list, tuple)) and len(crop[2]) == 2 and all(map(number, crop[2])))
        if not ok or crop[0] < 1 or crop[1] < 1 or not 0 < crop[2][0] <= crop[2][1] <= 1:
            raise ValueError(f"TrainConfig: crops[{i}] is {crop!r}; each crop is [count, size, [scale_min, scale_max]] "
                             f"with count, size >= 1 and 0 < scale_min <= scale_max <= 1, e.g. crops=[[2, 32, [0.14, 1.0]], "
                             f"[4, 16, [0.05, 0.14]]]")
        checked.append([crop[0], crop[1], [float(crop[2][0]), float(crop[2][1])]])
    return checked


KNN_DATA = ("embedded", "stl10", "fashion_mnist")  # the data sets with labelled train and test splits


def _check_data_set(field_name: str, name: str, options: dict) -> None:
    """Refuse a data set that s2r2lib.data does not know, or options its loader does not take."""
    if name not in datasets.DATASETS:
        raise ValueError(f"TrainConfig: unknown {field_name} {name!r}; expected one of {sorted(datasets.DATASETS)}")
    parameters = inspect.signature(datasets.DATASETS[name]).parameters
    accepted = sorted(set(parameters) - {"root", "split", "size"})
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"TrainConfig: data_options {unknown} are not options of data set {name!r}; it takes "
                         f"{accepted} (root, split and size are the fields data_root, split and image_size)")


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing alias bombs ("billion laughs"): a config holds a few dozen
    values, so a document with more than MAX_ALIASES aliases, a recursive alias, or more than MAX_VALUES
    values once its aliases are expanded is refused. Counted on the composed node graph, where aliased
    nodes are still shared, so a bomb is refused in microseconds instead of expanding it."""

    MAX_ALIASES, MAX_VALUES = 100, 10_000
    source = "YAML"

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases = getattr(self, "aliases", 0) + 1
            if self.aliases > self.MAX_ALIASES:
                raise ValueError(f"{self.source} uses more than {self.MAX_ALIASES} YAML aliases (*name); a config "
                                 "is a mapping of field: value, so write the values out")
        return super().compose_node(parent, index)

    def get_single_node(self):
        node = super().get_single_node()
        sizes: dict[int, int | None] = {}

        def expanded(node) -> int:  # values in the document once every alias is replaced by its anchor
            if id(node) in sizes:
                if sizes[id(node)] is None:
                    raise ValueError(f"{self.source} holds a recursive YAML alias; a config cannot contain itself")
                return sizes[id(node)]
            sizes[id(node)] = None
            children = ([] if isinstance(node, yaml.ScalarNode) else node.value if isinstance(node, yaml.SequenceNode)
                        else [part for pair in node.value for part in pair])
            sizes[id(node)] = total = 1 + sum(expanded(child) for child in children)
            if total > self.MAX_VALUES:
                raise ValueError(f"{self.source} expands to more than {self.MAX_VALUES} values through YAML "
                                 "aliases (an alias bomb?); a config is a mapping of field: value, so write "
                                 "the values out")
            return total

        if node is not None:
            expanded(node)
        return node


def read_yaml(text: str, source: str):
    """``text`` parsed as ``yaml.safe_load`` does (no tags that build objects), alias bombs refused with a
    ValueError naming ``source`` (e.g. "config run.yaml")."""
    loader = _ConfigLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _swav(large: int, small: int) -> list:
    return [[large, 96, [0.14, 1.0]], [small, 48, [0.05, 0.14]]]


_PAPER = {"data_root": None, "image_size": 96, "view_size": 96, "small_input": False, "precision": "bf16",
          "device": "cuda", "checkpoint_every": 1000, "recipe": "simclr"}
# Tables 1-2: (data, split) per training set, and #images x #views per model. SwAV's split of its
# views into 2 large (96 px) and the rest small (48 px) crops is ours: the paper gives only the total.
_TRAINING_SETS = {"stl10": ("stl10", "train+unlabeled"), "coco-train": ("coco", "train2017"),
                  "coco-val": ("coco", "val2017")}
_SETTINGS = {
    ("resnet18", "stl10"): {"simclr": (256, 2), "swav": (256, 8), "s2r2": (64, 20)},
    ("resnet18", "coco-train"): {"simclr": (256, 2), "swav": (128, 6), "s2r2": (64, 20)},
    ("resnet18", "coco-val"): {"simclr": (64, 2), "swav": (32, 40), "s2r2": (8, 10)},
    ("resnet50", "stl10"): {"simclr": (256, 2), "s2r2": (32, 20)},
    ("resnet50", "coco-train"): {"simclr": (256, 2), "s2r2": (32, 20)},
    ("resnet50", "coco-val"): {"simclr": (256, 2), "s2r2": (16, 20)},
}
PRESETS: dict[str, dict] = {
    f"paper-{arch}-{training}-{method}": {
        **_PAPER, "arch": arch, "method": method, "data": _TRAINING_SETS[training][0],
        "split": _TRAINING_SETS[training][1], "images_per_batch": images, "views_per_image": views,
        **({"crops": _swav(2, views - 2)} if method == "swav" else {}),
    }
    for (arch, training), methods in _SETTINGS.items() for method, (images, views) in methods.items()
}


def with_preset(preset: str | None, settings: dict) -> dict:
    """TrainConfig fields: the paper preset ``preset`` (a name of :data:`PRESETS`; None: none) with ``settings``
    over it. Warns, naming each field whose preset value a setting replaced (a preset's None is no value), so
    that a notebook's small defaults never pass for the paper's setting unseen."""
    if preset is None:
        return dict(settings)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}, or None")
    replaced = [f"{name}={settings[name]!r} (the preset's: {value!r})" for name, value in PRESETS[preset].items()
                if value is not None and name in settings and settings[name] != value]
    if replaced:
        warnings.warn(f"preset {preset}: these settings replace its values, so the run is not the paper's setting: "
                      f"{', '.join(replaced)}. Pass the preset's values instead to keep them (make reproduce "
                      f"PROFILE=paper does: s2r2lib.reproduce.PROFILES['paper'])", UserWarning, stacklevel=2)
    return {**PRESETS[preset], **settings}


# --- Optimisation -------------------------------------------------------------------------------------

class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017), as SwAV uses it.

    Each weight's step is scaled by trust * |w| / |grad + wd * w| (left unscaled where either norm is
    0); biases and norm layers (1-D parameters) are neither scaled nor decayed. One fused pass over
    all weights (``torch._foreach_*``), with no read of a norm back to the host.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, trust: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust=trust))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            weights = [i for i, p in enumerate(params) if p.ndim > 1]
            if weights:
                decayed = torch._foreach_add([grads[i] for i in weights], [params[i] for i in weights],
                                             alpha=group["weight_decay"])
                w_norm = torch.stack(torch._foreach_norm([params[i] for i in weights]))
                g_norm = torch.stack(torch._foreach_norm(decayed))
                scale = torch.where((w_norm > 0) & (g_norm > 0), group["trust"] * w_norm / g_norm,
                                    torch.ones_like(w_norm))
                torch._foreach_mul_(decayed, list(scale.unbind()))
                for i, grad in zip(weights, decayed):
                    grads[i] = grad
            buffers = [self.state[p].setdefault("momentum", torch.zeros_like(p)) for p in params]
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, grads)
            torch._foreach_add_(params, buffers, alpha=-group["lr"])


def _optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    """The config's optimiser; Adam is fused (one kernel for all weights) on CUDA."""
    if config.optimizer == "adam":
        fused = True if torch.device(config.device).type == "cuda" else None
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "lars":
        return LARS(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The step's learning rate: a linear warmup over the first ``warmup_steps`` steps, then fixed, or
    cosine decay from lr to 0 over the remaining steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    decay_steps = max(1, total_steps - config.warmup_steps)
    return 0.5 * config.lr * (1 + math.cos(math.pi * (step - config.warmup_steps) / decay_steps))


# --- Checkpoints --------------------------------------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` atomically (temporary file, fsync, rename): a kill leaves the previous one intact."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, config: TrainConfig | None = None, fingerprint: str | None = None) -> dict:
    """Load a checkpoint without running code from it (:func:`s2r2lib.probe.read_checkpoint`); check that it
    belongs to ``config`` and was trained on the data of ``fingerprint`` (:func:`data_fingerprint`)."""
    state = probe.read_checkpoint(path)
    if config is not None:
        mismatched = _config_difference(state["config"], config.to_dict())
        if mismatched:
            raise ValueError(f"checkpoint {path} belongs to another config; differing fields: {mismatched}")
    saved = state.get("data_fingerprint")
    if fingerprint is not None and saved is not None and saved != fingerprint:
        raise ValueError(f"checkpoint {path} was trained on other data: its data fingerprint is {saved}, the data "
                         f"now gives {fingerprint} (images x channels x height x width: hash). The data set changed "
                         f"since the run began (files added, removed or replaced); resume with the data it was "
                         f"trained on, or start a new run in another output")
    return state


def data_fingerprint(images: torch.Tensor, samples: int = 512) -> str:
    """A cheap identity of the training images (N, C, H, W): their shape and a hash of ``samples`` whole
    images evenly spaced through the set, first and last included, e.g. ``"39x3x40x40:5f0c2a..."``. A set
    that grew, shrank or was resized changes it; for STL10's 105k memory-mapped images it reads 14 MB."""
    positions = torch.linspace(0, len(images) - 1, min(len(images), samples)).round().long().unique()
    digest = hashlib.sha256(repr((tuple(images.shape), str(images.dtype))).encode())
    digest.update(images[positions].cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return f"{'x'.join(map(str, images.shape))}:{digest.hexdigest()[:16]}"


def _config_difference(saved: dict, current: dict) -> dict:
    keys = (set(saved) | set(current)) - set(RUNTIME_FIELDS)
    return {k: (saved.get(k), current.get(k)) for k in sorted(keys) if saved.get(k) != current.get(k)}


def _unusable(out: Path, error: OSError) -> ValueError:
    return ValueError(f"output {str(out)!r}: cannot create the run folder ({error.strerror}); choose another output")


def _prepare_output(config: TrainConfig, resume: bool, held: contextlib.ExitStack | None = None) -> Path:
    """Claim the run folder and write its config.yaml. Refuse a folder whose checkpoint belongs to another
    run (or to this one, without --resume), or that another process is training in (its lock is then held
    in ``held`` until the run ends); a folder without a checkpoint (a start that failed, or was killed
    before its first checkpoint) blocks nothing. Temporaries that a killed checkpoint write left behind are
    removed."""
    out = Path(config.output)
    saved = out / "config.yaml"
    try:
        has_checkpoint, has_config = (out / "checkpoint.pt").exists(), saved.exists()
    except OSError as error:  # a name too long for the file system, say
        raise _unusable(out, error) from None
    if has_checkpoint:
        if has_config:
            difference = _config_difference(read_yaml(saved.read_text(), str(saved)) or {}, config.to_dict())
            if difference:
                raise ValueError(f"output folder {out} holds another run (differing fields: {difference}); "
                                 f"choose another output")
        if not resume:
            raise ValueError(f"output folder {out} already holds this run; pass --resume to continue it, "
                             f"or choose another output")
    elif resume and not has_config:
        raise FileNotFoundError(f"nothing to resume in {out}: it has no config.yaml; start without --resume")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _unusable(out, error) from None
    if held is not None:  # rank 0 holds <out>/.training.lock while it trains, before anything here is touched
        try:
            held.enter_context(locked(out / "training", timeout=0))
        except TimeoutError:
            raise RuntimeError(f"another process is training in {out} (it holds {out / '.training.lock'}); wait "
                               f"until it has finished (this run then continues or reuses it), or choose another "
                               f"output") from None
    for stale in [*out.glob(".checkpoint*.pt.*.tmp"), *out.glob(".config.yaml.*.tmp")]:  # atomic_write_bytes's names
        stale.unlink(missing_ok=True)
    atomic_write_bytes(saved, yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
    return out


# --- The steps ----------------------------------------------------------------------------------------

def _step_seed(seed: int, *parts: int) -> int:
    return int.from_bytes(hashlib.sha256(repr((seed, *parts)).encode()).digest()[:8], "big") >> 1


def batch_indices(config: TrainConfig, step: int, num_images: int, rank: int = 0, world: int = 1,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """This process's image indices for ``step`` (on ``device``): a slice of the step's global batch, drawn
    without replacement from a permutation fixed by (seed, epoch). The permutation is drawn once per epoch
    and kept (read-only: the result is a view of it)."""
    per_epoch = num_images // config.images_per_batch
    epoch, position = divmod(step, per_epoch)
    order = _epoch_order(config.seed, epoch, num_images, torch.device(device))
    batch = order[position * config.images_per_batch:(position + 1) * config.images_per_batch]
    return batch.chunk(world)[rank]


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, num_images: int, device: torch.device) -> torch.Tensor:
    """The epoch's permutation of the images, on ``device`` (copied there once per epoch, not per step)."""
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(_step_seed(seed, epoch)))
    return order.to(device)


class Learner(nn.Module):
    """The encoder with its projection head and, for SwAV, the prototypes (a bias-free linear layer).

    ``forward`` takes a list of view batches (one per crop size) so that DDP sees one forward per step.
    """

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.model = build_model(config.arch, small_input=config.small_input, proj_dim=config.proj_dim)
        self.prototypes = nn.Linear(config.proj_dim, config.prototypes, bias=False) if config.method == "swav" else None
        self.channels_last, self.bf16 = config.channels_last, config.precision == "bf16"

    def forward(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """[views (n_i, 3, s_i, s_i)] -> [projections z (n_i, proj_dim)], float32."""
        out = []
        for views in batches:
            if self.channels_last:
                views = views.contiguous(memory_format=torch.channels_last)
            with torch.autocast(views.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out.append(self.model(views).float())
        return out


def view_ids(images: int, views_per_image: int, device: str | torch.device) -> torch.Tensor:
    """The image of each of ``images * views_per_image`` image-major views: (N,) int64. A ranking step's
    ``ids``, fixed by the config, so built once per run."""
    return torch.arange(images, device=device).repeat_interleave(views_per_image)


def _ranking_loss(config: TrainConfig, z: torch.Tensor, ids: torch.Tensor | BatchGroups) -> torch.Tensor:
    """The one call of the ranking losses: S2R2's smoothed AP (eqs. 1-3) or SimCLR's NT-Xent, on the
    global batch's projections ``z`` (N, D) and their images: ``ids`` (N,), or the :class:`BatchGroups`
    the engine validates once per run (then the loss makes no host sync)."""
    loss_fn = smooth_ap_loss if config.method == "s2r2" else nt_xent_loss
    return loss_fn(z, ids, config.tau)


def _ranking_step(engine, images, generator, config: TrainConfig, ids: torch.Tensor | BatchGroups | None = None,
                  compile_backend: str | None = None):
    """S2R2 or SimCLR: K views of each image, their projections gathered over processes, the loss.
    ``ids``: :func:`view_ids` of the global batch (built here when not given); ``compile_backend``: the
    views' (None: eager). Returns the loss, the projections (detached) and ids."""
    views, _ = make_views(images, config.views_per_image, config.view_size, generator=generator,
                          recipe=RECIPES[config.recipe], compile_backend=compile_backend)
    (z,) = engine([views])
    z = gather_with_grad(z)  # every process's views, image-major, in rank order
    if ids is None:
        ids = view_ids(len(z) // config.views_per_image, config.views_per_image, z.device)
    return _ranking_loss(config, z, ids), z.detach(), ids


def _swav_step(engine, prototypes: nn.Linear, images, generator, config: TrainConfig, queue: torch.Tensor | None,
               queue_full: bool = False, compile_backend: str | None = None):
    """SwAV: multi-crop views, prototype scores of every crop, codes from the large crops (and, once
    ``queue_full``, the queue), the swapped prediction loss. Pushes this step's code embeddings into
    ``queue``. Returns the loss, the two code crops' embeddings (detached) and their image ids."""
    with torch.no_grad():
        prototypes.weight.copy_(F.normalize(prototypes.weight, dim=1))
    crops = [(count, size, tuple(scale)) for count, size, scale in config.crops]
    groups = make_multicrop_views(images, crops, generator=generator, recipe=RECIPES[config.recipe],
                                  compile_backend=compile_backend)
    scores, code_z = [], []
    code_crops = config.crops[0][0]
    for (views, _), z in zip(groups, engine([views for views, _ in groups])):
        z = F.normalize(z, dim=1)
        count = len(views) // len(images)
        for crop in range(count):  # views are image-major: crop c of image b is row b * count + c
            crop_z = gather_with_grad(z[crop::count])
            scores.append(prototypes(crop_z))
            if len(code_z) < code_crops:
                code_z.append(crop_z.detach())
    queue_scores = None
    if queue is not None:
        batch = len(code_z[0])
        if queue_full:  # the queue joins Sinkhorn once it is full
            queue_scores = [prototypes(queue[c]).detach() for c in range(code_crops)]
        queue[:, batch:] = queue[:, :-batch].clone()
        queue[:, :batch] = torch.stack(code_z)
    loss = swav_loss(scores, code_crops=code_crops, temperature=config.tau, epsilon=config.epsilon,
                     queue_scores=queue_scores)
    ids = torch.arange(len(code_z[0]), device=code_z[0].device)
    return loss, torch.cat(code_z[:2]), torch.cat([ids, ids])


# --- The engine ---------------------------------------------------------------------------------------

class Engine:
    """One run's learner, optimiser, SwAV queue and batch structure, and its training step.

    ``images`` (N, 3, H, W) uint8 stay where they are (on the device when they fit there); each step
    picks its batch, draws its views on ``device`` and steps the optimiser, never reading a number back
    to the host. With ``world`` > 1 the learner runs under DDP (optionally with SyncBatchNorm);
    ``config.compile`` compiles it, and the views' renderer, with ``compile_backend``.
    """

    def __init__(self, config: TrainConfig, images: torch.Tensor, device: str | torch.device, rank: int = 0,
                 world: int = 1, compile_backend: str = "inductor"):
        check_sync_bn(config.sync_bn, world, device)
        device = resolve_device(device)
        self.config, self.images, self.device, self.rank, self.world = config, images, device, rank, world
        torch.manual_seed(config.seed)
        learner = with_sync_bn(Learner(config), config.sync_bn, world).to(device)
        if config.channels_last:
            learner = learner.to(memory_format=torch.channels_last)
        self.learner = learner
        self.optimizer = _optimizer(config, learner.parameters())
        self.queue = (torch.zeros(config.crops[0][0], config.queue_length, config.proj_dim, device=device)
                      if config.method == "swav" and config.queue_length else None)
        # The batch's structure is fixed by the config: validated once here, so no step re-checks it.
        self.ids = (ranking_groups(view_ids(config.images_per_batch, config.views_per_image, device))
                    if config.method != "swav" else None)
        self.steps_per_epoch = len(images) // config.images_per_batch
        module = learner
        if world > 1:
            module = nn.parallel.DistributedDataParallel(learner, device_ids=ddp_device_ids(device))
        if config.compile:
            module = torch.compile(module, backend=compile_backend)
        self.module = module
        self.views_backend = compile_backend if config.compile else None

    def step(self, step: int, total_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Train step ``step`` of ``total_steps``: returns the loss (detached), the projections the batch
        AP is measured on and their ids, all still on the device."""
        config = self.config
        lr = learning_rate(config, step, total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        index = batch_indices(config, step, len(self.images), self.rank, self.world, self.images.device)
        batch = self.images[index].to(self.device)
        generator = torch.Generator(self.device).manual_seed(_step_seed(config.seed, step, self.rank))
        if config.method == "swav":
            queue_full = step * config.images_per_batch >= config.queue_length  # step pushes of B so far
            loss, z, ids = _swav_step(self.module, self.learner.prototypes, batch, generator, config, self.queue,
                                      queue_full, self.views_backend)
        else:
            loss, z, ids = _ranking_step(self.module, batch, generator, config, self.ids, self.views_backend)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.learner.prototypes is not None and step < (self.steps_per_epoch if self.config.prototype_freeze_steps
                                                           is None else self.config.prototype_freeze_steps):
            self.learner.prototypes.weight.grad = None  # SwAV: prototypes frozen early (by default the first epoch)
        self.optimizer.step()
        return loss.detach(), z, ids

    def state(self, step: int, train_wall_s: float, data_fingerprint: str) -> dict:
        """A checkpoint's contents after ``step`` steps, with the training images' :func:`data_fingerprint`."""
        learner = self.learner
        return {
            "model": learner.model.state_dict(),
            "prototypes": learner.prototypes.state_dict() if learner.prototypes is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "queue": self.queue.cpu() if self.queue is not None else None,
            "rng": {"torch": torch.get_rng_state()},
            "step": step, "config": self.config.to_dict(),
            "num_images": len(self.images), "data_fingerprint": data_fingerprint, "train_wall_s": train_wall_s,
        }

    def load(self, state: dict) -> None:
        """Restore a checkpoint's weights, optimiser, queue and RNG (the step is the caller's)."""
        self.learner.model.load_state_dict(state["model"])
        if self.learner.prototypes is not None:
            self.learner.prototypes.load_state_dict(state["prototypes"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.queue is not None:
            self.queue.copy_(state["queue"])
        torch.set_rng_state(state["rng"]["torch"])


@contextlib.contextmanager
def backend_settings(config: TrainConfig, device: torch.device):
    """cuDNN autotuning on CUDA, or, with ``config.deterministic``, deterministic kernels (and cuBLAS's
    fixed workspace); the previous settings come back afterwards."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read before cuBLAS's first use
    torch.use_deterministic_algorithms(config.deterministic)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not config.deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]


LOG_FIELDS = ("step", "epoch", "loss", "lr", "views_per_s", "batch_ap", "knn_top1", "wall_s")


class _KnnMonitor:
    """kNN top-1 (k = 20, cosine) of the encoder's frozen features on a labelled split, during training."""

    def __init__(self, config: TrainConfig, device: torch.device):
        def split(name: str, n: int):
            images = datasets.load(config.knn_data, root=config.data_root, split=name, size=config.image_size)
            return datasets.subset(images, n, config.seed)

        self.train_set, self.test_set = split("train", config.knn_images), split("test", config.knn_images // 2)
        self.size, self.device = config.view_size, device

    def __call__(self, learner: Learner) -> float:
        features = [probe.extract_features(learner.model, s.images, self.size, device=self.device)
                    for s in (self.train_set, self.test_set)]
        learner.train()  # extract_features put the encoder in eval mode
        return probe.knn_top1(features[0], self.train_set.labels, features[1], self.test_set.labels, k=20)


def _read_losses(window: list[tuple[int, float, torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[float]:
    """The losses of the steps (step, lr, loss, z, ids) since the last read, in one read from the device
    (which waits for those steps to finish). Raises FloatingPointError at a non-finite loss."""
    losses = torch.stack([loss for _, _, loss, _, _ in window]).tolist()
    for (step, _, _, _, _), value in zip(window, losses):
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at step {step} (the first non-finite one of steps "
                                     f"{window[0][0]}-{window[-1][0]}, read together); lower lr or use precision=fp32")
    return losses


def _batch_aps(window: list[tuple[int, float, torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[float]:
    """The exact AP of each step's batch (its projections z and ids) since the last read; the values the
    losses skip checking in the hot loop (NaN, inf, all-zero rows) are checked here, once per read."""
    for _, _, _, z, _ in window:
        check_embeddings(z, "training projections")
    return torch.stack([average_precision(z, ids) for _, _, _, z, ids in window]).tolist()


def _progress_bar(config: TrainConfig, rank: int, start: int, total_steps: int) -> tqdm:
    """The steps from ``start``, with a bar on rank 0 when ``config.progress`` (one bar per run, not per GPU)."""
    return tqdm(range(start, total_steps), initial=start, total=total_steps, disable=not config.progress or rank > 0,
                desc=f"{config.method} {config.arch}", unit="step")


def train(config: TrainConfig, resume: bool | str = False) -> dict:
    """Train as ``config`` says; write checkpoints and a per-step log under ``config.output``.

    ``resume``: False starts a new run (refusing a folder that holds one), True continues the run in
    ``config.output``, ``"auto"`` continues it if there is one and starts it otherwise (notebooks: rerunning
    a cell picks up where the run stopped, and a finished run is not trained again).

    The engine reads nothing back from the device inside a step: losses and batch APs stay there and are
    read every ``log_every`` steps (and before a checkpoint or a kNN monitor), so a log row's ``views_per_s``
    and ``wall_s`` are the means over the steps read together, and a non-finite loss is caught at the
    next read (before any checkpoint holds it).

    Returns a summary: steps, final loss, mean views/s, wall time, and the checkpoint path.
    """
    config = config.resolved()
    if resume == "auto":
        resume = (Path(config.output) / "config.yaml").exists()
    rank, world, device = setup(config.device)
    if config.images_per_batch % world:
        raise ValueError(f"images_per_batch {config.images_per_batch} must divide among {world} processes")
    with backend_settings(config, device), contextlib.ExitStack() as held:
        return _train(config, resume, rank, world, device, held)


def _train(config: TrainConfig, resume: bool, rank: int, world: int, device: torch.device,
           held: contextlib.ExitStack) -> dict:
    with rank_zero_first():  # rank 0 builds a data cache, the others then read it
        images = datasets.load(config.data, root=config.data_root, split=config.split, size=config.image_size,
                               **config.data_options).images
    if len(images) < config.images_per_batch:
        raise ValueError(f"{config.data} has {len(images)} images, fewer than images_per_batch {config.images_per_batch}")
    fingerprint = data_fingerprint(images)
    total_steps = config.max_steps or config.epochs * (len(images) // config.images_per_batch)
    late = [step for step in config.keep_steps if step > total_steps]
    if late:
        raise ValueError(f"keep_steps {late} come after the run's last step, {total_steps}: no checkpoint would be "
                         f"kept there; keep steps up to {total_steps}, or train longer (max_steps or epochs)")
    out = _prepare_output(config, resume, held) if rank == 0 else Path(config.output)  # once the data is there
    if world > 1:
        dist.barrier()
    if device.type == "cuda" and images.numel() < 0.5 * torch.cuda.mem_get_info(device)[0]:
        images = images.to(device)  # the batched views then never wait on the CPU

    engine = Engine(config, images, device, rank, world)
    checkpoint = out / "checkpoint.pt"
    start, trained_s = 0, 0.0  # trained_s: seconds of training so far, across resumptions
    if resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, config, fingerprint)
        engine.load(state)
        start, trained_s = state["step"], state["train_wall_s"]

    log = _open_log(out / "log.csv", start) if rank == 0 else None
    monitor = _KnnMonitor(config, device) if config.knn_every and rank == 0 else None
    bar = _progress_bar(config, rank, start, total_steps)
    began, loss_value = time.perf_counter(), float("nan")
    window, window_began = [], time.perf_counter()  # steps not yet read from the device
    engine.module.train()
    for step in bar:
        loss, z, ids = engine.step(step, total_steps)
        window.append((step, learning_rate(config, step, total_steps), loss, z, ids))
        done = step + 1
        keep = done in config.keep_steps
        save = rank == 0 and (done % config.checkpoint_every == 0 or done == total_steps or keep)
        knn_due = monitor is not None and (done % config.knn_every == 0 or done == total_steps)
        if not (done % config.log_every == 0 or done == total_steps or save or knn_due):
            continue

        losses = _read_losses(window)
        elapsed = time.perf_counter() - window_began
        trained_s += elapsed
        per_step = elapsed / len(window)
        loss_value = losses[-1]
        knn = f"{monitor(engine.learner):.4f}" if knn_due else ""
        if knn:
            bar.write(f"step {done}: kNN top-1 {knn}")
        if log is not None:
            for (row_step, lr, _, _, _), row_loss, row_ap in zip(window, losses, _batch_aps(window)):
                log[1].writerow({"step": row_step, "epoch": row_step // engine.steps_per_epoch, "lr": f"{lr:.6g}",
                                 "loss": f"{row_loss:.6f}", "batch_ap": f"{row_ap:.4f}",
                                 "knn_top1": knn if row_step == step else "",
                                 "views_per_s": f"{config.views_in_batch / per_step:.1f}", "wall_s": f"{per_step:.3f}"})
            log[0].flush()
        bar.set_postfix(loss=f"{loss_value:.4f}", views_s=f"{config.views_in_batch / per_step:.0f}")
        if save:
            state = engine.state(done, trained_s, fingerprint)
            save_checkpoint(checkpoint, state)
            if keep:  # a snapshot for probing the run part-way (notebook 06)
                save_checkpoint(out / f"checkpoint-{done}.pt", state)
        window, window_began = [], time.perf_counter()  # logging, kNN and checkpoints are not training time
    if log is not None:
        log[0].close()
    wall = time.perf_counter() - began
    views_seen = (total_steps - start) * config.views_in_batch
    return {"steps": total_steps, "resumed_from": start, "loss": loss_value, "wall_s": wall,
            "epochs": total_steps * config.images_per_batch / len(images), "train_wall_s": trained_s,
            "views_per_s": views_seen / wall if wall > 0 else float("nan"), "checkpoint": str(checkpoint),
            "log": str(out / "log.csv")}


def _open_log(path: Path, start: int):
    """The per-step CSV log, opened for appending after dropping rows past ``start`` (a resumed run
    redoes them) and a last row a kill cut short. The kept rows are rewritten atomically: a kill while a
    run resumes leaves the old log whole."""
    rows = []
    if path.exists() and start > 0:
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):  # the row being written when the run was killed
            lines.pop()
        rows = [row for row in csv.DictReader(lines) if int(row["step"]) < start]
    kept = io.StringIO()
    writer = csv.DictWriter(kept, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, kept.getvalue().encode())
    handle = path.open("a", newline="")
    return handle, csv.DictWriter(handle, fieldnames=LOG_FIELDS, lineterminator="\n")


def read_log(run: str | os.PathLike) -> list[dict[str, float]]:
    """The per-step log of a run folder, as numbers (NaN where a step has no value, e.g. knn_top1)."""
    with (Path(run) / "log.csv").open(newline="") as handle:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(handle)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2r2lib.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="a YAML file of TrainConfig fields")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="the paper's setting of a Table 1-2 row")
    parser.add_argument("--resume", action="store_true", help="continue the run in `output` from its checkpoint")
    parser.add_argument("overrides", nargs="*", help="key=value, parsed as YAML (e.g. lr=1e-3 epochs=10)")
    args = parser.parse_args(argv)
    values = dict(PRESETS.get(args.preset, {}))
    try:  # a config error is a usage error: its message, without a traceback
        if args.config:
            values.update(TrainConfig.from_yaml(args.config, partial=True))
        config = TrainConfig.from_dict(values).with_overrides(args.overrides).resolved()
    except (ValueError, TypeError, OSError, yaml.YAMLError) as error:
        parser.error(str(error))
    summary = train(config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(yaml.safe_dump(summary, sort_keys=False).strip())
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
