"""A labelled image folder with unreadable files among the images: each image keeps its own class's label."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from s2r2lib import data

COLOURS = {"blue": 2, "green": 1, "red": 0}  # class folder -> the channel its images are bright in


def colour_folder(root, broken):
    """root/<colour>/NN.png: 5 images per colour, each bright in that colour's channel at its own shade;
    ``broken`` names (colour, file) pairs written as random bytes instead, among the images."""
    for colour, channel in COLOURS.items():
        (root / colour).mkdir(parents=True)
        for i in range(5):
            path = root / colour / f"{i:02d}.png"
            if (colour, path.name) in broken:
                path.write_bytes(os.urandom(200))
                continue
            pixels = np.full((12, 10, 3), 20, dtype=np.uint8)
            pixels[..., channel] = 150 + 20 * i
            Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("broken", [
    {("blue", "00.png")},                       # first file of the first class: every later label would shift
    {("green", "02.png"), ("red", "04.png")},   # mid-class, and the very last file
])
def test_labels_match_the_colours_of_the_images_that_were_read(tmp_path, broken):
    colour_folder(tmp_path / "colours", broken)
    with pytest.warns(UserWarning, match=f"{len(broken)} of 15 files"):
        images = data.image_folder(tmp_path / "colours", size=8, labelled=True, cache_dir=tmp_path / "cache")
    assert images.classes == sorted(COLOURS)
    assert len(images) == len(images.labels) == 15 - len(broken)
    brightest = images.images.float().mean(dim=(2, 3)).argmax(dim=1)
    expected = torch.tensor([COLOURS[images.classes[label]] for label in images.labels])
    assert torch.equal(brightest, expected), "an image carries another class's label"
    per_class = torch.bincount(images.labels, minlength=3).tolist()
    assert per_class == [5 - sum(c == colour for c, _ in broken) for colour in images.classes]
    # Read back from the cache: the same images and labels.
    with pytest.warns(UserWarning):
        again = data.image_folder(tmp_path / "colours", size=8, labelled=True, cache_dir=tmp_path / "cache")
    assert torch.equal(again.images, images.images) and torch.equal(again.labels, images.labels)
