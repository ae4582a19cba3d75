"""Images for pre-training and probing: STL10, MS-COCO and image folders, Fashion-MNIST, the embedded
default, and the on-disk cache that makes the large ones cheap to reopen.

Every loader returns an :class:`ImageSet`: uint8 images (N, 3, H, W) (grayscale repeated to three
channels) and, where labelled, int64 labels (N,). The training loop draws image indices; the views
module turns a uint8 batch into augmented views. ``load(name, ...)`` dispatches to the loaders named
in ``DATASETS``:

  embedded               procedural shapes, no files needed (s2r2lib.synthetic); 40 px
  stl10                  <root>/stl10_binary/*.bin; train, test, unlabeled, train+unlabeled; 96 px
  coco                   <root>/train2017/*.jpg or <root>/val2017/*.jpg, unlabelled; 96 px
  folder                 <root>/**/*.jpg (png, ...), recursively; split: a sub-folder of root, or
                         all of root (None, or ``unlabeled``); ``labelled=True`` for class_name/*
  fashion_mnist          the idx files, found under <root> or the Debian package's folder; 32 px
  fashion_mnist_clutter  canvases of several Fashion-MNIST items (see :func:`clutter`); 64 px

Nothing is ever downloaded: a missing file raises FileNotFoundError that says what was expected
where and how to get it. ``root`` defaults to $S2R2_DATA_DIR or <project>/data, except for
``folder``, which needs one.

The cache. Folders (and STL10 at sizes other than its own 96 px, or train+unlabeled) are decoded
once, each image turned upright by its EXIF orientation, its shorter side resized to ``size`` and
centre-cropped to size x size, into one uint8 .npy file under ``cache_dir``, written through a memory
map (never two copies in memory) and renamed into place when complete. Later loads memory-map it. The
file name holds a fingerprint of the sorted file list with sizes and modification times, and
``size``: change, add or remove a file and the next load rebuilds it. Old cache files are not
deleted. Cache files are created with the user's umask, like any other file.

Where the cache goes when no ``cache_dir`` is given (:func:`cache_root`), first match wins:
  1. $S2R2_CACHE_DIR, when set;
  2. <checkout>/build/cache, when the working directory is inside an s2r2 checkout (the folder holding
     ``pyproject.toml`` and ``s2r2lib/``; git-ignored there);
  3. the user's cache directory: $XDG_CACHE_HOME/s2r2, by default ~/.cache/s2r2.

Bad image files. A file that cannot be read as an image is skipped with one warning that counts and
names them, or, with ``strict=True``, raises ValueError. So is a decompression bomb: a header that
declares more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (Pillow's limit, about 89 million: a 10k x
10k image) is refused before any pixel is decoded; raise that limit to read such images. Images
smaller than ``size`` on their shorter side (a 1x1 icon, a 16 px thumbnail) are upscaled and counted
in a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import math
import multiprocessing
import os
import struct
import sys
import uuid
import warnings
import zlib
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from tqdm import tqdm

from s2r2lib import synthetic
from s2r2lib.fileio import locked
from s2r2lib.results import atomic_write_bytes, project_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
STL10_URL = "https://cs.stanford.edu/~acoates/stl10/"
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
COCO_URL = "https://cocodataset.org/#download"
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist"
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
EMBEDDED_SIZES = {"train": 5000, "test": 2000, "unlabeled": 20000}  # default images per split
_CACHE_VERSION = 2  # part of every fingerprint; bump when the cached pixels or metadata change (2: EXIF, upscaled)
_CHUNK = 1024  # images resized at once when building a cache from an array


@dataclasses.dataclass(eq=False)  # tensors have no single truth value
class ImageSet:
    """Images and, where known, their labels.

    images: (N, 3, H, W) uint8; may be a read-only view (memory-mapped cache, or grayscale expanded
    to three channels without a copy): index it to get a batch, don't write into it.
    labels: (N,) int64 class indices into ``classes``, -1 for an unlabelled image in a mixed split;
    None when no image is labelled. name: where the images came from, e.g. ``stl10-train``.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str] | None
    name: str

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"ImageSet {self.name!r} needs uint8 images (N, 3, H, W); got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels is not None and (self.labels.dtype != torch.int64
                                        or self.labels.shape != (len(self.images),)):
            raise ValueError(f"ImageSet {self.name!r} needs int64 labels of shape ({len(self.images)},); "
                             f"got {self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device | str) -> ImageSet:
        """The same set with images and labels on ``device``: a copy, unless already there (so on the
        CPU a memory-mapped set stays mapped)."""
        labels = None if self.labels is None else self.labels.to(device)
        return dataclasses.replace(self, images=self.images.to(device), labels=labels)


def data_root() -> Path:
    """Where data sets are looked for when no root is given: $S2R2_DATA_DIR or <project>/data."""
    return Path(os.environ.get("S2R2_DATA_DIR") or project_dir() / "data")


def cache_root() -> Path:
    """Where resized caches go when no cache_dir is given: $S2R2_CACHE_DIR; else build/cache of the
    checkout holding the working directory; else $XDG_CACHE_HOME/s2r2 (default ~/.cache/s2r2)."""
    if os.environ.get("S2R2_CACHE_DIR"):
        return Path(os.environ["S2R2_CACHE_DIR"])
    checkout = project_dir()
    if (checkout / "pyproject.toml").is_file() and (checkout / "s2r2lib").is_dir():
        return checkout / "build" / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "s2r2"  # XDG: relative is ignored


def _check_whole(value: object, what: str, minimum: int) -> None:
    """Refuse ``value`` unless it is a whole number >= ``minimum`` (True, 31.5 and "8" are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be a whole number >= {minimum}, got {value!r}")


def _check_size(size: object, loader: str) -> None:
    _check_whole(size, f"{loader}: size (the side of the square images returned, in pixels)", 1)


# ---------------------------------------------------------------------------------------------------
# The cache


def _fingerprint(files: list[Path], base: Path, *extra: object) -> str:
    """A hash of each file's path relative to ``base``, size and mtime, plus ``extra`` settings."""
    digest = hashlib.sha256(repr((_CACHE_VERSION, extra)).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(base).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


_BUILD_WAIT_S = 6 * 3600.0  # how long a process waits for another one's cache build (COCO train: about an hour)


def _temporary(folder: Path, stem: str) -> Path:
    """A new, empty, hidden file in ``folder``, created with the user's umask (mkstemp's are 0600)."""
    path = folder / f".{stem}.{uuid.uuid4().hex[:12]}.npy.tmp"
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    return path


def _keep_rows(path: Path, rows: int) -> None:
    """Rewrite the .npy at ``path`` with only its first ``rows`` rows, copying in chunks."""
    full = np.load(path, mmap_mode="r")
    tmp = _temporary(path.parent, path.stem)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=full.dtype, shape=(rows, *full.shape[1:]))
        for start in range(0, rows, _CHUNK):
            stop = min(start + _CHUNK, rows)
            out[start:stop] = full[start:stop]
        out.flush()
        del out, full
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _cached(stem: str, count: int, size: int, fill: Callable[[np.ndarray], dict],
            cache_dir: str | os.PathLike | None) -> tuple[np.ndarray, dict]:
    """The cached array ``<cache_dir>/<stem>.npy`` (N, 3, size, size) uint8, memory-mapped, and its
    metadata, building both first if missing.

    fill(out) writes up to ``count`` images into the memory map ``out`` (count, 3, size, size) in
    order and returns JSON-able metadata whose ``n`` says how many rows it wrote.
    """
    folder = Path(cache_dir) if cache_dir is not None else cache_root()
    array_path, meta_path = folder / f"{stem}.npy", folder / f"{stem}.json"
    if not (array_path.is_file() and meta_path.is_file()):
        # One process builds a cache (decoding COCO takes long); another that asks for it meanwhile waits, then
        # reads what the first built. Under the lock, what a killed build left behind is removed first.
        with locked(array_path, timeout=_BUILD_WAIT_S):
            if not (array_path.is_file() and meta_path.is_file()):
                for stale in folder.glob(f".{stem}.*.npy.tmp"):
                    stale.unlink(missing_ok=True)
                tmp = _temporary(folder, stem)
                try:
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(count, 3, size, size))
                    meta = fill(out)
                    out.flush()
                    del out
                    if meta["n"] < count:
                        _keep_rows(tmp, meta["n"])
                    os.replace(tmp, array_path)
                finally:
                    tmp.unlink(missing_ok=True)
                atomic_write_bytes(meta_path, json.dumps(meta).encode())
    return np.load(array_path, mmap_mode="c"), json.loads(meta_path.read_text())


