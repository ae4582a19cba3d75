"""Data loaders on small files in the real formats, the cache, and the embedded generator."""

import gzip
import hashlib
import io
import os
import re
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps
from sklearn.linear_model import LogisticRegression
from torchvision.datasets import STL10

from s2r2lib import data, synthetic

# ---------------------------------------------------------------------------------------------------
# STL10


def _upright_stl10(count: int) -> np.ndarray:
    """(count, 3, 96, 96) uint8 images with an asymmetric pattern: a bright top-left block in red,
    a horizontal bar (row 10) in green, a vertical bar (column 80) in blue, and the index in pixel (95, 0)."""
    images = np.zeros((count, 3, 96, 96), dtype=np.uint8)
    images[:, 0, :30, :20] = 250
    images[:, 1, 10, :] = 200
    images[:, 2, :, 80] = 150
    images[:, 0, 95, 0] = np.arange(count)
    return images


def _write_stl10(root, train=3, test=2, unlabeled=4):
    """STL10's binary files under root/stl10_binary, planes stored column-major; returns the images."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for split, count in (("train", train), ("test", test), ("unlabeled", unlabeled)):
        images = _upright_stl10(count)
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes((np.arange(count) % 10 + 1).astype(np.uint8).tobytes())
        written[split] = images
    (folder / "class_names.txt").write_text("\n".join(data.STL10_CLASSES) + "\n")
    return written


def test_stl10_reads_images_upright_like_torchvision(tmp_path):
    written = _write_stl10(tmp_path)
    train = data.stl10(tmp_path, "train")
    reference = STL10.__new__(STL10)  # torchvision's own reader, without its md5 checks of full files
    reference.root = str(tmp_path)
    tv_images, tv_labels = reference._STL10__loadfile("train_X.bin", "train_y.bin")
    assert train.images.shape == (3, 3, 96, 96) and train.images.dtype == torch.uint8
    np.testing.assert_array_equal(train.images.numpy(), written["train"])
    np.testing.assert_array_equal(train.images.numpy(), tv_images)
    assert train.images[0, 0, 5, 5] == 250 and train.images[0, 0, 5, 50] == 0  # block is top-left
    assert train.labels.tolist() == tv_labels.tolist() == [0, 1, 2]
    assert train.classes == data.STL10_CLASSES


def test_stl10_unlabeled_has_no_labels_and_train_plus_unlabeled_marks_them(tmp_path):
    _write_stl10(tmp_path, train=3, unlabeled=4)
    assert data.stl10(tmp_path, "unlabeled").labels is None
    both = data.stl10(tmp_path, "train+unlabeled", cache_dir=tmp_path / "cache")
    assert both.images.shape == (7, 3, 96, 96)
    assert both.labels.tolist() == [0, 1, 2, -1, -1, -1, -1]
    assert both.images[:, 0, 95, 0].tolist() == [0, 1, 2, 0, 1, 2, 3]  # train first, then unlabeled


def test_stl10_sets_of_other_files_or_sizes_never_share_a_cache_entry(tmp_path):
    _write_stl10(tmp_path / "a")
    _write_stl10(tmp_path / "b")
    inverted = tmp_path / "b" / "stl10_binary" / "test_X.bin"
    inverted.write_bytes(bytes(255 - b for b in inverted.read_bytes()))
    a, b = (data.stl10(tmp_path / name, "test", size=48, cache_dir=tmp_path / "cache") for name in ("a", "b"))
    assert not torch.equal(a.images, b.images) and a.name == b.name == "stl10-test"
    large = data.stl10(tmp_path / "a", "test", size=97, cache_dir=tmp_path / "cache")  # any size, upscaled too
    assert large.images.shape == (2, 3, 97, 97) and large.images[0, 0, 3, 3] > 240
    assert data.stl10(tmp_path / "a", "train").name == "stl10-train"  # (96 px: read from the file, no cache)


def test_stl10_resized_through_the_cache_keeps_orientation_and_is_reused(tmp_path, monkeypatch):
    _write_stl10(tmp_path)
    small = data.stl10(tmp_path, "test", size=48, cache_dir=tmp_path / "cache")
    assert small.images.shape == (2, 3, 48, 48)
    assert small.images[0, 0, 2, 2] > 240 and small.images[0, 0, 2, 30] < 10  # still top-left
    assert small.images[0, 1, 5].float().mean() > 50 and small.images[0, 2, :, 40].float().mean() > 50

    def unreadable(path):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(data, "read_stl10_images", unreadable)
    again = data.stl10(tmp_path, "test", size=48, cache_dir=tmp_path / "cache")
    assert torch.equal(again.images, small.images)


def test_stl10_labels_1_to_10_are_classes_0_to_9_and_others_are_refused(tmp_path):
    _write_stl10(tmp_path, train=2)
    labels = tmp_path / "stl10_binary" / "train_y.bin"
    labels.write_bytes(bytes([1, 10]))  # the first and the last class (airplane, truck)
    assert data.stl10(tmp_path, "train").labels.tolist() == [0, 9]
    for bad in (0, 11):
        labels.write_bytes(bytes([1, bad]))
        found = rf"values in {min(bad, 1)}\.\.{max(bad, 1)}"
        with pytest.raises(ValueError, match=rf"should hold 2 labels in 1\.\.10.*{found}"):
            data.stl10(tmp_path, "train")


def test_stl10_without_class_names_txt_has_the_standard_names_also_through_the_cache(tmp_path):
    _write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "class_names.txt").unlink()
    assert data.stl10(tmp_path, "test").classes == data.STL10_CLASSES
    assert data.stl10(tmp_path, "test", size=32, cache_dir=tmp_path / "cache").classes == data.STL10_CLASSES


def test_stl10_missing_or_truncated_files_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train_X\.bin.*train_y\.bin.*cs\.stanford\.edu"):
        data.stl10(tmp_path, "train")
    _write_stl10(tmp_path)
    with (tmp_path / "stl10_binary" / "test_X.bin").open("ab") as handle:
        handle.write(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a whole number of 3x96x96 images"):
        data.stl10(tmp_path, "test")
    with pytest.raises(ValueError, match="unknown STL10 split"):
        data.stl10(tmp_path, "validation")


# ---------------------------------------------------------------------------------------------------
# Fashion-MNIST


def _idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_fashion(folder, count=6, compress=True):
    """Fashion-MNIST idx files for both splits in ``folder``; returns the train images and labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            raw = _idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
        if prefix == "train":
            written = images, labels
    return written


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_plain_and_gzip(tmp_path, compress):
    images, labels = _write_fashion(tmp_path, compress=compress)
    suffix = ".gz" if compress else ""
    np.testing.assert_array_equal(data.read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}"), images)
    np.testing.assert_array_equal(data.read_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}"), labels)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    images, _ = _write_fashion(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(path)
    path.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(ValueError, match="not an idx file of unsigned bytes: it starts 504b0304, expected 000008 "
                                         "and the number of dimensions$"):
        data.read_idx(path)


