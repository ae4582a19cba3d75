"""The embedded default data: procedural images of shape classes, drawn with torch, no download.

Two modes mirror the paper's contrast between curated and cluttered pre-training data, and differ in
one thing only, the number of objects:

  object     one object per image, near the centre (like STL10); labelled, balanced: the splits the
             linear probe trains and tests on.
  cluttered  four objects per image, one in each quadrant, of independent random classes (like
             MS-COCO); for pre-training only.

Objects have the same size in both modes: the radius of a disk of the same area is 16-22 % of the
side (:data:`OBJECT_RADIUS`), so that four fit side by side. Two random crops of a cluttered image
can show different objects: :func:`views_sharing_no_object` measures how often they share none (by
construction, from the crop boxes and the object centres). Two crops of an object-centric image fail to
share its one object about as often (a crop of background), so the modes differ in what such a pair
shows, not in how often it shares nothing; notebook 06 prints both rates.

A class is a shape or a texture, never a colour: disk, ring, square, frame, triangle, cross, star,
crescent, stripes (a striped disk) and checker (a chequered disk); ``num_classes`` keeps the first few
(e.g. 2 against 10, to vary how similar the images of a batch are). Every image draws its object's
position, scale, aspect ratio, rotation, stripe frequency and phase, a background gradient's angle and
smooth noise, and pixel noise. Colours come from a small palette (:data:`PALETTE`): the background's
and the object's are two different palette colours, so many images share a colour pair and colour alone
identifies neither the class nor the image (:func:`colour_instance_top1` checks the second: it is the
shortcut an instance-discrimination method would otherwise take). Each class is rescaled so that all
cover the same expected area, so the amount of foreground does not tell the class either.

What it can show: whether an encoder learns shape and texture that survive colour jitter, crops and
rotation; how pre-training on cluttered scenes transfers to object-centric probing, the paper's
STL10-versus-COCO comparison, in minutes on a CPU. What it cannot show: anything about natural-image
statistics, semantic categories, or the paper's absolute accuracies; at 40 px the stripes and checkers
of an object 7-9 px in radius are close to aliasing. Images are identical for the same (n, size, mode,
num_classes, seed) on one torch version; another torch version may draw different random numbers.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

CLASSES = ("disk", "ring", "square", "frame", "triangle", "cross", "star", "crescent", "stripes",
           "checker")
MODES = ("object", "cluttered")
VERSION = 2  # bump when the pixels for the same arguments change (study runs are keyed by it)
OBJECT_RADIUS = (0.16, 0.22)  # the equal-area radius of every object, as a fraction of the side, both modes
CENTRE_JITTER = 0.08          # an object's centre moves up to this fraction of the side from its place
CLUTTER_OBJECTS = 4           # cluttered mode: one object per quadrant
# Background and object colours: a pair of different palette colours per image (12 pairs), so that in a
# batch of 16 images several share their colours.
PALETTE = torch.tensor([[0.85, 0.25, 0.2], [0.2, 0.6, 0.85], [0.9, 0.85, 0.3], [0.25, 0.7, 0.35]])
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


def _draw(canvas: torch.Tensor, idx: torch.Tensor, cls: torch.Tensor, centre: torch.Tensor,
          radius: torch.Tensor, colour: torch.Tensor, gen: torch.Generator) -> None:
    """Paint one object into each image ``idx`` of ``canvas`` (N, 3, S, S) float, in place.

    cls: (M,) class indices; centre: (M, 2) pixel coordinates (x, y); radius: (M,) pixels, the radius
    a disk of the same area would have; colour: (M, 3). Rotation, aspect ratio, texture and a shading
    ramp (the same on every channel) are drawn from ``gen``.
    """
    m, size = len(idx), canvas.shape[-1]
    theta = 2 * math.pi * torch.rand(m, generator=gen)
    aspect = torch.exp(0.4 * torch.rand(m, generator=gen) - 0.2)
    freq = 1.6 + 0.8 * torch.rand(m, generator=gen)
    phase = torch.rand(2, m, generator=gen)
    shade = 0.3 * torch.rand(m, 1, generator=gen)
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
    paint = colour[:, :, None, None] + shade[:, :, None, None] * u[:, None].clamp(-1, 1)
    canvas[idx] = canvas[idx] * (1 - mask) + paint * mask


def _background(n: int, size: int, colour: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(n, 3, size, size) float backgrounds: ``colour`` (n, 3) under a brightness ramp at a random angle
    (the same on every channel), plus smooth grey noise."""
    strength = 0.3 * torch.rand(n, 1, 1, 1, generator=gen)
    angle = 2 * math.pi * torch.rand(n, generator=gen)
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    ramp = (torch.cos(angle)[:, None, None] * grid[None, None, :]
            + torch.sin(angle)[:, None, None] * grid[None, :, None])  # (n, S, S) in [-0.71, 0.71]
    canvas = colour[:, :, None, None] * (1 + strength * ramp[:, None])
    blobs = torch.randn(n, 1, 4, 4, generator=gen) * 0.06
    return canvas + F.interpolate(blobs, size=(size, size), mode="bicubic", align_corners=False)