def _resize_square(images: np.ndarray, size: int) -> np.ndarray:
    """Square images (M, 3, S, S) uint8 resized to (M, 3, size, size), antialiased bilinear."""
    batch = torch.from_numpy(np.ascontiguousarray(images)).float()
    batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return batch.round().clamp(0, 255).to(torch.uint8).numpy()


# ---------------------------------------------------------------------------------------------------
# Image folders and MS-COCO


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: 16- and 32-bit grayscale rescaled, alpha composited onto black."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            top = 1.0 if values.max() <= 1 else 255.0
        else:  # 16-bit samples, also when Pillow widened them to mode I
            top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255 / top) + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size)
        image.paste(rgba, mask=rgba.getchannel("A"))
    return image.convert("RGB")


def _decode(path: str, size: int, max_pixels: int | None) -> tuple[np.ndarray, tuple[int, int]] | str:
    """The image at ``path`` as (3, size, size) uint8, turned upright by its EXIF orientation, shorter
    side resized to ``size`` and centre-cropped, with its (width, height) in the file; or, if it
    cannot be read or declares more than ``max_pixels`` pixels (checked on the header, before any
    decoding), a one-line reason. Never raises for a bad file."""
    # Pillow's warnings (DecompressionBombWarning from Image.open, corrupt EXIF) are silenced from
    # before the file is opened: the caller reports bad files itself, with their reasons.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(path) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    return (f"{width}x{height} is {width * height} pixels, more than PIL.Image.MAX_IMAGE_PIXELS "
                            f"= {max_pixels}: a possible decompression bomb, not decoded")
                scale = size / min(width, height)
                image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
                image = _to_rgb(ImageOps.exif_transpose(image))
        except (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError) as err:
            return f"{type(err).__name__}: {err}"  # struct.error: EXIF that exif_transpose cannot rewrite
    side = min(image.size)
    left, top = (image.width - side) / 2, (image.height - side) / 2
    image = image.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))
    return np.asarray(image).transpose(2, 0, 1), (width, height)


