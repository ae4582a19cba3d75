"""One training engine for S2R2, SimCLR and SwAV: a config, a step per method, checkpoints that resume
everything, and torchrun + DDP past one process.

    python -m s2r2lib.train --config run.yaml [--preset NAME] [--resume] [key=value ...]
    torchrun --nproc-per-node 4 -m s2r2lib.train --config run.yaml

Methods as the paper trains them (Sec. 3):
  s2r2    smooth_ap_loss over the B*K views; Adam, lr 1e-4, fixed.
  simclr  NT-Xent (K = 2 in the paper); Adam, lr 3e-4 with cosine decay.
  swav    multi-crop, prototypes, Sinkhorn-Knopp codes, prototypes frozen in the first epoch, optional
          queue; LARS, lr 1 with cosine decay.

Exact resume. Each step's batch is drawn from a permutation fixed by (seed, epoch), and its views from a
generator seeded by (seed, step, rank); the learning rate is a function of the step. A checkpoint holds
the model, prototypes, optimiser, SwAV queue, RNG states and the step, so a run killed at any point and
resumed from its last checkpoint ends with the same weights as one never stopped (bitwise on the CPU).
Checkpoints are written atomically and loaded with ``torch.load(weights_only=True)``; configs with
``yaml.safe_load``: nothing a file holds is ever run.

Distributed. Under torchrun, each process takes B / world of the images of a step; the embeddings of all
processes are gathered with their gradients (:func:`gather_with_grad`), so the ranking, NT-Xent and
Sinkhorn see the global batch, and DDP's gradient averaging then yields the global batch's gradient.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import math
import os
import sys
import time
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
from .losses import average_precision, nt_xent_loss, smooth_ap_loss, swav_loss
from .models import ARCHS, build_model
from .results import atomic_write_bytes
from .views import make_multicrop_views, make_views

METHODS = ("s2r2", "simclr", "swav")
# The paper's optimiser settings (Sec. 3); tau is eq. 3's for S2R2, the softmax temperature otherwise.
METHOD_DEFAULTS = {
    "s2r2": {"optimizer": "adam", "lr": 1e-4, "schedule": "constant", "tau": 0.01},
    "simclr": {"optimizer": "adam", "lr": 3e-4, "schedule": "cosine", "tau": 0.1},
    "swav": {"optimizer": "lars", "lr": 1.0, "schedule": "cosine", "tau": 0.1},
}
# Fields that may change between a run and its resumption; every other field must match the checkpoint.
RUNTIME_FIELDS = ("output", "device", "progress", "checkpoint_every", "compile", "keep_steps", "knn_every")


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``<output>/config.yaml`` beside it."""

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
    device: str = "cpu"
    precision: str = "fp32"             # fp32 or bf16 (autocast)
    channels_last: bool = True
    compile: bool = False
    checkpoint_every: int = 50          # steps
    keep_steps: list = field(default_factory=list)  # also keep checkpoint-<step>.pt after these steps
    progress: bool = True
    knn_every: int = 0                  # steps between kNN monitors (0: none); logged as knn_top1
    knn_data: str = "embedded"          # the labelled data set the monitor probes (train and test splits)
    knn_images: int = 1000              # training images the monitor uses (half as many test images)

    def resolved(self) -> TrainConfig:
        """This config with the method's defaults filled in, validated."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        filled = {k: v for k, v in METHOD_DEFAULTS[self.method].items() if getattr(self, k) is None}
        config = dataclasses.replace(self, **filled)
        config.validate()
        return config

    def validate(self) -> None:
        def bad(message: str):
            raise ValueError(f"TrainConfig: {message}")

        if self.arch not in ARCHS:
            bad(f"unknown arch {self.arch!r}; expected one of {ARCHS}")
        if self.images_per_batch < 2:
            bad(f"images_per_batch (B) must be at least 2 so that every view has negatives; got {self.images_per_batch}")
        if self.method != "swav" and self.views_per_image < 2:
            bad(f"views_per_image (K) must be at least 2 so that every view has a positive; got {self.views_per_image}")
        if self.view_size > self.image_size:
            bad(f"view_size {self.view_size} is larger than image_size {self.image_size}; views are crops")
        if self.method == "swav":
            if sum(count for count, _, _ in self.crops[:1]) < 2 or len(self.crops) < 1:
                bad(f"swav needs at least 2 large crops first in `crops`, got {self.crops}")
            for count, size, scale in self.crops:
                if size > self.image_size or not 0 < scale[0] <= scale[1] <= 1:
                    bad(f"swav crop {[count, size, scale]} does not fit {self.image_size}-px images "
                        f"(size <= image_size, 0 < scale_min <= scale_max <= 1)")
        if self.optimizer not in (None, "adam", "lars", "sgd"):
            bad(f"unknown optimizer {self.optimizer!r}; expected adam, lars or sgd")
        if self.schedule not in (None, "constant", "cosine"):
            bad(f"unknown schedule {self.schedule!r}; expected constant or cosine")
        if self.precision not in ("fp32", "bf16"):
            bad(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.method == "swav" and self.queue_length and self.queue_length < self.images_per_batch:
            bad(f"queue_length {self.queue_length} must be 0 or at least images_per_batch {self.images_per_batch}")
        if self.epochs < 1 or (self.max_steps is not None and self.max_steps < 1):
            bad("epochs and max_steps must be positive")

    @property
    def views_in_batch(self) -> int:
        per_image = sum(c for c, _, _ in self.crops) if self.method == "swav" else self.views_per_image
        return self.images_per_batch * per_image

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, partial: bool = False):
        """The config in a YAML file (``yaml.safe_load``); with ``partial``, just its checked fields."""
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config is a mapping of field: value, got {type(values).__name__}")
        config = cls.from_dict(values)
        return values if partial else config

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """``["lr=1e-3", "data_options={mode: cluttered}"]`` -> a new config (values parsed as YAML)."""
        values = self.to_dict()
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            if not sep:
                raise ValueError(f"override {assignment!r} is not key=value")
            values[key.strip()] = yaml.safe_load(raw)
        return TrainConfig.from_dict(values)


def _swav(large: int, small: int) -> list:
    return [[large, 96, [0.14, 1.0]], [small, 48, [0.05, 0.14]]]


_PAPER = {"data_root": None, "image_size": 96, "view_size": 96, "small_input": False, "precision": "bf16",
          "device": "cuda", "checkpoint_every": 1000}
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


# --- Distributed --------------------------------------------------------------------------------------

class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient and returns this process's slice."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (n, ...) of every process in rank order, keeping gradients; ``x`` alone when
    not distributed. Each process then computes the loss of the global batch; with DDP's averaging
    the parameters get exactly the global batch's gradient (not 1 / world of it)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def _init_distributed(config: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; (0, 1, config.device) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device(config.device)
    cuda = torch.device(config.device).type == "cuda"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if config.images_per_batch % world:
        raise ValueError(f"images_per_batch {config.images_per_batch} must divide among {world} processes")
    return dist.get_rank(), world, torch.device(f"cuda:{local}" if cuda else "cpu")


# --- Optimisation -------------------------------------------------------------------------------------

class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017), as SwAV uses it.

    Each weight's step is scaled by trust * |w| / |grad + wd * w|; biases and norm layers (1-D
    parameters) are neither scaled nor decayed.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, trust: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust=trust))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = p.norm(), grad.norm()
                    if w_norm > 0 and g_norm > 0:
                        grad = grad.mul(group["trust"] * w_norm / g_norm)
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])


def _optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
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


def load_checkpoint(path: str | os.PathLike, config: TrainConfig | None = None) -> dict:
    """Load a checkpoint without running code from it (``weights_only=True``); check it belongs to ``config``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; start without --resume, or point output at the run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated zip, a pickle with code in it, random bytes
        raise ValueError(f"checkpoint {path} is corrupt, truncated or not a weights-only checkpoint "
                         f"({type(error).__name__}: {str(error)[:200]})") from None
    if config is not None:
        mismatched = _config_difference(state.get("config", {}), config.to_dict())
        if mismatched:
            raise ValueError(f"checkpoint {path} belongs to another config; differing fields: {mismatched}")
    return state


