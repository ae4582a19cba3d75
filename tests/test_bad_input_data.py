"""Bad input to s2r2lib.data, as a careless or hostile user gives it: each case is one call on small files in
the real formats, damaged in one way. It must raise the stated exception type, with a message that names the
argument or the file at fault (the pattern), so that the reader knows what to fix."""

import gzip
import struct

import numpy as np
import pytest
import torch
from test_data import _idx_bytes, _png_bomb, _save, _solid, _write_fashion, _write_stl10

from s2r2lib import data


def _stl10(tmp_path, name=None, content=b""):
    """Tiny STL10 files (3 train, 2 test, 4 unlabeled images) under tmp_path, one file replaced by ``content``."""
    _write_stl10(tmp_path)
    if name is not None:
        (tmp_path / "stl10_binary" / name).write_bytes(content)
    return tmp_path


def _fashion(tmp_path, labels=None):
    """Plain Fashion-MNIST idx files of 6 items under tmp_path; the train labels replaced by ``labels``."""
    _write_fashion(tmp_path, compress=False)
    if labels is not None:
        (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array(labels, dtype=np.uint8)))
    return tmp_path


def _idx(tmp_path, content):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    return path


def _images(tmp_path, *names):
    """A folder of small PNGs named ``names``; a name ending in .jpg gets text instead of an image."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in names:
        if name.endswith(".jpg"):
            (folder / name).write_text("not a picture")
        else:
            _save(folder / name, _solid((100, 50, 0)))
    return folder


def _bomb_folder(tmp_path):
    folder = _images(tmp_path, "fine.png")
    _png_bomb(folder / "bomb.png", 10_000, 10_000)
    return folder


FASHION_LABELS = [0, 1, 2, 3, 4, 5]
# (id, the call given tmp_path, the exception type, a pattern its message must match)
CASES = [
    # Fashion-MNIST and the idx format
    ("fashion label 10", lambda t: data.fashion_mnist(_fashion(t, FASHION_LABELS[:5] + [10])),
     ValueError, r"train-labels-idx1-ubyte holds label 10 at item 5; Fashion-MNIST labels are 0-9"),
    ("fashion label 10, what to do", lambda t: data.fashion_mnist(_fashion(t, FASHION_LABELS[:5] + [10])),
     ValueError, r"The file is corrupt or not Fashion-MNIST's; get it again$"),
    ("fashion label 255", lambda t: data.fashion_mnist(_fashion(t, [255] + FASHION_LABELS[1:])),
     ValueError, r"train-labels-idx1-ubyte holds label 255 at item 0"),
    ("fashion labels and images disagree", lambda t: data.fashion_mnist(_fashion(t, FASHION_LABELS[:4])),
     ValueError, r"train-images-idx3-ubyte and .*train-labels-idx1-ubyte do not match"),
    ("fashion unknown split", lambda t: data.fashion_mnist(t, split="validation"),
     ValueError, r"unknown Fashion-MNIST split 'validation'"),
    ("fashion files missing", lambda t: data.fashion_mnist(t, split="test"),
     FileNotFoundError, r"t10k-images-idx3-ubyte\[\.gz\] and t10k-labels-idx1-ubyte"),
    ("idx truncated header", lambda t: data.read_idx(_idx(t, bytes([0, 0, 8, 3]) + struct.pack(">I", 6))),
     ValueError, r"train-images-idx3-ubyte is truncated: its header declares 3 dimensions"),
    ("idx truncated body", lambda t: data.read_idx(_idx(t, _idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-1])),
     ValueError, r"train-images-idx3-ubyte declares shape \(2, 28, 28\).*truncated"),
    ("idx header alone", lambda t: data.read_idx(_idx(t, bytes([0, 0, 8, 3]))),  # 4 bytes: an idx start, cut short
     ValueError, r"is truncated: its header declares 3 dimensions \(16 header bytes\) but the file holds 4 bytes"),
    ("idx empty", lambda t: data.read_idx(_idx(t, b"")),
     ValueError, r"train-images-idx3-ubyte is not an idx file"),
    ("idx of floats", lambda t: data.read_idx(_idx(t, bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 0))),
     ValueError, r"train-images-idx3-ubyte is not an idx file of unsigned bytes: it starts 00000d01"),
    ("idx damaged gzip", lambda t: data.read_idx(_idx(t, gzip.compress(b"\0" * 1000)[:20])),
     ValueError, r"train-images-idx3-ubyte is a damaged gzip file .*; it is truncated or corrupt, get it again$"),
    # STL10
    ("stl10 empty train_X.bin", lambda t: data.stl10(_stl10(t, "train_X.bin"), "train"),
     ValueError, r"^\S*train_X\.bin holds 0 bytes, not a whole number of 3x96x96 images"),
    ("stl10 truncated train_X.bin", lambda t: data.stl10(_stl10(t, "train_X.bin", b"\0" * 30000), "train"),
     ValueError, r"^\S*train_X\.bin holds 30000 bytes"),
    ("stl10 empty unlabeled_X.bin", lambda t: data.stl10(_stl10(t, "unlabeled_X.bin"), "train+unlabeled"),
     ValueError, r"^\S*unlabeled_X\.bin holds 0 bytes"),
    ("stl10 fewer labels than images", lambda t: data.stl10(_stl10(t, "train_y.bin", bytes([1, 2])), "train"),
     ValueError, r"train_y\.bin should hold 3 labels in 1\.\.10.*it holds 2 values"),
    ("stl10 labels from 0", lambda t: data.stl10(_stl10(t, "train_y.bin", bytes([0, 1, 2])), "train"),
     ValueError, r"train_y\.bin should hold 3 labels in 1\.\.10.*values in 0\.\.2"),
    ("stl10 labels all 0", lambda t: data.stl10(_stl10(t, "train_y.bin", bytes([0, 0, 0])), "train"),
     ValueError, r"train_y\.bin should hold 3 labels in 1\.\.10.*it holds 3 values in 0\.\.0$"),
    ("stl10 labels empty", lambda t: data.stl10(_stl10(t, "train_y.bin", b""), "train"),
     ValueError, r"train_y\.bin should hold 3 labels in 1\.\.10.*it holds 0 values$"),
    ("stl10 empty class_names.txt", lambda t: data.stl10(_stl10(t, "class_names.txt"), "train"),
     ValueError, r"class_names\.txt lists 0 class names; STL10 has 10"),
    ("stl10 class_names.txt of 3", lambda t: data.stl10(_stl10(t, "class_names.txt", b"cat\ndog\nbird\n"), "test"),
     ValueError, r"class_names\.txt lists 3 class names; STL10 has 10, one a line\. Restore it from "
                 r"stl10_binary\.tar\.gz, or delete it to use the standard names$"),
    ("stl10 unknown split", lambda t: data.stl10(_stl10(t), "validation"),
     ValueError, r"unknown STL10 split 'validation'"),
    ("stl10 files missing", lambda t: data.stl10(t, "test"),
     FileNotFoundError, r"STL10 test needs test_X\.bin, test_y\.bin in \S*stl10_binary"),
    # image folders and COCO
    ("folder root is a file", lambda t: data.image_folder(_images(t, "a.png") / "a.png"),
     ValueError, r"image folder root \S*a\.png is a file, not a folder; pass root="),
    ("folder root is a device", lambda t: data.image_folder("/dev/null"),
     ValueError, r"image folder root /dev/null is a file"),
    ("folder root missing", lambda t: data.image_folder(t / "absent"),
     FileNotFoundError, r"image folder \S*absent does not exist; pass root="),
    ("folder workers=-1", lambda t: data.image_folder(_images(t, "a.png"), workers=-1),
     ValueError, r"image_folder: workers must be 0 \(decode in this process\) or a number of processes, got -1"),
    ("folder workers=1.5", lambda t: data.image_folder(_images(t, "a.png"), workers=1.5),
     ValueError, r"image_folder: workers must be 0 .* got 1.5"),
    ("folder without root", lambda t: data.load("folder"),
     ValueError, r"image_folder needs root=, the folder holding the images \(in a TrainConfig: data_root=DIR\)"),
    ("folder unknown split", lambda t: data.load("folder", root=_images(t, "a.png"), split="val"),
     FileNotFoundError, r"image folder split 'val' not found: expected the sub-folder \S*images/val"),
    ("folder without images", lambda t: data.image_folder(t),
     FileNotFoundError, r"no image files .* under \S+; check the path, or that the images have one of these "
                        r"extensions"),
    ("labelled folder without class folders",
     lambda t: data.image_folder(_images(t, "a.png"), labelled=True),
     FileNotFoundError, r"no image class_name/\*\.jpg sub-folders"),
    ("folder of only bad files", lambda t: data.image_folder(_images(t, "x.jpg", "y.jpg")),
     ValueError, r"none of the 2 image files .* could be read, e.g. x\.jpg"),
    ("strict folder with a bad file",
     lambda t: data.image_folder(_images(t, "a.png", "broken.jpg"), strict=True),
     ValueError, r"cannot read image \S*broken\.jpg .*strict=False"),
    ("strict folder with a decompression bomb",
     lambda t: data.image_folder(_bomb_folder(t), strict=True),
     ValueError, r"cannot read image \S*bomb\.png \(10000x10000 is 100000000 pixels.*MAX_IMAGE_PIXELS"),
    ("coco split folder missing", lambda t: data.coco(t, "val2017"),
     FileNotFoundError, r"MS-COCO val2017 images not found: expected \S*val2017/\*\.jpg"),
    ("coco unknown split", lambda t: data.coco(t, "test2017"),
     ValueError, r"unknown COCO split 'test2017'"),
    # sizes, counts and names
    ("folder size 31.5", lambda t: data.image_folder(_images(t, "a.png"), size=31.5),
     ValueError, r"image_folder: size .* whole number >= 1, got 31\.5"),
    ("stl10 size True", lambda t: data.stl10(_stl10(t), size=True),
     ValueError, r"stl10: size .* got True"),
    ("fashion size 0", lambda t: data.fashion_mnist(_fashion(t), size=0),
     ValueError, r"fashion_mnist: size .* got 0"),
    ("embedded size as text", lambda t: data.embedded(size="32"),
     ValueError, r"embedded: size .* got '32'"),
    ("clutter size -64", lambda t: data.clutter(data.embedded(n=2, size=16), n=2, size=-64),
     ValueError, r"clutter: size .* got -64"),
    ("clutter per_image reversed", lambda t: data.clutter(data.embedded(n=2, size=16), n=2, per_image=(3, 1)),
     ValueError, r"per_image\[0\] <= per_image\[1\].*got per_image=\(3, 1\)"),
    ("clutter scale reversed", lambda t: data.clutter(data.embedded(n=2, size=16), n=2, scale=(0.6, 0.3)),
     ValueError, r"0 < scale\[0\] <= scale\[1\] <= 1.*scale=\(0\.6, 0\.3\)"),
    ("clutter scale 0", lambda t: data.clutter(data.embedded(n=2, size=16), n=2, scale=(0.0, 0.5)),
     ValueError, r"0 < scale\[0\].*scale=\(0\.0, 0\.5\)"),
    ("clutter scale above 1", lambda t: data.clutter(data.embedded(n=2, size=16), n=2, scale=(0.5, 1.5)),
     ValueError, r"scale=\(0\.5, 1\.5\)"),
    ("clutter of no items", lambda t: data.clutter(data.subset(data.embedded(n=2, size=16), 0), n=2),
     ValueError, r"at least one item; got .* 0 items"),
    ("subset n -1", lambda t: data.subset(data.embedded(n=4, size=16), -1),
     ValueError, r"subset: n .* got -1"),
    ("subset n -1, what None does", lambda t: data.subset(data.embedded(n=4, size=16), -1),
     ValueError, r"^subset: n \(the number of images to keep; None keeps all\)"),
    ("subset n 2.5", lambda t: data.subset(data.embedded(n=4, size=16), 2.5),
     ValueError, r"subset: n .* got 2\.5"),
    ("embedded unknown mode", lambda t: data.embedded(mode="scene"),
     ValueError, r"unknown embedded mode 'scene'"),
    ("embedded unknown split", lambda t: data.embedded(split="val", n=2),
     ValueError, r"unknown embedded split 'val'"),
    ("unknown data set", lambda t: data.load("imagenet"),
     ValueError, r"unknown data set 'imagenet'; expected one of"),
    ("ImageSet of floats", lambda t: data.ImageSet(torch.zeros(2, 3, 4, 4), None, None, "floats"),
     ValueError, r"ImageSet 'floats' needs uint8 images \(N, 3, H, W\); got torch\.float32"),
    ("ImageSet labels too short",
     lambda t: data.ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), None, "x"),
     ValueError, r"ImageSet 'x' needs int64 labels of shape \(2,\)"),
]


@pytest.mark.parametrize("call, error, pattern", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_raises_a_clear_error(tmp_path, monkeypatch, call, error, pattern):
    monkeypatch.setenv("S2R2_CACHE_DIR", str(tmp_path / "cache"))  # for a case that gets as far as caching
    with pytest.raises(error, match=pattern) as raised:
        call(tmp_path)
    assert type(raised.value) is error  # not a subclass the caller would not expect (e.g. a raw OSError)