def _image_files(root: Path) -> list[Path]:
    """Image files under ``root`` (recursively, by extension, any case), sorted by path."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _listing(entries: list[str]) -> str:
    """The first five of ``entries`` joined, and how many more there are."""
    more = f"; and {len(entries) - 5} more" if len(entries) > 5 else ""
    return "; ".join(entries[:5]) + more


def _warn_at_caller(message: str) -> None:
    """A UserWarning that points at the first line outside this module: the user's call, whether it reached the
    warning directly (image_folder) or through another loader here (load("folder"))."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


def image_folder(root: str | os.PathLike | None = None, split: str | None = None, size: int = 96,
                 labelled: bool = False, name: str | None = None, cache_dir: str | os.PathLike | None = None,
                 strict: bool = False, workers: int = 0) -> ImageSet:
    """Every image under ``root`` (jpg, jpeg, png, bmp, gif, webp, tif, tiff; recursively), cached.

    Returns images (N, 3, size, size): each file turned upright by its EXIF orientation, its shorter
    side resized to ``size``, centre-cropped; grayscale, palette, 16-bit and alpha images converted to
    RGB. split: a sub-folder of root (e.g. ``train``, ``test``); None reads all of root, and so does
    ``unlabeled`` when root has no such sub-folder (it is TrainConfig's default pre-training split, so
    ``python -m s2r2lib.train data=folder data_root=DIR`` trains on every image under DIR).
    labelled=True reads the ``root/class_name/.../*.jpg`` layout: classes are the sorted sub-folders
    holding images, labels index them. An unreadable file, or one declaring more pixels than
    PIL.Image.MAX_IMAGE_PIXELS, is skipped with one warning, or raises ValueError if ``strict``; images
    smaller than ``size`` are upscaled and counted in the warning. ``workers`` > 0 decodes in that many
    processes (worth it for COCO's 118k images).
    """
    _check_size(size, "image_folder")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"image_folder: workers must be 0 (decode in this process) or a number of processes, "
                         f"got {workers!r}")
    if root is None:
        raise ValueError("image_folder needs root=, the folder holding the images (in a TrainConfig: "
                         "data_root=DIR)")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"image folder root {root} is a file, not a folder; pass root= the folder that "
                         f"holds the images (e.g. {root.parent})")
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; pass root= the folder holding the images")
    if split is not None and (root / split).is_dir():
        root, name = root / split, name or f"folder-{root.name}-{split}"
    elif split not in (None, "unlabeled"):
        raise FileNotFoundError(f"image folder split {split!r} not found: expected the sub-folder "
                                f"{root / split}; pass split=None (or 'unlabeled') to read every image under {root}")
    name = name or f"folder-{root.name}"
    if labelled:
        listed = [(d.name, _image_files(d)) for d in sorted(root.iterdir()) if d.is_dir()]
        classes = [folder for folder, group in listed if group]
        per_class = [group for _, group in listed if group]
        files = [f for group in per_class for f in group]
        file_labels = [c for c, group in enumerate(per_class) for _ in group]
    else:
        classes, files, file_labels = None, _image_files(root), None
    if not files:
        layout = "class_name/*.jpg sub-folders" if labelled else "files"
        raise FileNotFoundError(f"no image {layout} ({', '.join(IMAGE_EXTENSIONS)}) under {root}; "
                                "check the path, or that the images have one of these extensions")

    def fill(out: np.ndarray) -> dict:
        decode = partial(_decode, size=size, max_pixels=Image.MAX_IMAGE_PIXELS)
        paths = [str(f) for f in files]
        kept, labels, skipped, upscaled = 0, [], [], []
        with contextlib.ExitStack() as stack:
            if workers:
                pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers))
                results = pool.imap(decode, paths, chunksize=16)
            else:
                results = map(decode, paths)
            for i, result in enumerate(tqdm(results, total=len(paths), desc=f"caching {name} at {size}px")):
                relative = files[i].relative_to(root).as_posix()
                if isinstance(result, str):
                    if strict:
                        raise ValueError(f"cannot read image {paths[i]} ({result}); remove or replace "
                                         "it, or pass strict=False to skip unreadable files")
                    skipped.append(f"{relative} ({result})")
                    continue
                out[kept], (width, height) = result
                if min(width, height) < size:
                    upscaled.append(f"{relative} ({width}x{height})")
                kept += 1
                if labelled:
                    labels.append(file_labels[i])
        if kept == 0:
            raise ValueError(f"none of the {len(files)} image files under {root} could be read, e.g. "
                             f"{skipped[0]}; check that they are images")
        return {"n": kept, "files": len(files), "skipped": skipped, "upscaled": upscaled,
                "classes": classes, "labels": labels if labelled else None}

    stem = f"{name}-{size}-{_fingerprint(files, root, size, labelled)}"
    images, meta = _cached(stem, len(files), size, fill, cache_dir)
    skipped, upscaled = meta["skipped"], meta["upscaled"]
    unreadable = f"{len(skipped)} of {meta['files']} files under {root} are not readable images: {_listing(skipped)}"
    if skipped and strict:
        raise ValueError(unreadable + ". Remove or replace them, or pass strict=False to skip them")
    problems = [unreadable + ". Skipped them; pass strict=True to raise instead"] if skipped else []
    if upscaled:
        problems.append(f"{len(upscaled)} of {meta['n']} images under {root} are smaller than {size} px on "
                        f"their shorter side and were upscaled (blurred): {_listing(upscaled)}. Pass a "
                        "smaller size, or remove them")
    if problems:
        _warn_at_caller(". ".join(problems))
    labels = None if meta["labels"] is None else torch.tensor(meta["labels"], dtype=torch.int64)
    return ImageSet(torch.from_numpy(images[:meta["n"]]), labels, meta["classes"], name)


