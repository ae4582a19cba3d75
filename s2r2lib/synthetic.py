"""The embedded default data: procedural images of ten shape classes, drawn with torch, no download.

Two modes mirror the paper's contrast between curated and cluttered pre-training data:

  object     one dominant object per image, centred with a small jitter, 55-80% of the side
             (like STL10); labelled, balanced, the splits the linear probe trains and tests on.
  cluttered  3 to 6 objects per image at random places and at a third of the object-centric
             scale, overlapping freely (like MS-COCO); for pre-training only.

A class is a shape or a texture, never a colour: disk, ring, square, frame, triangle, cross, star,
crescent, stripes (a striped disk) and checker (a chequered disk). Every image draws its own
object and background colours, a background of a two-colour gradient plus smooth noise, its
position, scale, aspect ratio, rotation, stripe frequency and phase, and pixel noise. Each class is
rescaled so that all cover the same expected area, so neither the colour nor the amount of
foreground tells the class. Measured with logistic regression, 4000 training and 2000 test images
at 40 px: on per-channel mean and standard deviation 10% (chance); on raw pixels about 15% (it
fits the training set, nothing general: position, rotation and colour must be factored out first,
which is the encoder's job); a small three-layer CNN trained with labels on 5000 images
reaches about 50% after 6 epochs and is still rising.

What it can show: whether an encoder learns shape and texture that survive colour jitter, crops
and rotation; how pre-training on cluttered scenes transfers to object-centric probing, the
paper's STL10-versus-COCO comparison, in minutes on a CPU. What it cannot show: anything about
natural-image statistics, semantic categories, or the paper's absolute accuracies; at 40 px the
textures of small cluttered objects alias, and the classes are far easier to separate than
STL10's. Images are identical for the same (n, size, mode, seed) on one torch version; another
torch version may draw different random numbers.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

CLASSES = ("disk", "ring", "square", "frame", "triangle", "cross", "star", "crescent", "stripes",
           "checker")
MODES = ("object", "cluttered")
_CHUNK = 2048  # images drawn at once; bounds the float intermediates to a few tens of MB


def _box(u: torch.Tensor, v: torch.Tensor, half_u: float, half_v: float) -> torch.Tensor:
    """Signed distance to an axis-aligned box of half-sides (half_u, half_v); negative inside."""
    qu, qv = u.abs() - half_u, v.abs() - half_v
    outside = torch.sqrt(qu.clamp(min=0) ** 2 + qv.clamp(min=0) ** 2)
    return outside + torch.maximum(qu, qv).clamp(max=0)


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance to an equilateral triangle, vertices (+-1, -1/sqrt(3)), (0, 2/sqrt(3)) (I. Quilez)."""
    k = math.sqrt(3.0)
    pu, pv = u.abs() - 1.0, v + 1.0 / k
    fold = pu + k * pv > 0
    pu, pv = torch.where(fold, (pu - k * pv) / 2, pu), torch.where(fold, (-k * pu - pv) / 2, pv)
    pu = pu - pu.clamp(-2.0, 0.0)
    return -torch.sqrt(pu ** 2 + pv ** 2) * torch.sign(pv)