def test_fashion_mnist_found_in_torchvision_layout_and_padded_to_size(tmp_path):
    images, labels = _write_fashion(tmp_path / "FashionMNIST" / "raw")
    native = data.fashion_mnist(tmp_path, "train", size=28)
    np.testing.assert_array_equal(native.images[:, 0].numpy(), images)
    assert native.labels.tolist() == labels.tolist() and native.labels.dtype == torch.int64
    assert native.classes == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                              "Bag", "Ankle boot"]  # the data set's README, labels 0-9
    padded = data.fashion_mnist(tmp_path, "train", size=32)
    assert padded.images.shape == (6, 3, 32, 32)
    assert torch.equal(padded.images[:, 0], padded.images[:, 2])  # grayscale on all channels
    np.testing.assert_array_equal(padded.images[:, 1, 2:30, 2:30].numpy(), images)  # 2 px border
    assert padded.images[:, :, :2].max() == 0 and padded.images[:, :, :, 30:].max() == 0
    assert data.fashion_mnist(tmp_path, "train", size=64).images.shape == (6, 3, 64, 64)
    small = data.fashion_mnist(tmp_path, "train", size=16)  # the item shrunk to 14 px with antialiasing, centred
    reference = F.interpolate(torch.from_numpy(images)[:, None].float(), size=(14, 14), mode="bilinear",
                              antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(small.images[:, :1, 1:15, 1:15], reference)


def test_fashion_mnist_files_of_zero_items_read_as_an_empty_set(tmp_path):
    for prefix in ("train", "t10k"):
        (tmp_path / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((0, 28, 28), dtype=np.uint8)))
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(0, dtype=np.uint8)))
    assert data.fashion_mnist(tmp_path, "test", size=28).images.shape == (0, 3, 28, 28)


def test_fashion_mnist_plain_files_directly_under_root(tmp_path):
    images, _ = _write_fashion(tmp_path, compress=False)
    read = data.fashion_mnist(tmp_path, size=28)
    np.testing.assert_array_equal(read.images[:, 0].numpy(), images)
    assert read.name == "fashion_mnist-train"