def coco(root: str | os.PathLike | None = None, split: str = "train2017", size: int = 96,
         cache_dir: str | os.PathLike | None = None, strict: bool = False, workers: int = 0) -> ImageSet:
    """MS-COCO images of ``split`` (train2017: 118k, val2017: 5k) from ``<root>/<split>/*.jpg``,
    unlabelled, as (N, 3, size, size) through the cache. root defaults to <data_root>/coco."""
    splits = ("train2017", "val2017")
    if split not in splits:
        raise ValueError(f"unknown COCO split {split!r}; expected one of {splits}")
    root = Path(root) if root is not None else data_root() / "coco"
    folder = root / split
    if not folder.is_dir() or not any(folder.iterdir()):
        raise FileNotFoundError(
            f"MS-COCO {split} images not found: expected {folder}/*.jpg. Download {split}.zip from "
            f"{COCO_URL} (http://images.cocodataset.org/zips/{split}.zip) and unzip it in {root}, "
            "or pass root= the folder that holds it")
    return image_folder(folder, size=size, name=f"coco-{split}", cache_dir=cache_dir, strict=strict,
                        workers=workers)


# ---------------------------------------------------------------------------------------------------
# STL10


def _stl10_count(path: Path) -> int:
    """The number of images in an STL10 ``*_X.bin`` file, which must hold at least one, whole."""
    image_bytes = 3 * 96 * 96
    nbytes = path.stat().st_size
    if nbytes == 0 or nbytes % image_bytes:
        raise ValueError(f"{path} holds {nbytes} bytes, not a whole number of 3x96x96 images "
                         f"({image_bytes} bytes each); it is empty, truncated or not an STL10 _X.bin file. "
                         f"Download stl10_binary.tar.gz again from {STL10_URL}")
    return nbytes // image_bytes