def _config_difference(saved: dict, current: dict) -> dict:
    keys = (set(saved) | set(current)) - set(RUNTIME_FIELDS)
    return {k: (saved.get(k), current.get(k)) for k in sorted(keys) if saved.get(k) != current.get(k)}


def _prepare_output(config: TrainConfig, resume: bool) -> Path:
    """Create the run folder, or refuse one that holds another run (or this one, without --resume)."""
    out = Path(config.output)
    saved = out / "config.yaml"
    if saved.exists():
        difference = _config_difference(yaml.safe_load(saved.read_text()) or {}, config.to_dict())
        if difference:
            raise ValueError(f"output folder {out} holds another run (differing fields: {difference}); "
                             f"choose another output")
        if not resume:
            raise ValueError(f"output folder {out} already holds this run; pass --resume to continue it, "
                             f"or choose another output")
    elif resume:
        raise FileNotFoundError(f"nothing to resume in {out}: it has no config.yaml")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(saved, yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
    return out


# --- The steps ----------------------------------------------------------------------------------------

def _step_seed(seed: int, *parts: int) -> int:
    return int.from_bytes(hashlib.sha256(repr((seed, *parts)).encode()).digest()[:8], "big") >> 1


def batch_indices(config: TrainConfig, step: int, num_images: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This process's image indices for ``step``: a slice of the step's global batch, drawn without
    replacement from a permutation fixed by (seed, epoch)."""
    per_epoch = num_images // config.images_per_batch
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(_step_seed(config.seed, epoch)))
    batch = order[position * config.images_per_batch:(position + 1) * config.images_per_batch]
    return batch.chunk(world)[rank]


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


def _ranking_step(engine, images, generator, config: TrainConfig):
    views, _ = make_views(images, config.views_per_image, config.view_size, generator=generator)
    (z,) = engine([views])
    z = gather_with_grad(z)  # every process's views, image-major, in rank order
    ids = torch.arange(len(z) // config.views_per_image, device=z.device).repeat_interleave(config.views_per_image)
    loss_fn = smooth_ap_loss if config.method == "s2r2" else nt_xent_loss
    return loss_fn(z, ids, config.tau), z.detach(), ids


def _swav_step(engine, prototypes: nn.Linear, images, generator, config: TrainConfig, queue: torch.Tensor | None):
    with torch.no_grad():
        prototypes.weight.copy_(F.normalize(prototypes.weight, dim=1))
    crops = [(count, size, tuple(scale)) for count, size, scale in config.crops]
    groups = make_multicrop_views(images, crops, generator=generator)
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
        if bool((queue != 0).any(dim=-1).all()):  # the queue joins Sinkhorn once it is full
            queue_scores = [prototypes(queue[c]).detach() for c in range(code_crops)]
        queue[:, batch:] = queue[:, :-batch].clone()
        queue[:, :batch] = torch.stack(code_z)
    loss = swav_loss(scores, code_crops=code_crops, temperature=config.tau, epsilon=config.epsilon,
                     queue_scores=queue_scores)
    ids = torch.arange(len(code_z[0]), device=code_z[0].device)
    return loss, torch.cat(code_z[:2]), torch.cat([ids, ids])


# --- The engine ---------------------------------------------------------------------------------------

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


def train(config: TrainConfig, resume: bool | str = False) -> dict:
    """Train as ``config`` says; write checkpoints and a per-step log under ``config.output``.

    ``resume``: False starts a new run (refusing a folder that holds one), True continues the run in
    ``config.output``, ``"auto"`` continues it if there is one and starts it otherwise (notebooks: rerunning
    a cell picks up where the run stopped, and a finished run is not trained again).

    Returns a summary: steps, final loss, mean views/s, wall time, and the checkpoint path.
    """
    config = config.resolved()
    if resume == "auto":
        resume = (Path(config.output) / "config.yaml").exists()
    rank, world, device = _init_distributed(config)
    out = _prepare_output(config, resume) if rank == 0 else Path(config.output)
    if world > 1:
        dist.barrier()

    images = datasets.load(config.data, root=config.data_root, split=config.split, size=config.image_size,
                           **config.data_options).images
    if len(images) < config.images_per_batch:
        raise ValueError(f"{config.data} has {len(images)} images, fewer than images_per_batch {config.images_per_batch}")
    if device.type == "cuda" and images.numel() < 0.5 * torch.cuda.mem_get_info(device)[0]:
        images = images.to(device)  # the batched views then never wait on the CPU

    torch.manual_seed(config.seed)
    learner = Learner(config).to(device)
    if config.channels_last:
        learner = learner.to(memory_format=torch.channels_last)
    optimizer = _optimizer(config, learner.parameters())
    queue = (torch.zeros(config.crops[0][0], config.queue_length, config.proj_dim, device=device)
             if config.method == "swav" and config.queue_length else None)

    steps_per_epoch = len(images) // config.images_per_batch
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    checkpoint = out / "checkpoint.pt"
    start, trained_s = 0, 0.0  # trained_s: seconds of training so far, across resumptions
    if resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, config)
        learner.model.load_state_dict(state["model"])
        if learner.prototypes is not None:
            learner.prototypes.load_state_dict(state["prototypes"])
        optimizer.load_state_dict(state["optimizer"])
        if queue is not None:
            queue.copy_(state["queue"])
        torch.set_rng_state(state["rng"]["torch"])
        start, trained_s = state["step"], state["train_wall_s"]

    engine = learner
    if world > 1:
        engine = nn.parallel.DistributedDataParallel(learner, device_ids=[device] if device.type == "cuda" else None)
    if config.compile:
        engine = torch.compile(engine)
    log = _open_log(out / "log.csv", start) if rank == 0 else None
    monitor = _KnnMonitor(config, device) if config.knn_every and rank == 0 else None
    bar = tqdm(range(start, total_steps), initial=start, total=total_steps, disable=not config.progress or rank > 0,
               desc=f"{config.method} {config.arch}", unit="step")
    began, views_seen, loss_value = time.perf_counter(), 0, float("nan")
    engine.train()
    for step in bar:
        tick = time.perf_counter()
        lr = learning_rate(config, step, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = images[batch_indices(config, step, len(images), rank, world).to(images.device)].to(device)
        generator = torch.Generator(device).manual_seed(_step_seed(config.seed, step, rank))
        if config.method == "swav":
            loss, z, ids = _swav_step(engine, learner.prototypes, batch, generator, config, queue)
        else:
            loss, z, ids = _ranking_step(engine, batch, generator, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if learner.prototypes is not None and step < (steps_per_epoch if config.prototype_freeze_steps is None
                                                       else config.prototype_freeze_steps):
            learner.prototypes.weight.grad = None  # SwAV: prototypes frozen early (by default the first epoch)
        optimizer.step()

        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss is {loss_value} at step {step}; lower lr or use precision=fp32")
        elapsed = time.perf_counter() - tick
        trained_s += elapsed
        views_per_s = config.views_in_batch / elapsed
        views_seen += config.views_in_batch
        knn = ""
        if monitor is not None and ((step + 1) % config.knn_every == 0 or step + 1 == total_steps):
            knn = f"{monitor(learner):.4f}"
            bar.write(f"step {step + 1}: kNN top-1 {knn}")
        if log is not None:
            log[1].writerow({"step": step, "epoch": step // steps_per_epoch, "loss": f"{loss_value:.6f}", "knn_top1": knn,
                             "lr": f"{lr:.6g}", "views_per_s": f"{views_per_s:.1f}",
                             "batch_ap": f"{average_precision(z, ids).item():.4f}", "wall_s": f"{elapsed:.3f}"})
            log[0].flush()
        bar.set_postfix(loss=f"{loss_value:.4f}", views_s=f"{views_per_s:.0f}")
        keep = step + 1 in config.keep_steps
        if rank == 0 and ((step + 1) % config.checkpoint_every == 0 or step + 1 == total_steps or keep):
            state = {
                "model": learner.model.state_dict(),
                "prototypes": learner.prototypes.state_dict() if learner.prototypes is not None else None,
                "optimizer": optimizer.state_dict(),
                "queue": queue.cpu() if queue is not None else None,
                "rng": {"torch": torch.get_rng_state()},
                "step": step + 1, "config": config.to_dict(),
                "num_images": len(images), "train_wall_s": trained_s,
            }
            save_checkpoint(checkpoint, state)
            if keep:  # a snapshot for probing the run part-way (notebook 06)
                save_checkpoint(out / f"checkpoint-{step + 1}.pt", state)
    if log is not None:
        log[0].close()
    wall = time.perf_counter() - began
    return {"steps": total_steps, "resumed_from": start, "loss": loss_value, "wall_s": wall,
            "epochs": total_steps * config.images_per_batch / len(images), "train_wall_s": trained_s,
            "views_per_s": views_seen / wall if wall > 0 else float("nan"), "checkpoint": str(checkpoint),
            "log": str(out / "log.csv")}


def _open_log(path: Path, start: int):
    """The per-step CSV log, opened for appending after dropping rows past ``start`` (a resumed run
    redoes them)."""
    rows = []
    if path.exists() and start > 0:
        with path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["step"]) < start]
    handle = path.open("w", newline="")
    writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return handle, writer


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
    if args.config:
        values.update(TrainConfig.from_yaml(args.config, partial=True))
    config = TrainConfig.from_dict(values).with_overrides(args.overrides)
    summary = train(config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(yaml.safe_dump(summary, sort_keys=False).strip())
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