def _lines(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For coordinate ``w`` in periods: distance to the nearest integer, and whether floor(w) is even."""
    frac = w - torch.floor(w)
    return torch.minimum(frac, 1 - frac), torch.remainder(torch.floor(w), 2) == 0


def _sdf(name: str, u: torch.Tensor, v: torch.Tensor, freq: torch.Tensor,
         phase_u: torch.Tensor, phase_v: torch.Tensor) -> torch.Tensor:
    """Signed distance (object units, negative inside) of class ``name`` at object coordinates (u, v).

    u, v: (M, H, W); freq, phase_u, phase_v: (M, 1, 1), the texture's periods per unit and offsets.
    """
    radius = torch.sqrt(u ** 2 + v ** 2)
    if name == "disk":
        return radius - 1
    if name == "ring":
        return (radius - 0.75).abs() - 0.25
    if name == "square":
        return _box(u, v, 0.8, 0.8)
    if name == "frame":
        return torch.maximum(_box(u, v, 0.9, 0.9), -_box(u, v, 0.55, 0.55))
    if name == "triangle":
        return _triangle(u, v)
    if name == "cross":
        return torch.minimum(_box(u, v, 1.0, 0.3), _box(u, v, 0.3, 1.0))
    if name == "star":  # five points; a pseudo-distance (radius minus the outline's radius), halved
        angle = torch.atan2(v, u) * 5 / (2 * math.pi)
        spike = 1 - 2 * (angle - torch.round(angle)).abs()  # 1 at a point, 0 between points
        return 0.5 * (radius - (0.45 + 0.55 * spike))
    if name == "crescent":
        return torch.maximum(radius - 1, 0.8 - torch.sqrt((u - 0.45) ** 2 + v ** 2))
    if name == "stripes":
        dist, even = _lines(u * freq + phase_u)
        return torch.maximum(radius - 1, torch.where(even, -dist, dist) / freq)
    if name == "checker":
        dist_u, even_u = _lines(u * freq + phase_u)
        dist_v, even_v = _lines(v * freq + phase_v)
        dist = torch.minimum(dist_u, dist_v)
        return torch.maximum(radius - 1, torch.where(even_u == even_v, -dist, dist) / freq)
    raise ValueError(f"unknown shape class {name!r}; expected one of {CLASSES}")


@functools.cache
def _class_scales() -> torch.Tensor:
    """(C,) factors that give every class the same area: the median class area at scale 1."""
    grid = torch.linspace(-1.5, 1.5, 301)
    v, u = torch.meshgrid(grid, grid, indexing="ij")
    u, v = u[None], v[None]
    freq, phase = torch.full((1, 1, 1), 2.0), torch.zeros(1, 1, 1)
    areas = torch.stack([(_sdf(name, u, v, freq, phase, phase) < 0).float().mean() * 9
                         for name in CLASSES])
    return torch.sqrt(areas.median() / areas)


def _contrasting(base: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(M, 3) colours that differ from ``base`` (M, 3) by 0.25-0.6 per channel, away from the edges."""
    delta = 0.25 + 0.35 * torch.rand(base.shape, generator=gen)
    return (base + torch.where(base > 0.5, -delta, delta)).clamp(0, 1)


def _draw(canvas: torch.Tensor, idx: torch.Tensor, cls: torch.Tensor, centre: torch.Tensor,
          radius: torch.Tensor, gen: torch.Generator) -> None:
    """Paint one object into each image ``idx`` of ``canvas`` (N, 3, S, S) float, in place.

    cls: (M,) class indices; centre: (M, 2) pixel coordinates (x, y); radius: (M,) pixels, the radius
    a disk of the same area would have. Rotation, aspect ratio, texture, colour and shading are drawn
    from ``gen``; the colour contrasts with the canvas's colour under the object's centre.
    """
    m, size = len(idx), canvas.shape[-1]
    theta = 2 * math.pi * torch.rand(m, generator=gen)
    aspect = torch.exp(0.4 * torch.rand(m, generator=gen) - 0.2)
    freq = 1.6 + 0.8 * torch.rand(m, generator=gen)
    phase = torch.rand(2, m, generator=gen)
    shade = 0.3 * torch.rand(m, 3, generator=gen)
    scale = radius * _class_scales()[cls]  # pixels per object unit
    px = torch.arange(size, dtype=torch.float32) + 0.5
    dx = px[None, None, :] - centre[:, 0, None, None]
    dy = px[None, :, None] - centre[:, 1, None, None]
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    u = (cos * dx + sin * dy) / (scale * aspect.sqrt())[:, None, None]
    v = (-sin * dx + cos * dy) * (aspect.sqrt() / scale)[:, None, None]
    sdf = torch.empty_like(u)
    for c in cls.unique().tolist():
        rows = cls == c
        sdf[rows] = _sdf(CLASSES[c], u[rows], v[rows], freq[rows, None, None],
                         phase[0, rows, None, None], phase[1, rows, None, None])
    mask = (0.5 - sdf * scale[:, None, None]).clamp(0, 1)[:, None]  # anti-aliased over one pixel
    ix = centre[:, 0].long().clamp(0, size - 1)
    iy = centre[:, 1].long().clamp(0, size - 1)
    colour = _contrasting(canvas[idx, :, iy, ix], gen)
    paint = colour[:, :, None, None] + shade[:, :, None, None] * u[:, None].clamp(-1, 1)
    canvas[idx] = canvas[idx] * (1 - mask) + paint * mask


def _background(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3, size, size) float backgrounds: a two-colour linear gradient plus smooth noise."""
    start, end = torch.rand(n, 3, generator=gen), torch.rand(n, 3, generator=gen)
    strength = 0.6 * torch.rand(n, 1, generator=gen)
    angle = 2 * math.pi * torch.rand(n, generator=gen)
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    ramp = (torch.cos(angle)[:, None, None] * grid[None, None, :]
            + torch.sin(angle)[:, None, None] * grid[None, :, None]) + 0.5  # (n, S, S) in [0, 1]
    colour = start + strength * (end - start)
    canvas = start[:, :, None, None] + (colour - start)[:, :, None, None] * ramp[:, None]
    blobs = torch.randn(n, 3, 4, 4, generator=gen) * 0.12 * torch.rand(n, 1, 1, 1, generator=gen)
    return canvas + F.interpolate(blobs, size=(size, size), mode="bicubic", align_corners=False)


def _render_chunk(n: int, size: int, gen: torch.Generator,
                  labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 3, size, size) uint8 and which classes each holds (n, C) bool.

    labels: (n,) int64, one object-centric image of each given class; None: n cluttered scenes.
    """
    canvas = _background(n, size, gen)
    if labels is not None:  # object-centric: one large object of the given class
        slots = [(torch.arange(n), labels, 0.28, 0.40, 0.12)]
    else:  # cluttered: 3-6 small objects of random classes anywhere
        count = torch.randint(3, 7, (n,), generator=gen)
        slots = []
        for j in range(6):
            idx = torch.nonzero(count > j).flatten()
            slots.append((idx, torch.randint(len(CLASSES), (len(idx),), generator=gen), 0.09, 0.16, 0.45))
    present = torch.zeros(n, len(CLASSES), dtype=torch.bool)
    for idx, cls, small, large, jitter in slots:
        m = len(idx)
        radius = size * (small + (large - small) * torch.rand(m, generator=gen))
        centre = size * (0.5 + jitter * (2 * torch.rand(m, 2, generator=gen) - 1))
        _draw(canvas, idx, cls, centre, radius, gen)
        present[idx, cls] = True
    canvas += 0.04 * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(canvas.shape, generator=gen)
    return (canvas.clamp(0, 1) * 255).round().to(torch.uint8), present


def render(n: int, size: int = 40, mode: str = "object", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` procedural images.

    Returns images (n, 3, size, size) uint8 and present (n, C) bool, C = len(CLASSES): which classes
    appear in each image. In ``object`` mode each row of ``present`` has exactly one True and the
    classes are balanced (counts differ by at most one); in ``cluttered`` mode each image holds 3-6
    objects of uniformly random classes. Same arguments, same bytes.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if n < 0 or size < 8:
        raise ValueError(f"render needs n >= 0 and size >= 8 pixels; got n={n}, size={size}")
    gen = torch.Generator().manual_seed(seed)
    if mode == "object":  # balanced classes in random order
        labels = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=gen)]
    else:
        labels = None
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    present = torch.zeros(n, len(CLASSES), dtype=torch.bool)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        images[start:stop], present[start:stop] = _render_chunk(
            stop - start, size, gen, None if labels is None else labels[start:stop])
    return images, present
