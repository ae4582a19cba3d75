"""Encoders and the projection head: views in [0, 1] -> representation h -> projection z.

S2R2 (Sec. 4) trains ResNet18 and ResNet50 [9] from scratch at 96x96 and, "following the best practice
in SSRL [4]", puts a non-linear projection on top of the representation; the loss sees z, the linear
probe sees h. Input normalisation lives inside the encoder, so views from ``s2r2lib.views`` (values
in [0, 1]) go straight in and the probe later sees the same pipeline.

    >>> model = build_model("resnet18")                 # 96-px views; small_input=True for 32 px
    >>> z = model(views)                                # (N, 128) for the loss
    >>> h = model.representation(views)                 # (N, 512) for the linear probe
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

ARCHS = ("narrow_cnn", "resnet18", "resnet50")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NarrowCNN(nn.Module):
    """A small CNN for CPU-sized studies: 32-64-128-256 channels, conv-BN-ReLU, stride-2 stages, GAP -> 256.

    The stem keeps the resolution when ``small_input`` (32-px views) and halves it otherwise.
    x (N, 3, H, W) -> (N, 256).
    """

    feat_dim = 256

    def __init__(self, small_input: bool = False):
        super().__init__()
        widths = (32, 64, 128, 256)
        layers = [_conv_bn_relu(3, widths[0], stride=1 if small_input else 2)]
        layers += [_conv_bn_relu(c_in, c_out, stride=2) for c_in, c_out in zip(widths, widths[1:])]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(self.features(x)).flatten(1)


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    """Per-channel normalisation, then a backbone: images (N, 3, H, W) in [0, 1] -> representation h (N, feat_dim)."""

    def __init__(self, backbone: nn.Module, feat_dim: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.backbone, self.feat_dim = backbone, feat_dim
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)


class S2R2Model(nn.Module):
    """Encoder and SimCLR projection head (Linear-BN-ReLU-Linear): images -> z (N, proj_dim)."""

    def __init__(self, encoder: Encoder, proj_dim: int = 128, proj_hidden: int | None = None):
        super().__init__()
        hidden = proj_hidden or encoder.feat_dim
        self.encoder, self.feat_dim = encoder, encoder.feat_dim
        self.projector = nn.Sequential(nn.Linear(encoder.feat_dim, hidden), nn.BatchNorm1d(hidden),
                                       nn.ReLU(inplace=True), nn.Linear(hidden, proj_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3, H, W) in [0, 1] -> projection z (N, proj_dim), the input of the S2R2 loss."""
        return self.projector(self.encoder(x))

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3, H, W) in [0, 1] -> representation h (N, feat_dim), what the linear probe sees."""
        return self.encoder(x)


def build_model(arch: str = "resnet18", small_input: bool = False, proj_dim: int = 128,
                proj_hidden: int | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> S2R2Model:
    """A randomly initialised encoder (never a weight download) with its projection head.

    arch: one of ARCHS; feat_dim 256 (narrow_cnn), 512 (resnet18), 2048 (resnet50).
    small_input: a stem that keeps the resolution, for 32-px views (ResNets: 3x3 stride-1 conv and no
    max-pool, as CIFAR ResNets). proj_hidden defaults to feat_dim, as in SimCLR.
    mean, std: per-channel statistics the encoder normalises with (default ImageNet's).
    """
    _check_width("proj_dim", proj_dim)
    if proj_hidden is not None:
        _check_width("proj_hidden", proj_hidden)
    if not isinstance(small_input, bool):
        raise TypeError(f"small_input must be True or False, got {type(small_input).__name__} {small_input!r}")
    for name, values in (("mean", mean), ("std", std)):
        if len(values) != 3 or not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values):
            raise ValueError(f"{name} must be 3 finite numbers, one per RGB channel; got {values!r}")
    if min(std) <= 0:
        raise ValueError(f"std must be positive for every channel (the encoder divides by it); got {std!r}")
    if arch == "narrow_cnn":
        backbone, feat_dim = NarrowCNN(small_input), NarrowCNN.feat_dim
    elif arch in ("resnet18", "resnet50"):
        import torchvision.models  # here, not at the top: it takes 1.5 s, and a narrow_cnn run never needs it

        backbone = getattr(torchvision.models, arch)(weights=None)
        feat_dim = backbone.fc.in_features
        backbone.fc = nn.Identity()
        if small_input:
            backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's
            backbone.maxpool = nn.Identity()
    else:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    return S2R2Model(Encoder(backbone, feat_dim, mean, std), proj_dim, proj_hidden)


def _check_width(name: str, value) -> None:
    """A layer width: a whole number >= 1 (0 would make every embedding empty and the loss constant)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number of units (an int >= 1), got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1 (the width of the projection head's layer); got {value}")