def read_stl10_images(path: str | os.PathLike) -> np.ndarray:
    """The images of an STL10 ``*_X.bin`` file as a memory-mapped (N, 3, 96, 96) uint8 view, upright.

    The file stores each image as three 96 x 96 planes in column-major order, so rows and columns are
    swapped on reading, as torchvision's STL10 does (reshape to (-1, 3, 96, 96), transpose (0, 1, 3, 2)).
    """
    path = Path(path)
    raw = np.memmap(path, dtype=np.uint8, mode="c", shape=(_stl10_count(path), 3, 96, 96))
    return raw.transpose(0, 1, 3, 2)


def _stl10_classes(folder: Path) -> list[str]:
    """The 10 class names of ``folder/class_names.txt`` (one a line), or the standard ones without it."""
    path = folder / "class_names.txt"
    if not path.is_file():
        return list(STL10_CLASSES)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != len(STL10_CLASSES):
        raise ValueError(f"{path} lists {len(names)} class names; STL10 has {len(STL10_CLASSES)}, one a "
                         "line. Restore it from stl10_binary.tar.gz, or delete it to use the standard names")
    return names


def _stl10_labels(path: Path, count: int) -> np.ndarray:
    """(count,) int64 labels 0..9 from an STL10 ``*_y.bin`` file (stored as uint8 1..10)."""
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != count or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        found = f" in {labels.min() + 1}..{labels.max() + 1}" if len(labels) else ""
        raise ValueError(f"{path} should hold {count} labels in 1..10, one per image of the matching "
                         f"_X.bin file; it holds {len(labels)} values{found}")
    return labels


def stl10(root: str | os.PathLike | None = None, split: str = "train", size: int = 96,
          cache_dir: str | os.PathLike | None = None) -> ImageSet:
    """STL10 from its binary files in ``<root>/stl10_binary/`` (torchvision's layout).

    split: train (5k, labelled), test (8k, labelled), unlabeled (100k), or train+unlabeled (the
    paper's 105k pre-training set; labels -1 for the unlabelled part, as torchvision). A single split
    at 96 px is memory-mapped straight from its file; other sizes, and train+unlabeled, go through
    the cache. Returns images (N, 3, size, size), labels (N,) int64 or None for ``unlabeled``.
    """
    _check_size(size, "stl10")
    if split not in ("train", "test", "unlabeled", "train+unlabeled"):
        raise ValueError(f"unknown STL10 split {split!r}; expected train, test, unlabeled or train+unlabeled")
    parts = split.split("+")
    root = Path(root) if root is not None else data_root()
    folder = root / "stl10_binary"
    x_files = [folder / f"{part}_X.bin" for part in parts]
    y_files = [folder / f"{part}_y.bin" for part in parts if part != "unlabeled"]
    missing = [p.name for p in x_files + y_files if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"STL10 {split} needs {', '.join(missing)} in {folder}. Download stl10_binary.tar.gz "
            f"(2.6 GB) from {STL10_URL} and unpack it in {root}, or pass root= the folder that holds "
            "stl10_binary/")
    classes = _stl10_classes(folder)
    counts = [_stl10_count(p) for p in x_files]
    labels = [_stl10_labels(y, n) for y, n in zip(y_files, counts)]
    if "unlabeled" in parts:
        labels.append(np.full(counts[-1], -1, dtype=np.int64))
    labels = torch.from_numpy(np.concatenate(labels)) if y_files else None
    name = f"stl10-{split}"
    if size == 96 and len(parts) == 1:
        return ImageSet(torch.from_numpy(read_stl10_images(x_files[0])), labels, classes, name)

    def fill(out: np.ndarray) -> dict:
        row = 0
        with tqdm(total=sum(counts), desc=f"caching {name} at {size}px") as bar:
            for path in x_files:
                images = read_stl10_images(path)
                for start in range(0, len(images), _CHUNK):
                    chunk = images[start:start + _CHUNK]
                    out[row:row + len(chunk)] = _resize_square(chunk, size) if size != 96 else chunk
                    row += len(chunk)
                    bar.update(len(chunk))
        return {"n": row}

    stem = f"{name}-{size}-{_fingerprint(x_files, root, size)}"
    images, _ = _cached(stem, sum(counts), size, fill, cache_dir)
    return ImageSet(torch.from_numpy(images), labels, classes, name)


