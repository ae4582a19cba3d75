"""Random views of images: the SimCLR augmentation recipe S2R2 uses, on two backends.

S2R2 (Sec. 3) samples B images and draws K views of each with "the same aggressive augmentation
setup as in SimCLR [4]"; the B*K views and their image ids go straight into ``smooth_ap_loss``
(views of one image are positives, all others negatives). The paper trains at 96x96, B=64, K=20.

Two backends draw from the same distribution:

  cpu      torchvision.transforms.v2 applied view by view; images may differ in size, so this is the
           path for large images decoded in DataLoader workers (see :class:`ViewCollate`).
  batched  one vectorised pass over the whole batch on the images' device (CPU or CUDA), every
           parameter drawn per view: crop and flip as one affine grid, then colour jitter (in a
           per-view random order, as torchvision draws it), grayscale and Gaussian blur. It never waits
           for the device: each colour step runs over the whole batch and is kept where it was drawn
           (torch.where), about twice the arithmetic of indexing the chosen views (2x the CPU time at
           96 px), but indexing would stop a GPU 18 times a call to count them.

One difference remains: when a crop is larger than the output, the cpu backend resizes with
antialiasing (torchvision's default) and the batched one samples bilinearly without it. When the
images are about the output size (STL10 at 96 px, CIFAR at 32 px) crops are upsampled and the two agree.

    >>> images = torch.randint(0, 256, (64, 3, 96, 96), dtype=torch.uint8)
    >>> views, ids = make_views(images, views_per_image=20)           # (1280, 3, 96, 96), (1280,)
    >>> loss = smooth_ap_loss(model(views), ids)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from torchvision.transforms import v2

BACKENDS = ("cpu", "batched")
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class ViewRecipe:
    """The numbers of one augmentation recipe; both backends read them. Defaults: SimCLR (Chen et al. 2020, App. A),
    colour distortion of strength s = 1, as S2R2 cites it; :data:`SIMCLR_CIFAR` is SimCLR's 32-px setting (s = 0.5).

    crop_scale is the crop's area as a fraction of the image, crop_ratio its width/height (sampled
    log-uniformly); jitter strengths are torchvision ColorJitter's (factor ~ U[1-s, 1+s], hue shift
    ~ U[-hue, hue] turns); the blur kernel is ``blur_kernel_fraction`` of the output size, made odd.
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1

    def blur_kernel_size(self, size: int) -> int:
        """Odd kernel side for ``size``-pixel views: 9 at 96 px, 3 at 32 px, 23 at 224 px (SimCLR's)."""
        return 2 * (int(self.blur_kernel_fraction * size) // 2) + 1


SIMCLR = ViewRecipe()
# SimCLR's colour strength for CIFAR-10 (App. B.9), s = 0.5, for 32-px images; the rest of the recipe, the blur
# included, is SIMCLR's. This project's CPU miniature (32-px views) trains with it, the paper presets (96 px)
# with SIMCLR.
SIMCLR_CIFAR = dataclasses.replace(SIMCLR, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
RECIPES = {"simclr": SIMCLR, "simclr-cifar": SIMCLR_CIFAR}  # TrainConfig.recipe names these
# SwAV's multi-crop (Caron et al. 2020) at S2R2's 96 px: (views per image, size, crop area range).
SWAV_CROPS = ((2, 96, (0.14, 1.0)), (6, 48, (0.05, 0.14)))


def cpu_view_transform(size: int = 96, recipe: ViewRecipe = SIMCLR) -> v2.Compose:
    """The per-view transform of the cpu backend: uint8 (1 or 3, H, W) -> float32 (3, size, size) in [0, 1]."""
    from torchvision.transforms import v2  # here, not at the top: torchvision takes 1.5 s to import

    return v2.Compose([
        v2.RGB(),
        v2.RandomResizedCrop(size, scale=recipe.crop_scale, ratio=recipe.crop_ratio, antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomHorizontalFlip(recipe.flip_p),
        v2.RandomApply([v2.ColorJitter(recipe.brightness, recipe.contrast, recipe.saturation, recipe.hue)],
                       p=recipe.jitter_p),
        v2.RandomGrayscale(recipe.grayscale_p),
        v2.RandomApply([v2.GaussianBlur(recipe.blur_kernel_size(size), sigma=recipe.blur_sigma)], p=recipe.blur_p),
    ])


class ViewCollate:
    """A picklable ``collate_fn``: a list of uint8 images (C, H, W), sizes may differ -> (views, ids).

    Dataset items may also be tuples whose first element is the image (labels are dropped).

        loader = DataLoader(dataset, batch_size=64, num_workers=8, collate_fn=ViewCollate(20, size=96))
        for views, ids in loader: ...   # (1280, 3, 96, 96) float32, (1280,) int64
    """

    def __init__(self, views_per_image: int, size: int = 96, recipe: ViewRecipe = SIMCLR,
                 allow_upscale: bool = False):
        _check_views(views_per_image, size)
        self.views_per_image, self.size, self.allow_upscale = views_per_image, size, allow_upscale
        self.transform = cpu_view_transform(size, recipe)

    def __call__(self, batch: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        images = [item[0] if isinstance(item, (tuple, list)) else item for item in batch]
        if not images:
            raise ValueError("ViewCollate got an empty batch; a DataLoader batch needs at least one image")
        for image in images:
            _check_images(image[None] if isinstance(image, torch.Tensor) else image, self.size, self.allow_upscale)
        return _cpu_views(images, self.views_per_image, self.transform)


def make_views(images: torch.Tensor, views_per_image: int, size: int = 96, backend: str = "batched",
               generator: torch.Generator | None = None, recipe: ViewRecipe = SIMCLR,
               allow_upscale: bool = False, compile_backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """K random views of each of B images, and the id of each view's image (S2R2 Sec. 3).

    images: uint8 (B, C, H, W), C = 1 (repeated to 3) or 3, on the device the batched backend runs on.
    Returns views float32 (B*K, 3, size, size) in [0, 1] (not normalised: the encoder does that) and
    ids int64 (B*K,), image-major: ``ids == arange(B).repeat_interleave(K)``, ready for ``smooth_ap_loss(z, ids)``.
    ``generator`` (on the images' device for "batched") makes the views reproducible per device and backend.
    ``size`` above the image's shorter side is refused unless ``allow_upscale``. The batched backend never
    waits for the device (no host sync), so it can run ahead of a GPU. ``compile_backend`` (batched only),
    e.g. "inductor": render the views through ``torch.compile`` with that backend, which fuses the colour
    steps' passes over the batch into a few kernels; the same views up to float rounding.
    """
    _check_views(views_per_image, size)
    _check_images(images, size, allow_upscale)
    if backend not in BACKENDS:
        raise ValueError(f"unknown view backend {backend!r}; expected one of {BACKENDS}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__} "
                        f"{generator!r}; make one with torch.Generator(device=images.device).manual_seed(seed)")
    if not isinstance(recipe, ViewRecipe):
        raise TypeError(f"recipe must be a ViewRecipe (e.g. views.SIMCLR), got {type(recipe).__name__}")
    if compile_backend is not None and (backend != "batched" or not isinstance(compile_backend, str)):
        raise ValueError(f"compile_backend={compile_backend!r} needs backend='batched' and a torch.compile "
                         f"backend name such as 'inductor'; pass compile_backend=None for eager views")
    if backend == "cpu":
        transform = cpu_view_transform(size, recipe)
        if generator is None:
            return _cpu_views(images, views_per_image, transform)
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        with torch.random.fork_rng(devices=[]):  # transforms.v2 draws from the global CPU generator
            torch.default_generator.manual_seed(seed)
            return _cpu_views(images, views_per_image, transform)
    if generator is not None and not _same_device(generator.device, images.device):
        raise ValueError(f"generator is on {generator.device} but images are on {images.device}; "
                         f"create it with torch.Generator(device=images.device)")
    views = _batched_views(images, views_per_image, size, recipe, generator, compile_backend)
    return views, _view_ids(len(images), views_per_image, images.device)


def make_multicrop_views(images: torch.Tensor, crops: Sequence[tuple[int, int, tuple[float, float]]] = SWAV_CROPS,
                         backend: str = "batched", generator: torch.Generator | None = None,
                         recipe: ViewRecipe = SIMCLR, allow_upscale: bool = False,
                         compile_backend: str | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """SwAV multi-crop: for each ``(views_per_image, size, crop_scale)`` in ``crops``, one ``make_views`` batch.

    Returns one (views (B*K_i, 3, size_i, size_i), ids (B*K_i,)) pair per crop spec, in the order given;
    the rest of the recipe (flip, jitter, grayscale, blur) is shared.
    """
    _check_crops(crops)
    return [make_views(images, views_per_image, size, backend, generator,
                       dataclasses.replace(recipe, crop_scale=tuple(scale)), allow_upscale, compile_backend)
            for views_per_image, size, scale in crops]


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one: ``cuda`` (no index, as ``torch.Generator("cuda")`` reports it) is the
    current CUDA device, so it matches ``cuda:0`` while that is current, and not ``cuda:1``."""
    def indexed(device: torch.device) -> torch.device:
        if device.type == "cuda" and device.index is None:
            return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
        return device

    return indexed(a) == indexed(b)


def _check_images(images, size: int, allow_upscale: bool) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        kind = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"views need uint8 images with values 0-255; got {kind}. Convert a float image x in "
                         f"[0, 1] with (x * 255).round().to(torch.uint8), and a PIL image with "
                         f"torchvision.transforms.v2.functional.pil_to_tensor(image)")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"views need images shaped (B, C, H, W) with C = 1 or 3 (one image (C, H, W): "
                         f"ViewCollate, or image[None]); got shape {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"views need at least one image of at least 1x1 pixels; images has shape "
                         f"{tuple(images.shape)} (B, C, H, W)")
    if not allow_upscale and size > min(images.shape[-2:]):
        raise ValueError(f"view size {size} is larger than the image ({images.shape[-2]}x{images.shape[-1]}); "
                         f"pass a smaller size, or allow_upscale=True to enlarge crops past the image's resolution")


def _check_whole(name: str, value, what: str) -> None:
    """``value`` must be a whole number >= 1 (a bool is refused, though Python counts it as an int)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number of {what} (an int >= 1), got {type(value).__name__} "
                        f"{value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1 ({what}); got {value}")


def _check_views(views_per_image: int, size: int) -> None:
    _check_whole("views_per_image", views_per_image, "views per image")
    _check_whole("size", size, "pixels (the view's side)")


def _check_crops(crops) -> None:
    """SwAV crops: a non-empty sequence of (views_per_image, size, (min_area, max_area)), 0 < min <= max <= 1."""
    example = "e.g. ((2, 96, (0.14, 1.0)), (6, 48, (0.05, 0.14)))"
    if isinstance(crops, (str, bytes)) or not isinstance(crops, Sequence) or len(crops) == 0:
        raise ValueError(f"crops must be a non-empty list of (views_per_image, size, (min_area, max_area)), "
                         f"{example}; got {crops!r}")
    for i, crop in enumerate(crops):
        try:
            views_per_image, size, (low, high) = crop
        except (TypeError, ValueError):
            raise ValueError(f"crops[{i}] must be (views_per_image, size, (min_area, max_area)), {example}; "
                             f"got {crop!r}") from None
        _check_whole(f"crops[{i}] views_per_image", views_per_image, "views per image")
        _check_whole(f"crops[{i}] size", size, "pixels (the view's side)")
        if not all(isinstance(a, numbers.Real) and not isinstance(a, bool) for a in (low, high)) \
                or not 0 < low <= high <= 1:
            raise ValueError(f"crops[{i}] area range must be two numbers with 0 < min_area <= max_area <= 1 "
                             f"(fractions of the image), got {(low, high)!r}")


def _view_ids(num_images: int, views_per_image: int, device) -> torch.Tensor:
    return torch.arange(num_images, device=device).repeat_interleave(views_per_image)


def _cpu_views(images: Sequence[torch.Tensor], views_per_image: int, transform) -> tuple[torch.Tensor, torch.Tensor]:
    """The cpu backend: ``transform`` applied K times to each image (C, H, W) -> (B*K, 3, s, s), ids (B*K,)."""
    views = torch.stack([transform(image) for image in images for _ in range(views_per_image)])
    return views.clamp_(0, 1), _view_ids(len(images), views_per_image, views.device)  # blur rounds past 1


def _batched_views(images: torch.Tensor, views_per_image: int, size: int, recipe: ViewRecipe,
                   generator: torch.Generator | None, compile_backend: str | None = None) -> torch.Tensor:
    """The batched backend: uint8 (B, C, H, W) -> float32 (B*K, 3, size, size), every parameter drawn per view.

    All random numbers are drawn up front, in a fixed order, for every view: one seed, one set of views.
    """
    batch, _, height, width = images.shape
    draws = draw_view_parameters(batch * views_per_image, height, width, recipe, generator, images.device)
    render = render_views if compile_backend is None else compiled_render_views(compile_backend)
    return render(images, draws, size, recipe.blur_kernel_size(size))


@dataclass(frozen=True)
class ViewDraws:
    """Every random parameter of N views (tensors of N rows on one device), drawn before any pixel is touched.

    top, left, crop_h, crop_w: the crop box in whole source pixels; flip, jitter, gray, blur: whether each
    step applies; factors (4, N): brightness, contrast, saturation factors and hue shift; order (N, 4): the
    jitter steps' order per view; sigma: the blur's.
    """

    top: torch.Tensor
    left: torch.Tensor
    crop_h: torch.Tensor
    crop_w: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor


def draw_view_parameters(n: int, height: int, width: int, recipe: ViewRecipe = SIMCLR,
                         generator: torch.Generator | None = None, device=None) -> ViewDraws:
    """The random half of the batched backend, in a fixed order: one generator state, one set of views."""
    device = torch.device("cpu") if device is None else torch.device(device)

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(*shape, generator=generator, device=device)

    top, left, crop_h, crop_w = _sample_crop_boxes(n, height, width, recipe, uniform)
    flip = uniform(0, 1, n) < recipe.flip_p
    jitter = uniform(0, 1, n) < recipe.jitter_p
    factors = torch.stack([uniform(1 - recipe.brightness, 1 + recipe.brightness, n),
                           uniform(1 - recipe.contrast, 1 + recipe.contrast, n),
                           uniform(1 - recipe.saturation, 1 + recipe.saturation, n),
                           uniform(-recipe.hue, recipe.hue, n)])
    order = uniform(0, 1, n, 4).argsort(dim=1)  # a random permutation of the four jitter steps per view
    gray = uniform(0, 1, n) < recipe.grayscale_p
    blur = uniform(0, 1, n) < recipe.blur_p
    sigma = uniform(*recipe.blur_sigma, n)
    return ViewDraws(top, left, crop_h, crop_w, flip, jitter, factors, order, gray, blur, sigma)


def render_views(images: torch.Tensor, draws: ViewDraws, size: int, blur_kernel_size: int) -> torch.Tensor:
    """The deterministic half of the batched backend: uint8 (B, C, H, W) and B*K views' draws -> float32
    (B*K, 3, size, size). Pure tensor code without randomness or host syncs, so ``torch.compile`` can fuse it
    (:func:`compiled_render_views`)."""
    views = images
    for stage in render_stages(draws, size, blur_kernel_size).values():
        views = stage(views)
    return views


def _crop_views(images: torch.Tensor, draws: ViewDraws, size: int) -> torch.Tensor:
    """Crop, resize and flip: uint8 (B, C, H, W) -> float32 (B*K, 3, size, size) in [0, 1]."""
    batch, _, height, width = images.shape
    n = len(draws.flip)
    views_per_image = n // batch
    device = images.device

    # Crop + resize + flip as one affine map from output to source pixels (align_corners=False):
    # output column u samples x = left + (u + 0.5) * crop_w / size - 0.5, exactly as crop-then-resize does.
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = torch.where(draws.flip, -draws.crop_w, draws.crop_w) / width
    theta[:, 0, 2] = (2 * draws.left + draws.crop_w) / width - 1
    theta[:, 1, 1] = draws.crop_h / height
    theta[:, 1, 2] = (2 * draws.top + draws.crop_h) / height - 1
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    # Stack each image's K grids along the height so that grid_sample reads each source image once.
    grid = grid.view(batch, views_per_image * size, size, 2)
    source = images.expand(-1, 3, -1, -1).float().div_(255)
    views = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return views.view(batch, 3, views_per_image, size, size).transpose(1, 2).reshape(n, 3, size, size)


def _grayscale_views(views: torch.Tensor, draws: ViewDraws) -> torch.Tensor:
    return torch.where(draws.gray.view(-1, 1, 1, 1), _luma(views).expand(-1, 3, -1, -1), views)


def _blur_views(views: torch.Tensor, draws: ViewDraws, kernel_size: int) -> torch.Tensor:
    return torch.where(draws.blur.view(-1, 1, 1, 1), _gaussian_blur(views, draws.sigma, kernel_size), views)


def render_stages(draws: ViewDraws, size: int, blur_kernel_size: int) -> dict:
    """The stages of :func:`render_views`, {name: fn(x) -> x}, in the order it runs them (the first takes the
    uint8 images); ``bench views --stages`` times them one by one. No blur below a 3-pixel kernel."""
    stages = {"crop": lambda x: _crop_views(x, draws, size),
              "jitter": lambda x: _color_jitter(x, draws.jitter, draws.factors, draws.order),
              "grayscale": lambda x: _grayscale_views(x, draws),
              "blur": lambda x: _blur_views(x, draws, blur_kernel_size),
              "clamp": lambda x: x.clamp_(0, 1)}
    if blur_kernel_size <= 1:
        del stages["blur"]
    return stages


@functools.cache
def compiled_render_views(backend: str = "inductor"):
    """:func:`render_views` through ``torch.compile`` (one compiled function per backend, shapes static:
    a new batch shape recompiles once)."""
    return torch.compile(render_views, backend=backend, dynamic=False, fullgraph=True)


def _sample_crop_boxes(n: int, height: int, width: int, recipe: ViewRecipe, uniform):
    """RandomResizedCrop's box sampler, vectorised: up to 10 tries of (area, log-ratio) per view,
    the first that fits wins; views with none fall back to the central crop of clamped aspect ratio.
    Returns float tensors (n,) top, left, crop height, crop width in whole pixels.
    """
    tries = 10
    area = height * width * uniform(*recipe.crop_scale, n, tries)
    log_ratio = uniform(math.log(recipe.crop_ratio[0]), math.log(recipe.crop_ratio[1]), n, tries)
    crop_w = torch.sqrt(area * torch.exp(log_ratio)).round()
    crop_h = torch.sqrt(area / torch.exp(log_ratio)).round()
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first try that fits (0 when none does)
    crop_w, crop_h = crop_w.gather(1, first).squeeze(1), crop_h.gather(1, first).squeeze(1)
    found = fits.any(dim=1)

    in_ratio = width / height
    fallback_w, fallback_h = width, height
    if in_ratio < min(recipe.crop_ratio):
        fallback_h = round(width / min(recipe.crop_ratio))
    elif in_ratio > max(recipe.crop_ratio):
        fallback_w = round(height * max(recipe.crop_ratio))
    crop_w = torch.where(found, crop_w, float(fallback_w))
    crop_h = torch.where(found, crop_h, float(fallback_h))
    top_range, left_range = height - crop_h + 1, width - crop_w + 1
    top = torch.minimum((uniform(0, 1, n) * top_range).floor(), top_range - 1)
    left = torch.minimum((uniform(0, 1, n) * left_range).floor(), left_range - 1)
    top = torch.where(found, top, ((height - crop_h) / 2).floor())
    left = torch.where(found, left, ((width - crop_w) / 2).floor())
    return top, left, crop_h, crop_w


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) grey level."""
    r, g, b = x.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _color_jitter(views: torch.Tensor, jitter: torch.Tensor, factors: torch.Tensor,
                  order: torch.Tensor) -> torch.Tensor:
    """ColorJitter per view, its four steps in each view's own order, without a host sync.

    views (N, 3, H, W) in [0, 1]; jitter (N,) bool; factors (4, N): brightness, contrast and saturation
    factors and hue shift; order (N, 4): the op each view runs at each step. Every step runs on the whole
    batch, since indexing the chosen views would ask the host how many there are (a device sync).
    Brightness, contrast and saturation are one blend, factor * x + (1 - factor) * reference with reference
    0, the mean grey level or the grey level (torchvision's float kernels); a view whose step is another op
    gets factor 1 and reference 0, which leaves it as it is. The costly hue shift runs once, between the
    blends of the steps before it and those after it.
    """
    n = len(views)

    def per_view(t: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, 1, 1, 1), broadcast over a view's pixels
        return t.view(n, 1, 1, 1)

    hue_step = torch.where(jitter, (order == 3).int().argmax(dim=1), 4)  # 4: no jitter at all
    for before_hue in (True, False):
        for step in (range(3) if before_hue else range(1, 4)):
            op = order[:, step]
            blend = jitter & (op < 3) & ((hue_step > step) if before_hue else (hue_step < step))
            factor = torch.where(blend, factors[:3].gather(0, op.clamp(max=2)[None])[0], 1.0)
            luma = _luma(views)
            on_mean = per_view((blend & (op == 1)).float())
            on_luma = per_view((blend & (op == 2)).float())
            reference = on_mean * luma.mean(dim=(1, 2, 3), keepdim=True) + on_luma * luma
            views = views.mul_(per_view(factor)).add_(per_view(1 - factor) * reference).clamp_(0, 1)
        if before_hue:
            views = torch.where(per_view(hue_step < 4), _adjust_hue(views, factors[3]), views)
    return views


def _adjust_hue(x, shift):
    """Rotate the HSV hue by ``shift`` turns, keeping value (max) and chroma (max - min) per pixel."""
    r, g, b = x.unbind(dim=1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    chroma = maxc - minc
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(maxc == r, (g - b) / safe,
                      torch.where(maxc == g, 2 + (b - r) / safe, 4 + (r - g) / safe))  # sixths of a turn
    hue = torch.remainder(hue + 6 * shift.view(-1, 1, 1), 6).unsqueeze(1)
    # HSV -> RGB: channel n (R 5, G 3, B 1) = max - chroma * clamp(min(k, 4 - k), 0, 1), k = (n + hue) mod 6
    channel = torch.arange(5.0, 0.0, -2.0, device=x.device).view(1, 3, 1, 1)  # made on the device: no host copy
    k = torch.remainder(hue + channel, 6)
    return (maxc.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(k, 4 - k).clamp_(0, 1)).clamp_(0, 1)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per view, reflect padding (torchvision's GaussianBlur).

    x (N, 3, H, W), sigma (N,) -> (N, 3, H, W).
    """
    n, channels, height, width = x.shape
    if n == 0:
        return x
    offsets = torch.linspace(-(kernel_size - 1) / 2, (kernel_size - 1) / 2, kernel_size, device=x.device)
    kernel = torch.softmax(-0.5 * (offsets / sigma[:, None]) ** 2, dim=1)  # (N, k), rows sum to 1
    kernel = kernel.repeat_interleave(channels, dim=0)  # one kernel per (view, channel) group
    pad = kernel_size // 2
    x = F.pad(x, [pad, pad, pad, pad], mode="reflect").reshape(1, n * channels, height + 2 * pad, width + 2 * pad)
    x = F.conv2d(x, kernel.view(-1, 1, 1, kernel_size), groups=n * channels)
    x = F.conv2d(x, kernel.view(-1, 1, kernel_size, 1), groups=n * channels)
    return x.view(n, channels, height, width)