def layout(n: int, size: int, mode: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the objects of ``n`` images go: centres (n, M, 2) pixel coordinates (x, y) and radii (n, M)
    pixels, M = 1 (object) or :data:`CLUTTER_OBJECTS` (cluttered, one per quadrant). Both modes draw
    radii from :data:`OBJECT_RADIUS` and move centres by up to :data:`CENTRE_JITTER` of the side."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    places = torch.tensor([[0.5, 0.5]]) if mode == "object" else torch.tensor(
        [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    m = len(places)
    low, high = OBJECT_RADIUS
    radius = size * (low + (high - low) * torch.rand(n, m, generator=gen))
    centre = size * (places + CENTRE_JITTER * (2 * torch.rand(n, m, 2, generator=gen) - 1))
    return centre, radius


def _render_chunk(n: int, size: int, mode: str, num_classes: int, gen: torch.Generator,
                  labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 3, size, size) uint8 and which classes each holds (n, len(CLASSES)) bool.

    labels: (n,) int64, the class of each object-centric image; None: cluttered scenes, each object's
    class uniform over the first ``num_classes``.
    """
    pair = torch.rand(n, len(PALETTE), generator=gen).argsort(dim=1)[:, :2]  # two different palette colours
    canvas = _background(n, size, PALETTE[pair[:, 0]], gen)
    centre, radius = layout(n, size, mode, gen)
    present = torch.zeros(n, len(CLASSES), dtype=torch.bool)
    everyone = torch.arange(n)
    for j in range(centre.shape[1]):
        cls = labels if labels is not None else torch.randint(num_classes, (n,), generator=gen)
        _draw(canvas, everyone, cls, centre[:, j], radius[:, j], PALETTE[pair[:, 1]], gen)
        present[everyone, cls] = True
    canvas += 0.04 * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(canvas.shape, generator=gen)
    return (canvas.clamp(0, 1) * 255).round().to(torch.uint8), present


def render(n: int, size: int = 40, mode: str = "object", seed: int = 0,
           num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` procedural images.

    Returns images (n, 3, size, size) uint8 and present (n, C) bool, C = len(CLASSES): which classes
    appear in each image. Only the first ``num_classes`` classes are drawn (None: all of them). In
    ``object`` mode each row of ``present`` has exactly one True and the classes are balanced (counts
    differ by at most one); in ``cluttered`` mode each image holds :data:`CLUTTER_OBJECTS` objects of
    uniformly random classes. Same arguments, same bytes.
    """
    num_classes = len(CLASSES) if num_classes is None else num_classes
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if n < 0 or size < 8:
        raise ValueError(f"render needs n >= 0 and size >= 8 pixels; got n={n}, size={size}")
    if not 1 <= num_classes <= len(CLASSES):
        raise ValueError(f"render: num_classes must be 1 to {len(CLASSES)} (the first classes of CLASSES are "
                         f"kept); got {num_classes}")
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)] if mode == "object" else None
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    present = torch.zeros(n, len(CLASSES), dtype=torch.bool)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        images[start:stop], present[start:stop] = _render_chunk(
            stop - start, size, mode, num_classes, gen, None if labels is None else labels[start:stop])
    return images, present


def views_sharing_no_object(mode: str, size: int = 40, pairs: int = 20000, seed: int = 0) -> float:
    """How often two random views of one image (SimCLR's crop boxes, :mod:`s2r2lib.views`) share no
    object, an object counting as in a view when its centre lies inside the view's crop box. Computed by
    construction from :func:`layout` and the crop sampler, over ``pairs`` (image, view pair) draws."""
    from .views import SIMCLR, _sample_crop_boxes

    gen = torch.Generator().manual_seed(seed)

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(*shape, generator=gen)

    centre, _ = layout(pairs, size, mode, gen)
    inside = []
    for _ in range(2):
        top, left, height, width = (t[:, None] for t in _sample_crop_boxes(pairs, size, size, SIMCLR, uniform))
        x, y = centre[..., 0], centre[..., 1]
        inside.append((x >= left) & (x < left + width) & (y >= top) & (y < top + height))
    return float((~(inside[0] & inside[1]).any(dim=1)).double().mean())


def colour_instance_top1(images: torch.Tensor, view_size: int = 32, bins: int = 4, seed: int = 0) -> float:
    """Can colour alone tell which image a view came from? Two SimCLR views (the miniature's colour strength,
    s = 0.5) of each image (N, 3, H, W) uint8; each view described only by its joint colour histogram (``bins`` levels per channel); the
    fraction of views whose nearest other view (Euclidean) is the other view of the same image. Chance is
    1 / (2N - 1); a value near 1 means instance discrimination can succeed on colour alone."""
    from .views import SIMCLR_CIFAR, make_views

    views, ids = make_views(images, 2, view_size, generator=torch.Generator().manual_seed(seed), recipe=SIMCLR_CIFAR)
    level = (views.clamp(0, 1 - 1e-6) * bins).long()
    colour = (level[:, 0] * bins + level[:, 1]) * bins + level[:, 2]
    histogram = F.one_hot(colour.flatten(1), bins ** 3).float().mean(1)
    distance = torch.cdist(histogram, histogram)
    distance.fill_diagonal_(float("inf"))
    return float((ids[distance.argmin(1)] == ids).double().mean())