# ---------------------------------------------------------------------------------------------------
# Fashion-MNIST


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An idx file of unsigned bytes (MNIST's format; gzip-compressed or not) as a uint8 array."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path} is a damaged gzip file ({err}); it is truncated or corrupt, get it "
                             "again") from err
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an idx file of unsigned bytes: it starts {data[:4].hex()}, "
                         "expected 000008 and the number of dimensions")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated: its header declares {ndim} dimensions ({4 + 4 * ndim} header "
                         f"bytes) but the file holds {len(data)} bytes; get it again")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    if len(body) != math.prod(shape):
        raise ValueError(f"{path} declares shape {shape} ({math.prod(shape)} bytes) but holds "
                         f"{len(body)} bytes of data; it is truncated or corrupt, get it again")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def fashion_files(root: str | os.PathLike | None, split: str) -> tuple[Path, Path]:
    """The (images, labels) idx files of Fashion-MNIST's ``split`` ("train" or "test"), from the first folder
    that holds both (see :func:`fashion_mnist`); FileNotFoundError, naming the folders and the fix, if none does."""
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    base = Path(root) if root is not None else data_root()
    folders = [base / "FashionMNIST" / "raw", base / "fashion-mnist", base]
    if root is None:
        folders.append(FASHION_MNIST_DEBIAN_DIR)
    for folder in folders:
        found = [next((folder / (s + ext) for ext in ("", ".gz") if (folder / (s + ext)).is_file()), None)
                 for s in stems]
        if all(found):
            return found[0], found[1]
    raise FileNotFoundError(
        f"Fashion-MNIST {split} needs {stems[0]}[.gz] and {stems[1]}[.gz] in one of: "
        f"{', '.join(map(str, folders))}. On Debian/Ubuntu: apt-get install dataset-fashion-mnist "
        f"(installs them in {FASHION_MNIST_DEBIAN_DIR}); or download them from {FASHION_MNIST_URL} "
        "into <root>/FashionMNIST/raw/")


def fashion_mnist(root: str | os.PathLike | None = None, split: str = "train", size: int = 32) -> ImageSet:
    """Fashion-MNIST (train: 60k, test: 10k; 10 classes) from its idx files, as (N, 3, size, size).

    Files are looked for in <root>/FashionMNIST/raw (torchvision's layout), <root>/fashion-mnist and
    <root>; with no root, also in the Debian package's folder. At size 28 the images are returned as
    they are; at any other size the 28 px item is resized to 7/8 of the side and centred on black (at
    32 px: the classic 2 px border). Grayscale is repeated to three channels without a copy.
    """
    _check_size(size, "fashion_mnist")
    if split not in ("train", "test"):
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; expected train or test")
    image_file, label_file = fashion_files(root, split)
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.shape != (len(images),):
        raise ValueError(f"{image_file} and {label_file} do not match: images {images.shape}, labels "
                         f"{labels.shape}; expected (N, 28, 28) and (N,)")
    if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
        first = int(np.argmax(labels >= len(FASHION_MNIST_CLASSES)))
        raise ValueError(f"{label_file} holds label {labels[first]} at item {first}; Fashion-MNIST labels are "
                         f"0-{len(FASHION_MNIST_CLASSES) - 1}. The file is corrupt or not Fashion-MNIST's; "
                         "get it again")
    images = torch.from_numpy(images.copy())[:, None]
    if size != images.shape[-1]:
        inner = round(size * 7 / 8)
        images = F.interpolate(images.float(), size=(inner, inner), mode="bilinear", antialias=True,
                               align_corners=False).round().clamp(0, 255).to(torch.uint8)
        before = (size - inner) // 2
        images = F.pad(images, (before, size - inner - before, before, size - inner - before))
    return ImageSet(images.expand(-1, 3, -1, -1), torch.from_numpy(labels.astype(np.int64)),
                    list(FASHION_MNIST_CLASSES), f"fashion_mnist-{split}")