def test_fashion_mnist_missing_names_the_files_and_the_debian_package(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte.*dataset-fashion-mnist"):
        data.fashion_mnist(tmp_path, "test")


@pytest.mark.skipif(not (data.FASHION_MNIST_DEBIAN_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_defaults_to_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("S2R2_DATA_DIR", str(tmp_path))
    test = data.load("fashion_mnist", split="test")
    assert test.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_clutter_places_whole_items_and_is_deterministic():
    white = data.ImageSet(torch.full((1, 3, 28, 28), 255, dtype=torch.uint8), torch.zeros(1, dtype=torch.long),
                          ["square"], "white")
    one = data.clutter(white, n=20, size=64, per_image=(1, 1), scale=(0.25, 0.25), seed=3)
    assert one.images.shape == (20, 3, 64, 64) and one.labels is None
    lit = (one.images[:, 0].float() / 255).sum(dim=(1, 2))
    assert torch.allclose(lit, torch.full((20,), 16.0 ** 2), rtol=0.1)  # a whole 16 x 16 item each
    assert torch.equal(one.images, data.clutter(white, n=20, size=64, per_image=(1, 1), scale=(0.25, 0.25),
                                                seed=3).images)
    many = data.clutter(white, n=20, size=64, per_image=(4, 4), scale=(0.25, 0.25), seed=3)
    assert (many.images[:, 0] > 127).sum() > 2 * (one.images[:, 0] > 127).sum()


def _white_item() -> data.ImageSet:
    """One unlabelled 28 px item, white all over: what clutter pastes shows as its lit pixels."""
    return data.ImageSet(torch.full((1, 3, 28, 28), 255, dtype=torch.uint8), None, None, "white")


def test_clutter_defaults_and_name():
    items = data.embedded(split="test", n=6, size=28)
    default = data.clutter(items, n=3)
    assert torch.equal(default.images, data.clutter(items, n=3, size=64, per_image=(2, 4), scale=(0.3, 0.5),
                                                    seed=0).images)
    assert default.name == "embedded-object-test-clutter"


def test_clutter_at_scale_1_on_the_items_own_size_copies_them_exactly():
    items = data.embedded(split="test", n=5, size=28)
    copies = data.clutter(items, n=10, size=28, per_image=(1, 1), scale=(1.0, 1.0))  # the item fills the canvas
    assert all(any(torch.equal(canvas, item) for item in items.images) for canvas in copies.images)


def test_clutter_places_each_item_at_its_drawn_centre_in_x_then_y():
    white = _white_item()
    one = data.clutter(white, n=50, size=64, per_image=(1, 1), scale=(0.25, 0.25), seed=4)
    # the draws clutter makes, in its order
    gen = torch.Generator().manual_seed(4)
    torch.randint(1, 2, (50,), generator=gen)  # items per canvas
    torch.randint(1, (50,), generator=gen)  # which item
    torch.rand(50, generator=gen)  # its side
    centre = 0.75 * (2 * torch.rand(50, 2, generator=gen) - 1)  # its centre in [-1, 1] canvas coordinates: x, y
    weight = one.images[:, 0].float()
    coords = torch.arange(64.0) + 0.5
    x = (weight.sum(1) * coords).sum(1) / weight.sum((1, 2))
    y = (weight.sum(2) * coords).sum(1) / weight.sum((1, 2))
    assert torch.allclose(torch.stack([x, y], 1), (centre + 1) * 32, atol=0.3)


def test_clutter_holds_per_image_items_uniformly_between_min_and_max():
    white = _white_item()
    area = [data.clutter(white, n=600, size=64, per_image=counts, scale=(0.1, 0.1), seed=2).images[:, 0].float().sum()
            for counts in ((1, 1), (1, 2))]
    assert 1.4 < area[1] / area[0] < 1.6  # 1.5 items a canvas on average (small items rarely overlap)


def test_clutter_draws_each_items_side_within_its_scale():
    white = _white_item()
    one = data.clutter(white, n=200, size=64, per_image=(1, 1), scale=(0.25, 0.5), seed=0)
    side = (one.images[:, 0].float() / 255).sum(dim=(1, 2)).sqrt()  # a whole square item per canvas
    assert side.min() >= 0.25 * 64 - 1 and side.max() <= 0.5 * 64 + 1
    assert side.min() < 0.3 * 64 and side.max() > 0.45 * 64  # and spread over the range, not pinned to an end


def test_fashion_mnist_clutter_composes_real_items(tmp_path):
    _write_fashion(tmp_path)
    composite = data.load("fashion_mnist_clutter", root=tmp_path, n=8, seed=1)
    assert composite.images.shape == (8, 3, 64, 64) and composite.labels is None
    assert composite.images.float().mean() > 10  # items were pasted onto the black canvas
    assert torch.equal(composite.images, data.load("fashion_mnist_clutter", root=tmp_path, n=8, seed=1).images)
    assert not torch.equal(composite.images, data.load("fashion_mnist_clutter", root=tmp_path, n=8, seed=2).images)


# ---------------------------------------------------------------------------------------------------
# Image folders, bad files, the cache


def _save(path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, **kwargs).save(path)


def _solid(colour, size=(40, 30)):
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (size[1], size[0], 3)).copy()


def _folder_with_bad_files(root):
    """Four good images, four kinds of odd-but-valid image, four bad files and one non-image file."""
    _save(root / "a.jpg", _solid((200, 30, 30)))
    _save(root / "sub" / "b.png", _solid((30, 200, 30)))
    wide = np.zeros((32, 96, 3), dtype=np.uint8)
    wide[:, :32, 0], wide[:, 32:64, 1], wide[:, 64:, 2] = 255, 255, 255  # red | green | blue thirds
    _save(root / "sub" / "deeper" / "wide.PNG", wide)
    _save(root / "c.bmp", _solid((30, 30, 200)))
    _save(root / "gray.png", np.full((20, 20), 100, dtype=np.uint8))
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[..., :3], rgba[:10, :, 3] = 255, 255  # white, top half opaque, bottom half transparent
    _save(root / "rgba.png", rgba, mode="RGBA")
    _save(root / "deep16.png", np.full((20, 20), 40000, dtype=np.uint16))
    Image.fromarray(_solid((10, 220, 120))).convert("P").save(root / "palette.gif")
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (root / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "corrupt.png").write_bytes(os.urandom(300))
    (root / "empty.jpeg").write_bytes(b"")
    (root / "notes.jpg").write_text("this is text, not a picture\n")
    (root / "readme.txt").write_text("ignored: not an image extension\n")


def _warned_from(caught) -> list[str]:
    """The files the caught warnings point at. Under mutmut its trampoline sits between the caller and data.py,
    so the warnings point there: that case reads as the caller."""
    if "MUTANT_UNDER_TEST" in os.environ:
        return [__file__ if "mutmut" in w.filename else w.filename for w in caught]
    return [w.filename for w in caught]


def test_folder_skips_bad_files_with_one_warning_and_converts_odd_modes(tmp_path):
    _folder_with_bad_files(tmp_path / "images")
    with pytest.warns(UserWarning) as caught:
        images = data.image_folder(tmp_path / "images", size=16, cache_dir=tmp_path / "cache")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and messages[0].startswith("4 of 12 files")
    assert _warned_from(caught) == [__file__]  # the warning points at the caller's line, not into data.py
    # all four listed, in order, each with its reason, and nothing after the last ("and N more" only past five)
    assert re.search(r": corrupt\.png \(.*\); empty\.jpeg \(.*\); notes\.jpg \(.*\); truncated\.jpg \([^;]*\)\. Skipped them",
                     messages[0])
    assert ". Skipped them; pass strict=True to raise instead" in messages[0]
    for name in ("truncated.jpg", "corrupt.png", "empty.jpeg", "notes.jpg"):
        assert name in messages[0]
    assert "corrupt.png (UnidentifiedImageError: cannot identify image file" in messages[0]  # each reason's kind
    assert images.images.shape == (8, 3, 16, 16) and images.labels is None
    by_name = dict(zip(["a.jpg", "c.bmp", "deep16.png", "gray.png", "palette.gif", "rgba.png", "sub/b.png",
                        "sub/deeper/wide.PNG"], images.images))
    assert by_name["a.jpg"][:, 8, 8].tolist() == pytest.approx([200, 30, 30], abs=8)
    assert by_name["gray.png"][:, 8, 8].tolist() == [100, 100, 100]
    assert by_name["deep16.png"][:, 8, 8].tolist() == [round(40000 / 257)] * 3  # scaled, not clipped to 255
    assert by_name["rgba.png"][:, 2, 8].tolist() == [255] * 3 and by_name["rgba.png"][:, 13, 8].tolist() == [0] * 3
    assert by_name["palette.gif"][:, 8, 8].tolist() == pytest.approx([10, 220, 120], abs=16)  # quantised
    wide = by_name["sub/deeper/wide.PNG"]  # centre crop keeps only the green third
    assert wide[1].min() > 200 and wide[0].max() < 30 and wide[2].max() < 30


def test_folder_strict_mode_raises_naming_the_bad_file(tmp_path):
    _folder_with_bad_files(tmp_path / "images")
    with pytest.raises(ValueError, match=r"cannot read image .*(corrupt|empty|notes|truncated)"):
        data.image_folder(tmp_path / "images", size=16, cache_dir=tmp_path / "cache", strict=True)
    with pytest.warns(UserWarning) as caught:  # through load() too, the warning points at the caller's line
        data.load("folder", root=tmp_path / "images", size=16, cache_dir=tmp_path / "cache")
    assert _warned_from(caught) == [__file__]
    with pytest.raises(ValueError, match="4 of 12 files"):  # a cache built leniently still counts them
        data.image_folder(tmp_path / "images", size=16, cache_dir=tmp_path / "cache", strict=True)


def test_folder_cache_is_reused_without_decoding_and_rebuilt_when_files_change(tmp_path, monkeypatch):
    folder, cache = tmp_path / "images", tmp_path / "cache"
    for i in range(3):
        _save(folder / f"{i}.png", _solid((10 * i, 0, 0)))
    first = data.image_folder(folder, size=8, cache_dir=cache)
    (cached,) = cache.glob("*.npy")
    built_at = cached.stat().st_mtime_ns
    assert np.load(cached).shape == (3, 3, 8, 8)

    real_decode = data._decode
    monkeypatch.setattr(data, "_decode", lambda *a, **k: pytest.fail("decoded although cached"))
    again = data.image_folder(folder, size=8, cache_dir=cache)
    assert torch.equal(again.images, first.images) and cached.stat().st_mtime_ns == built_at

    monkeypatch.setattr(data, "_decode", real_decode)
    _save(folder / "1.png", _solid((0, 0, 250), size=(41, 30)))
    changed = data.image_folder(folder, size=8, cache_dir=cache)
    assert changed.images[1, 2, 4, 4] == 250
    _save(folder / "3.png", _solid((0, 250, 0)))
    assert len(data.image_folder(folder, size=8, cache_dir=cache)) == 4
    assert len(data.image_folder(folder, size=12, cache_dir=cache)) == 4
    assert len(list(cache.glob("*.npy"))) == 4  # one file per (file list, size)
    assert not list(cache.glob(".*tmp"))  # no temporary files left behind


def test_a_cache_array_without_its_metadata_is_rebuilt(tmp_path):
    """A run killed between renaming the array into place and writing its metadata leaves an array without
    metadata: the next load builds both again rather than failing."""
    def fill(out):
        out[:] = 9
        return {"n": 2}

    data._cached("half", 2, 4, fill, tmp_path)
    (tmp_path / "half.json").unlink()
    images, meta = data._cached("half", 2, 4, fill, tmp_path)
    assert meta == {"n": 2} and (images == 9).all()


def test_a_bad_file_and_a_tiny_image_are_told_in_one_warning(tmp_path):
    _save(tmp_path / "images" / "fine.png", _solid((0, 200, 0)))
    _save(tmp_path / "images" / "dot.png", _solid((0, 200, 0), size=(2, 2)))
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning) as caught:
        data.image_folder(tmp_path / "images", size=16, cache_dir=tmp_path / "cache")
    assert len(caught) == 1
    assert re.search(r"broken\.png \(.*\)\. Skipped them; pass strict=True to raise instead\. 1 of 2 images .* "
                     r"upscaled \(blurred\): dot\.png \(2x2\)", str(caught[0].message))


def test_keeping_the_first_rows_of_a_cache_copies_all_of_them_past_several_chunks(tmp_path):
    path = tmp_path / "cache.npy"
    rows = 2 * data._CHUNK + 500  # two whole chunks and a part
    np.save(path, np.arange(rows + 100, dtype=np.uint32).astype(np.uint8).reshape(-1, 1, 1, 1).repeat(3, 1))
    data._keep_rows(path, rows)
    kept = np.load(path)
    assert kept.shape == (rows, 3, 1, 1) and (kept[:, 0, 0, 0] == np.arange(rows, dtype=np.uint32) % 256).all()
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npy"]  # its temporary renamed into place


def test_a_cache_of_readable_images_only_is_written_once_not_copied(tmp_path, monkeypatch):
    for i in range(3):
        _save(tmp_path / "images" / f"{i}.png", _solid((10 * i, 0, 0)))
    monkeypatch.setattr(data, "_keep_rows", lambda *a: pytest.fail("copied a cache that had every row"))
    assert len(data.image_folder(tmp_path / "images", size=8, cache_dir=tmp_path / "cache")) == 3


def test_labelled_folder_reads_class_subfolders(tmp_path):
    for cls, colour in (("cat", (250, 0, 0)), ("dog", (0, 0, 250))):
        for i in range(2):
            _save(tmp_path / "pets" / cls / f"{i}.jpg", _solid(colour))
    unlabelled = data.load("folder", root=tmp_path / "pets", size=8, cache_dir=tmp_path / "cache")
    assert unlabelled.labels is None and unlabelled.classes is None  # cached first, under the same name and size
    pets = data.load("folder", root=tmp_path / "pets", size=8, labelled=True, cache_dir=tmp_path / "cache")
    assert pets.classes == ["cat", "dog"] and pets.labels.tolist() == [0, 0, 1, 1]
    assert (pets.images[pets.labels == 1, 2] > 200).all()


def test_coco_skips_a_bad_file_by_default_and_raises_when_strict(tmp_path):
    _save(tmp_path / "val2017" / "000000000001.jpg", _solid((0, 120, 0), size=(128, 100)))
    (tmp_path / "val2017" / "000000000002.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="1 of 2 files"):
        val = data.coco(tmp_path, split="val2017", cache_dir=tmp_path / "cache")
    assert val.images.shape == (1, 3, 96, 96)  # 96 px by default, as the paper's STL10
    with pytest.raises(ValueError, match=r"000000000002\.jpg"):
        data.coco(tmp_path, split="val2017", cache_dir=tmp_path / "strict", strict=True)


def test_coco_decodes_with_the_workers_it_is_given(tmp_path, spy):
    for i in range(2):
        _save(tmp_path / "val2017" / f"{i:012d}.jpg", _solid((0, 120, 0), size=(64, 48)))
    calls = spy(data, "image_folder")
    data.coco(tmp_path, split="val2017", size=24, cache_dir=tmp_path / "cache", workers=2)
    assert [(call["workers"], call["cache_dir"]) for call in calls] == [(2, tmp_path / "cache")]


def test_coco_reads_its_split_folder_and_explains_a_missing_one(tmp_path, monkeypatch):
    for i in range(2):
        _save(tmp_path / "val2017" / f"{i:012d}.jpg", _solid((0, 120, 0), size=(64, 48)))
    monkeypatch.setattr(data.multiprocessing, "get_context", lambda *a: pytest.fail("started worker processes"))
    val = data.load("coco", root=tmp_path, split="val2017", size=24, cache_dir=tmp_path / "cache")  # in-process
    assert val.images.shape == (2, 3, 24, 24) and val.labels is None and val.name == "coco-val2017"
    with pytest.raises(FileNotFoundError, match=r"train2017.*cocodataset\.org"):
        data.load("coco", root=tmp_path, split="train2017")


def test_empty_or_missing_folder_raises_file_not_found(tmp_path):
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "a.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no image files"):
        data.image_folder(tmp_path / "nothing", cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.image_folder(tmp_path / "absent", cache_dir=tmp_path / "cache")


def test_folder_of_only_bad_files_raises_and_caches_nothing(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"")
    (tmp_path / "images" / "b.png").write_text("text")
    with pytest.raises(ValueError, match="none of the 2 image files"):
        data.image_folder(tmp_path / "images", cache_dir=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []  # the build's lock


def test_folder_decoding_in_worker_processes_matches_in_process(tmp_path):
    _folder_with_bad_files(tmp_path / "images")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        here = data.image_folder(tmp_path / "images", size=16, cache_dir=tmp_path / "a")
        pooled = data.image_folder(tmp_path / "images", size=16, cache_dir=tmp_path / "b", workers=2)
    assert torch.equal(here.images, pooled.images)


def test_folder_decodes_in_process_by_default_and_its_workers_are_spawned(tmp_path, monkeypatch):
    for i in range(2):
        _save(tmp_path / "images" / f"{i}.png", _solid((0, 0, 90 * i), size=(120, 100)))
    real_context, methods = data.multiprocessing.get_context, []
    monkeypatch.setattr(data.multiprocessing, "get_context", lambda method=None: methods.append(method))
    default = data.image_folder(tmp_path / "images", cache_dir=tmp_path / "cache")
    assert methods == [] and default.images.shape == (2, 3, 96, 96)  # in this process; 96 px, as STL10
    monkeypatch.setattr(data.multiprocessing, "get_context",
                        lambda method=None: methods.append(method) or real_context(method))
    data.image_folder(tmp_path / "images", size=8, cache_dir=tmp_path / "cache", workers=1)
    assert methods == ["spawn"]  # not fork, which would copy torch's threads into the workers


def _exif_jpeg(path, array, orientation):
    """A JPEG of ``array`` whose EXIF says to rotate it by ``orientation`` (6: 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, "JPEG", exif=exif.tobytes(), quality=95)


def test_folder_turns_phone_photos_upright_by_their_exif_orientation(tmp_path):
    stored = np.zeros((40, 60, 3), dtype=np.uint8)  # 60 wide, 40 high, as the sensor wrote it
    stored[:, :30, 0] = 250  # left half red
    stored[:, 30:, 2] = 250  # right half blue
    (tmp_path / "photos").mkdir()
    _exif_jpeg(tmp_path / "photos" / "portrait.jpg", stored, orientation=6)
    with Image.open(tmp_path / "photos" / "portrait.jpg") as raw:
        assert raw.size == (60, 40) and raw.getexif()[0x0112] == 6
        upright = np.asarray(ImageOps.exif_transpose(raw))  # Pillow's reference: 40 wide, 60 high
    assert upright.shape == (60, 40, 3) and upright[5, 20, 0] > 200 and upright[55, 20, 2] > 200
    image = data.image_folder(tmp_path / "photos", size=16, cache_dir=tmp_path / "cache").images[0]
    # displayed portrait: red on top, blue below (stored: red left, blue right)
    assert image[0, 2, 13] > 200 and image[2, 2, 13] < 40
    assert image[2, 13, 2] > 200 and image[0, 13, 2] < 40


def _png_bomb(path, width, height):
    """A valid grayscale PNG of width x height black pixels, a few hundred kB on disk."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, rows = zlib.compressobj(9), b"\x00" * (width + 1) * 100  # 100 rows, filter byte first
    body = b"".join(packer.compress(rows) for _ in range(height // 100)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_before_decoding_and_counted(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    _save(folder / "fine.png", _solid((0, 200, 0)))
    _png_bomb(folder / "bomb.png", 10_000, 10_000)  # 100 Mpx declared: 1 GB if decoded
    assert (folder / "bomb.png").stat().st_size < 1_000_000
    real_load = ImageFile.ImageFile.load

    def load_small_only(image):
        assert image.width * image.height < 10**6, "decoded the bomb's pixels"
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load_small_only)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = data.image_folder(folder, size=16, cache_dir=tmp_path / "cache")
    assert len(images) == 1 and images.images[0, 1, 8, 8] > 190
    assert [w.category for w in caught] == [UserWarning]  # Pillow's DecompressionBombWarning does not escape
    assert "1 of 2 files" in str(caught[0].message) and "bomb.png (10000x10000" in str(caught[0].message)
    with pytest.raises(ValueError, match=r"bomb\.png.*MAX_IMAGE_PIXELS"):
        data.image_folder(folder, size=16, cache_dir=tmp_path / "strict", strict=True)


def test_pixel_limit_is_pillows_max_image_pixels(tmp_path, monkeypatch):
    _save(tmp_path / "images" / "small.png", _solid((10, 10, 10), size=(30, 30)))
    _save(tmp_path / "images" / "large.png", _solid((10, 10, 10), size=(40, 30)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 900)  # at the limit passes (as in Pillow); 1200 px are refused
    with pytest.warns(UserWarning, match=r"1 of 2 files.*large\.png \(40x30 is 1200 pixels"):
        assert len(data.image_folder(tmp_path / "images", size=16, cache_dir=tmp_path / "cache")) == 1


def test_tiny_images_are_counted_as_upscaled(tmp_path):
    folder = tmp_path / "images"
    _save(folder / "dot.png", _solid((255, 0, 0), size=(1, 1)))
    _save(folder / "thumb.png", _solid((0, 255, 0), size=(16, 16)))
    _save(folder / "wide.png", _solid((0, 0, 255), size=(80, 20)))  # shorter side 20 < 32
    _save(folder / "big.png", _solid((0, 0, 255), size=(40, 32)))
    with pytest.warns(UserWarning) as caught:
        images = data.image_folder(folder, size=32, cache_dir=tmp_path / "cache")
    assert len(images) == 4 and len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("3 of 4 images") and "upscaled" in message
    assert message.endswith(". Pass a smaller size, or remove them")  # and what to do about it
    assert "dot.png (1x1)" in message and "thumb.png (16x16)" in message and "wide.png (80x20)" in message
    assert "big.png" not in message
    with pytest.warns(UserWarning) as caught:
        data.image_folder(folder, size=16, cache_dir=tmp_path / "cache")
    assert str(caught[0].message).startswith("1 of 4 images") and "thumb.png" not in str(caught[0].message)


def test_folder_split_reads_a_subfolder_and_unlabeled_reads_the_whole_folder(tmp_path):
    for split, count in (("train", 2), ("test", 3)):
        for i in range(count):
            _save(tmp_path / "images" / split / f"{i}.png", _solid((10 * i, 0, 0)))
    cache = tmp_path / "cache"
    assert len(data.load("folder", root=tmp_path / "images", split="unlabeled", size=8, cache_dir=cache)) == 5
    assert len(data.load("folder", root=tmp_path / "images", size=8, cache_dir=cache)) == 5
    test = data.load("folder", root=tmp_path / "images", split="test", size=8, cache_dir=cache)
    assert len(test) == 3 and test.name == "folder-images-test"
    with pytest.raises(FileNotFoundError, match=r"split 'val'.*images/val"):
        data.load("folder", root=tmp_path / "images", split="val", size=8, cache_dir=cache)


def test_cache_root_env_then_checkout_then_user_cache(tmp_path, monkeypatch):
    checkout = tmp_path / "clone"
    (checkout / "s2r2lib").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[project]\n")
    (checkout / "notebooks").mkdir()
    elsewhere = tmp_path / "photos"
    elsewhere.mkdir()
    monkeypatch.setenv("S2R2_CACHE_DIR", str(tmp_path / "chosen"))
    monkeypatch.chdir(elsewhere)
    assert data.cache_root() == tmp_path / "chosen"
    monkeypatch.delenv("S2R2_CACHE_DIR")
    monkeypatch.chdir(checkout / "notebooks")
    assert data.cache_root() == checkout / "build" / "cache"
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_root() == tmp_path / "xdg" / "s2r2"
    (elsewhere / "pyproject.toml").write_text("[project]\n")  # another project: not an s2r2 checkout
    assert data.cache_root() == tmp_path / "xdg" / "s2r2"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_root() == tmp_path / "home" / ".cache" / "s2r2"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_root() == tmp_path / "home" / ".cache" / "s2r2"


def test_folder_outside_a_checkout_caches_in_the_user_cache_not_the_working_directory(tmp_path, monkeypatch):
    _save(tmp_path / "photos" / "a.png", _solid((0, 0, 200)))
    monkeypatch.delenv("S2R2_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path / "photos")
    data.image_folder(tmp_path / "photos", size=8)
    assert len(list((tmp_path / "xdg" / "s2r2").glob("*.npy"))) == 1
    assert not (tmp_path / "photos" / "build").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_cache_files_keep_the_users_umask(tmp_path, umask):
    _save(tmp_path / "photos" / "a.png", _solid((0, 0, 200)))
    previous = os.umask(umask)
    try:
        data.image_folder(tmp_path / "photos", size=8, cache_dir=tmp_path / "cache")
    finally:
        os.umask(previous)
    (array,) = (tmp_path / "cache").glob("*.npy")
    assert stat.S_IMODE(array.stat().st_mode) == 0o666 & ~umask


def test_try_load_reads_the_root_and_split_it_is_given(tmp_path):
    _write_stl10(tmp_path)
    assert len(data.try_load("stl10", root=tmp_path, split="test")) == 2  # not train's 3, nor the default root


def test_try_load_prints_the_whole_reason(tmp_path, capsys):
    assert data.try_load("stl10", root=tmp_path / ("deep" * 30)) is None
    printed = capsys.readouterr().out
    assert printed.startswith("stl10: not available here") and "pass root= the folder that holds" in printed


# ---------------------------------------------------------------------------------------------------
# The embedded generator


def test_embedded_is_deterministic_by_seed_and_split():
    a = data.load("embedded", split="train", n=50, size=40, seed=0)
    assert a.images.shape == (50, 3, 40, 40) and a.images.dtype == torch.uint8
    assert a.labels.dtype == torch.int64 and a.classes == list(synthetic.CLASSES)
    assert torch.equal(a.images, data.load("embedded", split="train", n=50, seed=0).images)
    assert not torch.equal(a.images, data.load("embedded", split="train", n=50, seed=1).images)
    assert not torch.equal(a.images, data.load("embedded", split="test", n=50, seed=0).images)


def test_embedded_labels_are_balanced_and_unlabeled_split_has_none(monkeypatch):
    train = data.embedded(split="train", n=103, size=32)
    counts = torch.bincount(train.labels, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 103
    assert data.embedded(split="unlabeled", n=10).labels is None
    monkeypatch.setitem(data.EMBEDDED_SIZES, "train", 20)
    monkeypatch.setitem(data.EMBEDDED_SIZES, "unlabeled", 30)
    mixed = data.embedded(split="train+unlabeled", size=16)
    assert len(mixed) == 50 and (mixed.labels[20:] == -1).all() and (mixed.labels[:20] >= 0).all()
    assert mixed.name == "embedded-object-train+unlabeled" and mixed.classes == list(synthetic.CLASSES)
    other = data.embedded(split="train+unlabeled", size=16, seed=1)  # the seed reaches both parts
    assert torch.equal(other.images[:20], data.embedded(split="train", size=16, seed=1).images)
    assert torch.equal(other.images[20:], data.embedded(split="unlabeled", size=16, seed=1).images)
    few = data.embedded(split="train", n=40, size=16, num_classes=2)  # only the first classes
    assert set(few.labels.tolist()) == {0, 1}
    assert torch.equal(mixed.images[:20], data.embedded(split="train", size=16).images)


def test_cluttered_images_hold_more_objects_and_more_edges():
    objects, one = synthetic.render(200, mode="object", seed=5)
    scenes, many = synthetic.render(200, mode="cluttered", seed=5)
    assert (one.sum(1) == 1).all()
    assert many.sum(1).float().mean() > 2.5  # distinct classes per scene; 3-6 objects each

    def edge_fraction(images):
        gray = images.float().mean(1)
        return ((gray[:, 1:] - gray[:, :-1]).abs() > 40).float().mean()

    assert edge_fraction(scenes) > 1.3 * edge_fraction(objects)
    with pytest.raises(ValueError, match="split='unlabeled'"):
        data.embedded(split="train", mode="cluttered")
    cluttered = data.embedded(split="unlabeled", mode="cluttered", n=4, size=24)  # the split it takes
    seed = data._split_seed(0, "unlabeled", "cluttered")  # its own seed, apart from the object images'
    assert seed != data._split_seed(0, "unlabeled", "object") and cluttered.labels is None
    assert torch.equal(cluttered.images, synthetic.render(4, size=24, mode="cluttered", seed=seed)[0])


def test_each_split_seed_is_the_top_63_bits_of_the_hash_of_seed_split_and_mode():
    # the seeds every committed row's embedded images were drawn from: sha256 of "seed/split/mode", 8 bytes
    digest = hashlib.sha256(b"0/train/object").digest()[:8]
    assert data._split_seed(0, "train", "object") == int.from_bytes(digest, "big") // 2


def _colour_probe_accuracy(train_images, train_labels, test_images, test_labels) -> float:
    def colour_stats(images):
        flat = images.float().flatten(2) / 255
        return torch.cat([flat.mean(2), flat.std(2)], 1).numpy()

    probe = LogisticRegression(max_iter=1000).fit(colour_stats(train_images), train_labels.numpy())
    return probe.score(colour_stats(test_images), test_labels.numpy())


def test_colour_statistics_do_not_give_the_class():
    train = data.embedded(split="train", n=2000)
    test = data.embedded(split="test", n=1000)
    accuracy = _colour_probe_accuracy(train.images, train.labels, test.images, test.labels)
    assert accuracy < 0.2  # chance is 0.1
    # the same probe on a colour-coded variant (each class tinted towards its own hue) reads the class
    hues = torch.tensor(np.random.default_rng(0).integers(0, 256, (10, 3)), dtype=torch.float32)

    def tinted(s):
        return (0.5 * s.images.float() + 0.5 * hues[s.labels, :, None, None]).to(torch.uint8)

    assert _colour_probe_accuracy(tinted(train), train.labels, tinted(test), test.labels) > 0.4


def test_every_class_covers_the_same_area():
    grid = torch.linspace(-2, 2, 401)
    v, u = torch.meshgrid(grid, grid, indexing="ij")
    scales = synthetic._class_scales()
    areas = []
    for c, name in enumerate(synthetic.CLASSES):
        su, sv = u / scales[c], v / scales[c]
        freq, phase = torch.full((1, 1, 1), 2.0), torch.zeros(1, 1, 1)
        areas.append((synthetic._sdf(name, su[None], sv[None], freq, phase, phase) < 0).float().mean())
    areas = torch.stack(areas)
    assert areas.max() / areas.min() < 1.1


# ---------------------------------------------------------------------------------------------------
# ImageSet and the entry point


def test_imageset_rejects_wrong_dtypes_and_shapes():
    with pytest.raises(ValueError, match="uint8 images"):
        data.ImageSet(torch.zeros(2, 3, 4, 4), None, None, "floats")
    with pytest.raises(ValueError, match="uint8 images"):
        data.ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), None, None, "gray")
    with pytest.raises(ValueError, match=r"int64 labels of shape \(2,\)"):
        data.ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), None, "x")


def test_imageset_to_moves_images_and_labels():
    small = data.embedded(split="test", n=4, size=16).to("cpu")
    assert small.images.device.type == "cpu" and small.labels.device.type == "cpu" and len(small) == 4
    moved = small.to("meta")  # a device other than the CPU, on every machine
    assert moved.images.device.type == moved.labels.device.type == "meta" and moved.name == small.name
    assert data.embedded(split="unlabeled", n=2, size=16).to("meta").labels is None


def test_load_dispatches_and_rejects_unknown_names():
    assert set(data.DATASETS) == {"embedded", "stl10", "coco", "folder", "fashion_mnist", "fashion_mnist_clutter"}
    small = data.load("embedded", root="/unused", split="test", size=24, n=12)
    assert small.images.shape == (12, 3, 24, 24) and small.name == "embedded-object-test"
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        data.load("imagenet")


def test_subset_draws_n_images_with_their_labels_reproducibly():
    full = data.load("embedded", split="test", size=40, n=50)
    part = data.subset(full, 20, seed=1)
    assert len(part) == 20
    again = data.subset(full, 20, seed=1)
    assert torch.equal(part.images, again.images) and torch.equal(part.labels, again.labels)
    index = [i for i in range(50) if any(torch.equal(full.images[i], img) for img in part.images[:1])][0]
    assert part.labels[0] == full.labels[index]
    assert data.subset(full, None) is full and data.subset(full, 99) is full
    assert torch.equal(data.subset(full, 20).images, data.subset(full, 20, seed=0).images)  # the default seed
    unlabelled = data.subset(data.embedded(split="unlabeled", n=10, size=16), 4)
    assert len(unlabelled) == 4 and unlabelled.labels is None


# --- What make mutation left alive in data.py (a sample of 30): each error says how to fix it -----------------

def test_errors_for_missing_or_bad_data_say_how_to_fix_it(tmp_path):
    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no image files \(\.jpg, \.jpeg, \.png, .*\.tiff\) under "):
        data.image_folder(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="unzip it in .*no-coco, or pass root= the folder that holds it$"):
        data.coco(root=tmp_path / "no-coco")
    with pytest.raises(ValueError, match="takes the sizes of its parts; pass n to each split separately"):
        data.embedded(split="train+unlabeled", n=10)
    _folder_with_bad_files(tmp_path / "images")
    with pytest.raises(ValueError, match=r"remove or replace it, or pass strict=False to skip unreadable files"):
        data.image_folder(tmp_path / "images", size=16, cache_dir=tmp_path / "cache", strict=True)
    with pytest.warns(UserWarning):  # a cache built leniently, then read strictly: the files it skipped
        data.image_folder(tmp_path / "images", size=16, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=r"Remove or replace them, or pass strict=False to skip them$"):
        data.image_folder(tmp_path / "images", size=16, cache_dir=tmp_path / "cache", strict=True)
    (tmp_path / "floats-idx").write_bytes(bytes([0, 0, 0x0D, 3, 0xFF, 0xEE]) + bytes(8))
    with pytest.raises(ValueError, match=r"it starts 00000d03, "):  # the 4-byte magic number, in hex
        data.read_idx(tmp_path / "floats-idx")


def test_clutter_builds_its_canvases_without_warnings():
    white = data.ImageSet(torch.full((1, 3, 28, 28), 255, dtype=torch.uint8), torch.zeros(1, dtype=torch.long),
                          ["square"], "white")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. grid_sample's "align_corners default changed" warning
        data.clutter(white, n=4, size=64, per_image=(2, 2), scale=(0.25, 0.25), seed=3)


def test_the_data_cache_reads_back_as_a_copy_on_write_memory_map(tmp_path):
    def fill(out):
        out[:] = 7
        return {"n": len(out)}

    data._cached("stem", 2, 8, fill, tmp_path)
    array, meta = data._cached("stem", 2, 8, fill, tmp_path)  # read back, not built
    assert isinstance(array, np.memmap) and array.mode == "c" and meta["n"] == 2 and (array == 7).all()


def test_a_truncated_idx_header_says_how_many_bytes_it_declares(tmp_path):
    (tmp_path / "short-idx").write_bytes(bytes([0, 0, 8, 2]) + bytes(4))
    with pytest.raises(ValueError, match=r"declares 2 dimensions \(12 header bytes\) but the file holds 8 bytes"):
        data.read_idx(tmp_path / "short-idx")


def test_caching_a_folder_or_stl10_shows_its_progress(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(tmp_path / "images" / f"{i}.png")
    data.image_folder(tmp_path / "images", size=16, cache_dir=tmp_path / "cache")
    err = capsys.readouterr().err
    assert "caching" in err and "at 16px" in err and "3/3" in err
    _write_stl10(tmp_path / "stl")
    data.stl10(tmp_path / "stl", "train", size=32, cache_dir=tmp_path / "stl-cache")
    err = capsys.readouterr().err
    assert "caching" in err and "at 32px" in err and "3/3" in err  # a bar that knows its total
    assert any((tmp_path / "stl-cache").iterdir())  # cached where it was told


def test_sixteen_bit_and_float_images_rescale_to_8_bits_exactly():
    dark = Image.fromarray(np.full((4, 4), 200, dtype=np.uint16))  # 16-bit samples of a dark image: 200 of 65535
    assert dark.mode.startswith("I;16") and np.asarray(data._to_rgb(dark))[0, 0].tolist() == [1, 1, 1]
    # 16-bit samples that Pillow widened to 32-bit mode I (as some TIFFs open) are scaled too, not clipped at 255
    wide = Image.fromarray(np.full((4, 4), 40000, dtype=np.int32))
    assert wide.mode == "I" and np.asarray(data._to_rgb(wide))[0, 0].tolist() == [round(40000 / 257)] * 3
    # ... while mode I of 8-bit values stays as it is, up to 255; from 256 on it reads as 16-bit
    for value, expected in ((200, 200), (255, 255), (256, 1)):
        image = Image.fromarray(np.array([[0, value]], dtype=np.int32))
        assert np.asarray(data._to_rgb(image))[0, 1].tolist() == [expected] * 3, value
    # every 16-bit layout Pillow names, each scaled by 65535 (51529 / 257 = 200.502 rounds up; / 256.004 would not)
    little = np.full((2, 2), 51529, dtype="<u2")
    for image in (Image.fromarray(little.astype(">u2")), Image.frombytes("I;16L", (2, 2), little.tobytes()),
                  Image.frombytes("I;16N", (2, 2), little.astype("=u2").tobytes()), Image.fromarray(little)):
        assert np.asarray(data._to_rgb(image))[0, 0].tolist() == [201] * 3, image.mode
    # 0.50392157 (float32) x 255 = 128.49999...: 128 in float64 arithmetic, 129 if rounded in float32 first
    grey = Image.fromarray(np.full((4, 4), 0.50392157, dtype=np.float32), mode="F")
    assert np.asarray(data._to_rgb(grey))[0, 0].tolist() == [128, 128, 128]


def test_folders_shrink_with_antialiasing():
    # a 1-px checkerboard averages to grey when shrunk with antialiasing; without it, bilinear samples alias
    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    images = np.broadcast_to(board, (1, 3, 64, 64)).copy()
    small = data._resize_square(images, 8)
    reference = F.interpolate(torch.from_numpy(images).float(), size=(8, 8), mode="bilinear", antialias=True,
                              align_corners=False).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(torch.from_numpy(small), reference) and abs(small.astype(float).mean() - 127.5) < 2
    assert small.dtype == np.uint8 and data._resize_square(np.zeros((1, 3, 64, 64), np.uint8), 8).max() == 0


def test_embedded_data_default_to_seed_0():
    # every committed study row was made from the default seed's images
    assert torch.equal(data.embedded(split="train", n=8, size=16).images,
                       data.embedded(split="train", n=8, size=16, seed=0).images)


def test_stl10_images_are_never_written_back_to_their_file(tmp_path):
    """A copy-on-write map: a caller that writes into the images leaves the data set's file as it was."""
    _write_stl10(tmp_path)
    path = tmp_path / "stl10_binary" / "train_X.bin"
    before = path.read_bytes()
    images = data.read_stl10_images(path)
    images[:] = 7
    del images
    assert path.read_bytes() == before


def test_clutter_pastes_black_items_as_black():
    black = data.ImageSet(torch.zeros((1, 3, 28, 28), dtype=torch.uint8), torch.zeros(1, dtype=torch.long),
                          ["square"], "black")
    assert data.clutter(black, n=4, size=32, per_image=(1, 2), seed=0).images.max() == 0


def test_fashion_mnist_clutter_reads_the_given_root(tmp_path):
    _write_fashion(tmp_path)
    made = data.fashion_mnist_clutter(tmp_path, "train", size=48, n=5, seed=1)
    expected = data.clutter(data.fashion_mnist(tmp_path, "train", size=28), n=5, size=48, seed=1)
    assert torch.equal(made.images, expected.images)
    scaled = data.fashion_mnist_clutter(tmp_path, "train", size=48, n=5, seed=1, scale=(0.6, 0.7), per_image=(1, 1))
    expected = data.clutter(data.fashion_mnist(tmp_path, "train", size=28), n=5, size=48, seed=1, scale=(0.6, 0.7),
                            per_image=(1, 1))
    assert torch.equal(scaled.images, expected.images) and not torch.equal(scaled.images, made.images)
    default = data.fashion_mnist_clutter(tmp_path)  # as documented: one canvas per item, seed 0
    items = data.fashion_mnist(tmp_path, "train", size=28)
    assert torch.equal(default.images, data.clutter(items, n=len(items), size=64, per_image=(2, 4), scale=(0.3, 0.5),
                                                    seed=0).images)
    test = data.fashion_mnist_clutter(tmp_path, "test", size=48, n=5, seed=1)  # the split asked for
    assert torch.equal(test.images, data.clutter(data.fashion_mnist(tmp_path, "test", size=28), n=5, size=48,
                                                 seed=1).images) and not torch.equal(test.images, made.images)


def test_missing_fashion_mnist_names_every_folder_it_searched_in_order(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        data.fashion_mnist(tmp_path, split="train")
    searched = ", ".join(str(p) for p in (tmp_path / "FashionMNIST" / "raw", tmp_path / "fashion-mnist", tmp_path))
    assert f"in one of: {searched}. On Debian/Ubuntu: apt-get install dataset-fashion-mnist" in str(error.value)
    assert str(error.value).endswith(f"or download them from {data.FASHION_MNIST_URL} into <root>/FashionMNIST/raw/")


def test_float_images_in_0_1_and_in_0_255_both_come_out_8_bit():
    unit = Image.fromarray(np.array([[0.0, 0.5], [1.0, 1.0]], dtype=np.float32), mode="F")
    wide = Image.fromarray(np.array([[0.0, 100.0], [200.0, 200.0]], dtype=np.float32), mode="F")
    assert np.asarray(data._to_rgb(unit))[..., 0].tolist() == [[0, 128], [255, 255]]  # 1.0 is white
    assert np.asarray(data._to_rgb(wide))[..., 0].tolist() == [[0, 100], [200, 200]]
    above_1 = Image.fromarray(np.array([[0.0, 2.0]], dtype=np.float32), mode="F")  # past 1: read as 0..255
    assert np.asarray(data._to_rgb(above_1))[..., 0].tolist() == [[0, 2]]
    outside = Image.fromarray(np.array([[-20.0, 0.5], [300.0, 20.0]], dtype=np.float32), mode="F")
    assert np.asarray(data._to_rgb(outside))[..., 0].tolist() == [[0, 1], [255, 20]]  # clipped, not wrapped


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path, monkeypatch):
    for name, (width, height) in (("wide.jpg", (1600, 800)), ("tall.jpg", (800, 1600))):
        _save(tmp_path / name, _solid((0, 200, 0), size=(width, height)))
    decoded, real_load = [], ImageFile.ImageFile.load

    def load(image):
        decoded.append(image.size)
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    for name in ("wide.jpg", "tall.jpg"):
        pixels, _ = data._decode(str(tmp_path / name), 32, None)
        assert pixels.shape == (3, 32, 32) and pixels[1, 16, 16] > 190
    # JPEG's draft scales by 1/8 at most, and to no less than the size asked for on the shorter side
    assert sorted(set(decoded)) == [(100, 200), (200, 100)]


def test_a_tall_image_is_cropped_to_its_middle(tmp_path):
    bands = np.zeros((90, 30, 3), dtype=np.uint8)
    bands[:30, :, 0], bands[30:60, :, 1], bands[60:, :, 2] = 255, 255, 255  # red, green, blue from the top
    Image.fromarray(bands).save(tmp_path / "tall.png")
    pixels, (width, height) = data._decode(str(tmp_path / "tall.png"), 12, None)
    assert (width, height) == (30, 90) and pixels.shape == (3, 12, 12)
    assert pixels[1].min() > 200 and pixels[0].max() < 30 and pixels[2].max() < 30  # only the green third


def test_a_palette_image_with_a_transparent_colour_is_composited_onto_black():
    image = Image.new("P", (4, 4))
    image.putpalette([255, 255, 255, 200, 30, 30] + [0] * (3 * 254))
    image.paste(1, (2, 0, 4, 4))  # the right half is colour 1, the left half colour 0 ...
    image.info["transparency"] = 0  # ... which is transparent (white in the palette)
    rgb = np.asarray(data._to_rgb(image))
    assert (rgb[:, :2] == 0).all() and (rgb[:, 2:] == [200, 30, 30]).all()


def test_a_palette_image_with_an_alpha_band_is_composited_onto_black():
    image = Image.new("PA", (4, 4))
    image.putpalette([200, 30, 30] + [0] * 765)
    pixels = image.load()
    for y in range(4):
        for x in range(4):
            pixels[x, y] = (0, 0 if x < 2 else 255)  # colour 0 everywhere, transparent on the left half
    rgb = np.asarray(data._to_rgb(image))
    assert (rgb[:, :2] == 0).all() and (rgb[:, 2:] == [200, 30, 30]).all()


def test_clutter_keeps_the_items_class_names_and_subset_of_every_image_is_the_set():
    items = data.load("embedded", split="test", size=28, n=12)
    assert data.clutter(items, n=3, size=32, per_image=(1, 1), scale=(0.5, 0.5)).classes == items.classes
    assert data.subset(items, len(items)) is items  # not a reordered copy under another name


# --- What make mutation left alive in data.py (seed 23, a sample of 60) ------------------------------------

def test_subset_keeps_none_on_n_0_and_names_what_it_kept():
    images = data.embedded(split="test", size=16, n=20)
    assert len(data.subset(images, 0)) == 0  # 0 is the smallest n it takes
    assert data.subset(images, 3).name == f"{images.name}[3]"


def test_premultiplied_alpha_is_composited_onto_black_once():
    image = Image.new("RGBa", (1, 1))
    image.putpixel((0, 0), (100, 50, 25, 128))  # (199, 99, 49) at half opacity, stored premultiplied
    assert data._to_rgb(image).getpixel((0, 0)) == pytest.approx((100, 50, 25), abs=1)


def test_grey_images_with_alpha_are_composited_onto_black():
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (200, 0))    # fully transparent: black
    image.putpixel((1, 0), (200, 255))  # opaque: its grey
    assert [data._to_rgb(image).getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), (200, 200, 200)]


def test_data_sets_are_looked_for_under_the_checkouts_data_folder_by_default(monkeypatch):
    from s2r2lib.results import project_dir

    monkeypatch.delenv("S2R2_DATA_DIR", raising=False)
    assert data.data_root() == project_dir() / "data"
    monkeypatch.setenv("S2R2_DATA_DIR", "/elsewhere")
    assert data.data_root() == Path("/elsewhere")


def test_an_unknown_embedded_split_lists_every_split_it_takes():
    listed = r"\['train', 'test', 'unlabeled', 'train\+unlabeled'\]"
    with pytest.raises(ValueError, match=rf"'valid'; expected one of {listed}"):
        data.embedded(split="valid")


def test_an_idx_file_of_zero_items_is_its_header_alone(tmp_path):
    path = tmp_path / "empty-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 0))  # 8 bytes: magic, one dimension of 0
    assert data.read_idx(path).shape == (0,)


def test_try_load_loads_at_the_size_it_is_given():
    assert data.try_load("embedded", split="test", size=24, n=4).images.shape == (4, 3, 24, 24)


# --- What make mutation left alive in data.py (seed 24, a sample of 60) ------------------------------------

def test_a_long_listing_names_five_and_counts_the_rest():
    assert data._listing([f"f{i}.jpg" for i in range(5)]) == "f0.jpg; f1.jpg; f2.jpg; f3.jpg; f4.jpg"
    assert data._listing([f"f{i}.jpg" for i in range(6)]) == "f0.jpg; f1.jpg; f2.jpg; f3.jpg; f4.jpg; and 1 more"
    assert data._listing([f"f{i}.jpg" for i in range(7)]) == "f0.jpg; f1.jpg; f2.jpg; f3.jpg; f4.jpg; and 2 more"


def test_coco_and_stl10_are_looked_for_in_their_folders_under_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("S2R2_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=re.escape(f"expected {tmp_path / 'coco' / 'val2017'}/*.jpg")):
        data.coco(split="val2017")
    with pytest.raises(FileNotFoundError, match=r"or pass root= the folder that holds stl10_binary/$"):
        data.stl10(split="test")


def test_a_cache_is_built_by_one_process_while_another_waits_and_reads_it(tmp_path):
    """Two processes asking for the same cache (DDP ranks, two notebooks): the second waits for the first's
    build and reads it back instead of decoding everything again; a killed build's temporary is removed."""
    import subprocess
    import sys

    stale = tmp_path / ".stem.0123456789ab.npy.tmp"
    stale.write_bytes(b"what a killed build left")
    builder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom s2r2lib import data\n"
        "def fill(out):\n    print('building', flush=True)\n    time.sleep(2)\n    out[:] = 5\n    return {'n': 2}\n"
        "data._cached('stem', 2, 8, fill, sys.argv[1])\n"), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert builder.stdout.readline().strip() == "building"

        def fill(out):
            raise AssertionError("built twice")

        array, meta = data._cached("stem", 2, 8, fill, tmp_path)
        assert meta == {"n": 2} and (array == 5).all()
    finally:
        builder.wait(timeout=60)
    assert builder.returncode == 0 and not stale.exists()


def test_a_failed_trim_of_a_cache_leaves_no_temporary(tmp_path, monkeypatch):
    def fill(out):
        out[:1] = 3
        return {"n": 1}  # fewer images than asked for: the array is trimmed to them

    real = np.lib.format.open_memmap
    opened = []

    def full_disk(path, mode="r+", *args, **kwargs):
        opened.append(mode)
        if opened.count("w+") == 2:  # the trimmed copy, once its temporary file exists
            raise OSError(28, "No space left on device")
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "open_memmap", full_disk)
    with pytest.raises(OSError, match="No space left"):
        data._cached("trim", 2, 4, fill, tmp_path)
    assert not list(tmp_path.glob("*tmp")) and not (tmp_path / "trim.npy").exists()