def clutter(items: ImageSet, n: int, size: int = 64, per_image: tuple[int, int] = (2, 4),
            scale: tuple[float, float] = (0.3, 0.5), seed: int = 0) -> ImageSet:
    """``n`` canvases (n, 3, size, size) uint8, each holding ``per_image`` (min, max) items drawn from
    ``items`` at random positions and sizes (``scale`` of the side), as in "cluttered MNIST".

    Items are pasted by pixel-wise maximum onto black, which suits items on a black background
    (Fashion-MNIST); each stays whole inside the canvas. Unlabelled: for pre-training. Same
    arguments, same bytes.
    """
    _check_size(size, "clutter")
    low, high = per_image
    if not (1 <= low <= high) or not (0 < scale[0] <= scale[1] <= 1) or len(items) == 0:
        raise ValueError(f"clutter needs 1 <= per_image[0] <= per_image[1], 0 < scale[0] <= scale[1] "
                         f"<= 1 and at least one item; got per_image={per_image}, scale={scale}, "
                         f"{len(items)} items")
    gen = torch.Generator().manual_seed(seed)
    count = torch.randint(low, high + 1, (n,), generator=gen)
    canvas = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    for slot in range(high):
        idx = torch.nonzero(count > slot).flatten()
        m = len(idx)
        pick = torch.randint(len(items), (m,), generator=gen)
        side = scale[0] + (scale[1] - scale[0]) * torch.rand(m, generator=gen)  # fraction of the canvas
        centre = (1 - side)[:, None] * (2 * torch.rand(m, 2, generator=gen) - 1)  # in [-1, 1] coords
        for start in range(0, m, _CHUNK):
            rows = slice(start, start + _CHUNK)
            # affine_grid maps canvas coordinates to item coordinates: (canvas - centre) / side
            theta = torch.zeros(len(idx[rows]), 2, 3)
            theta[:, 0, 0] = theta[:, 1, 1] = 1 / side[rows]
            theta[:, :, 2] = -centre[rows] / side[rows, None]
            grid = F.affine_grid(theta, [len(theta), 3, size, size], align_corners=False)
            pasted = F.grid_sample(items.images[pick[rows]].float(), grid, mode="bilinear",
                                   padding_mode="zeros", align_corners=False)
            pasted = pasted.round().clamp(0, 255).to(torch.uint8)
            canvas[idx[rows]] = torch.maximum(canvas[idx[rows]], pasted)
    return ImageSet(canvas, None, items.classes, f"{items.name}-clutter")


def fashion_mnist_clutter(root: str | os.PathLike | None = None, split: str = "train", size: int = 64,
                          n: int | None = None, seed: int = 0, per_image: tuple[int, int] = (2, 4),
                          scale: tuple[float, float] = (0.3, 0.5)) -> ImageSet:
    """Cluttered canvases (n, 3, size, size) of ``per_image`` Fashion-MNIST items of ``split`` each, at
    ``scale`` of the side (see :func:`clutter`; notebook 06 takes 4 items at 0.44 of 64 px: 28 px, the
    items' size in the 32-px object-centric images); n defaults to the number of items."""
    items = fashion_mnist(root, split, size=28)
    return clutter(items, len(items) if n is None else n, size=size, per_image=tuple(per_image),
                   scale=tuple(scale), seed=seed)


# ---------------------------------------------------------------------------------------------------
# The embedded default and the entry point


def _split_seed(seed: int, split: str, mode: str) -> int:
    """A seed for one (seed, split, mode), so that splits never share images."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{split}/{mode}".encode()).digest()[:8], "big") >> 1


def embedded(root: str | os.PathLike | None = None, split: str = "train", size: int = 40,
             mode: str = "object", n: int | None = None, seed: int = 0, num_classes: int | None = None) -> ImageSet:
    """The procedural default data (see s2r2lib.synthetic): images (n, 3, size, size), no files needed.

    mode ``object``: splits train, test (labelled, balanced: the linear probe's), unlabeled (for
    pre-training; labels None) and train+unlabeled (labels -1 for the unlabelled part). mode
    ``cluttered``: split unlabeled only, labels None. n defaults to EMBEDDED_SIZES[split] (the sum
    for train+unlabeled). Each split draws from its own seed. ``num_classes`` keeps only the first
    classes (see :func:`s2r2lib.synthetic.render`). ``root`` is unused; it is accepted so that
    ``load(name, root=...)`` works for every name.
    """
    _check_size(size, "embedded")
    if mode not in synthetic.MODES:
        raise ValueError(f"unknown embedded mode {mode!r}; expected one of {synthetic.MODES}")
    if mode == "cluttered" and split != "unlabeled":
        raise ValueError(f"cluttered embedded images are for pre-training: use split='unlabeled', not "
                         f"{split!r}; probe on load('embedded', split='train' or 'test', mode='object')")
    if split == "train+unlabeled":
        if n is not None:
            raise ValueError("embedded train+unlabeled takes the sizes of its parts; pass n to each "
                             "split separately instead")
        train, unlabeled = (embedded(split=part, size=size, mode=mode, seed=seed) for part in ("train", "unlabeled"))
        labels = torch.cat([train.labels, torch.full((len(unlabeled),), -1)])
        return ImageSet(torch.cat([train.images, unlabeled.images]), labels, train.classes,
                        f"embedded-{mode}-{split}")
    if split not in EMBEDDED_SIZES:
        raise ValueError(f"unknown embedded split {split!r}; expected one of "
                         f"{[*EMBEDDED_SIZES, 'train+unlabeled']}")
    n = EMBEDDED_SIZES[split] if n is None else n
    images, present = synthetic.render(n, size=size, mode=mode, seed=_split_seed(seed, split, mode),
                                       num_classes=num_classes)
    labels = present.long().argmax(1) if mode == "object" and split != "unlabeled" else None
    return ImageSet(images, labels, list(synthetic.CLASSES), f"embedded-{mode}-{split}")


def try_load(name: str, root: str | os.PathLike | None = None, split: str | None = None,
             size: int | None = None, **kwargs) -> ImageSet | None:
    """:func:`load`, or None with the whole printed reason (it says where to get the files) when the data
    set's files are not there (for optional previews of real data in the notebooks)."""
    try:
        return load(name, root=root, split=split, size=size, **kwargs)
    except FileNotFoundError as error:
        print(f"{name}: not available here. {error}")  # whole: the message says how to get the files
        return None


def subset(images: ImageSet, n: int | None, seed: int = 0) -> ImageSet:
    """``n`` images drawn without replacement (fixed by ``seed``), in their original order; all of them
    when ``n`` is None or not smaller than the set (e.g. a probe on part of STL10's or Fashion-MNIST's splits)."""
    if n is not None:
        _check_whole(n, "subset: n (the number of images to keep; None keeps all)", 0)
    if n is None or n >= len(images):
        return images
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    labels = None if images.labels is None else images.labels[keep]
    return dataclasses.replace(images, images=images.images[keep], labels=labels, name=f"{images.name}[{n}]")


DATASETS: dict[str, Callable[..., ImageSet]] = {
    "embedded": embedded,
    "stl10": stl10,
    "coco": coco,
    "folder": image_folder,
    "fashion_mnist": fashion_mnist,
    "fashion_mnist_clutter": fashion_mnist_clutter,
}


def load(name: str, root: str | os.PathLike | None = None, split: str | None = None,
         size: int | None = None, **kwargs) -> ImageSet:
    """The data set ``name`` (one of DATASETS) as an ImageSet; arguments left as None keep the
    loader's defaults, other keywords go to the loader (e.g. mode=, n=, seed= for embedded)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(DATASETS)}")
    given = {key: value for key, value in (("root", root), ("split", split), ("size", size))
             if value is not None}
    return DATASETS[name](**given, **kwargs)
