"""The default augmentation recipe is SimCLR's, number by number, and both backends use it.

S2R2 (Sec. 3) uses "the same aggressive augmentation setup as in SimCLR [4]". SimCLR (Chen et al. 2020,
App. A): a random resized crop of 8-100 % of the area at aspect 3/4-4/3, a horizontal flip with p 0.5,
colour distortion of strength s, ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) applied with p 0.8, in a random
order per view, grayscale with p 0.2, and a Gaussian blur with p 0.5, sigma 0.1-2.0, kernel 10 % of the
image side. The cross-backend tests in test_views.py cannot see a drift of these numbers (both backends
read the same recipe), so they are pinned here.
"""

import dataclasses
import inspect
import itertools

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import v2

from s2r2lib import views
from s2r2lib.views import SIMCLR, ViewCollate, cpu_view_transform, make_multicrop_views, make_views


def test_the_default_recipe_has_simclrs_crop_flip_grayscale_and_blur():
    assert SIMCLR.crop_scale == (0.08, 1.0) and SIMCLR.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert SIMCLR.flip_p == 0.5
    assert SIMCLR.jitter_p == 0.8
    assert SIMCLR.grayscale_p == 0.2
    assert (SIMCLR.blur_p, SIMCLR.blur_sigma, SIMCLR.blur_kernel_fraction) == (0.5, (0.1, 2.0), 0.1)
    assert [SIMCLR.blur_kernel_size(size) for size in (32, 96, 224)] == [3, 9, 23]  # odd, 10 % of the side


def test_the_jitter_strengths_have_simclrs_form():
    # ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) for one colour-distortion strength s.
    strength = SIMCLR.brightness / 0.8
    assert (SIMCLR.contrast, SIMCLR.saturation, SIMCLR.hue) == pytest.approx((0.8 * strength, 0.8 * strength,
                                                                              0.2 * strength))


def test_the_jitter_strength_is_simclrs_default():
    # S2R2 cites SimCLR's App. A recipe, colour strength s = 1; its 32-px CIFAR setting (App. B.9) is s = 0.5.
    assert SIMCLR.brightness / 0.8 == pytest.approx(1.0)
    assert views.SIMCLR_CIFAR.brightness / 0.8 == pytest.approx(0.5)
    assert dataclasses.replace(views.SIMCLR_CIFAR, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2) == SIMCLR
    assert views.RECIPES == {"simclr": SIMCLR, "simclr-cifar": views.SIMCLR_CIFAR}


def test_the_paper_presets_train_with_simclrs_default_and_the_miniature_with_its_32px_strength(spy):
    from s2r2lib import study, train

    assert all(preset["recipe"] == "simclr" for preset in train.PRESETS.values())
    assert train.TrainConfig().recipe == "simclr-cifar" and study.PLANS["full"].recipe == "simclr-cifar"
    assert study.method_config("S2R2", study.PLANS["full"], 1e-3, 10).recipe == "simclr-cifar"
    with pytest.raises(ValueError, match="unknown recipe 'imagenet'"):
        train.TrainConfig(recipe="imagenet").validate()
    # the engine draws its views with the config's recipe, for the ranking methods and SwAV
    calls = {"s2r2": spy(train, "make_views"), "swav": spy(train, "make_multicrop_views")}
    for method, recipe in itertools.product(("s2r2", "swav"), ("simclr", "simclr-cifar")):  # each the default once
        config = train.TrainConfig(method=method, recipe=recipe, images_per_batch=4, views_per_image=2,
                                   data_options={"n": 8}, progress=False, max_steps=1).resolved()
        engine = train.Engine(config, torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8), "cpu")
        engine.step(0, 1)
        assert calls[method][-1]["recipe"] is views.RECIPES[recipe]


def test_view_collate_renders_with_the_recipe_it_is_given():
    collate = ViewCollate(2, size=16, recipe=views.SIMCLR_CIFAR)
    assert repr(collate.transform) == repr(cpu_view_transform(16, views.SIMCLR_CIFAR)) != repr(cpu_view_transform(16))


@pytest.mark.parametrize("entry", [make_views, make_multicrop_views, cpu_view_transform, ViewCollate])
def test_every_entry_point_defaults_to_the_simclr_recipe(entry):
    assert inspect.signature(entry).parameters["recipe"].default is SIMCLR


@pytest.mark.parametrize("entry", [make_views, cpu_view_transform, ViewCollate])
def test_every_single_size_entry_point_defaults_to_the_papers_96_px_views(entry):
    # S2R2 trains on STL10 at 96 px (Sec. 4); the multi-crop default (SWAV_CROPS) is pinned in test_views.py
    assert inspect.signature(entry).parameters["size"].default == 96


def test_the_cpu_backend_applies_the_recipes_numbers():
    transforms = cpu_view_transform(96).transforms
    steps = {type(step): step for step in transforms}
    crop = steps[v2.RandomResizedCrop]
    assert (tuple(crop.scale), tuple(crop.ratio)) == (SIMCLR.crop_scale, SIMCLR.crop_ratio)
    assert steps[v2.RandomHorizontalFlip].p == SIMCLR.flip_p
    assert steps[v2.RandomGrayscale].p == SIMCLR.grayscale_p
    jitter_step, blur_step = [step for step in transforms if isinstance(step, v2.RandomApply)]
    (jitter,), (blur,) = jitter_step.transforms, blur_step.transforms
    assert jitter_step.p == SIMCLR.jitter_p and blur_step.p == SIMCLR.blur_p
    expected = [(1 - SIMCLR.brightness, 1 + SIMCLR.brightness), (1 - SIMCLR.contrast, 1 + SIMCLR.contrast),
                (1 - SIMCLR.saturation, 1 + SIMCLR.saturation), (-SIMCLR.hue, SIMCLR.hue)]
    got = [jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue]
    assert [tuple(pytest.approx(v) for v in pair) for pair in expected] == [tuple(pair) for pair in got]
    assert list(blur.kernel_size) == [9, 9] and list(blur.sigma) == list(SIMCLR.blur_sigma)


JITTER_STEPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def test_every_jitter_order_occurs_and_each_view_draws_its_own(monkeypatch):
    drawn = []
    real = views._color_jitter
    monkeypatch.setattr(views, "_color_jitter", lambda x, jitter, factors, order: drawn.append(order.clone())
                        or real(x, jitter, factors, order))
    recipe = dataclasses.replace(SIMCLR, jitter_p=1.0, grayscale_p=0.0, blur_p=0.0)
    images, views_per_image = 20, 60
    pictures = torch.randint(0, 256, (images, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    make_views(pictures, views_per_image, 8, generator=torch.Generator().manual_seed(0), recipe=recipe)
    orders = [tuple(order) for order in drawn[0].tolist()]
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders)  # each step once
    assert set(orders) == set(itertools.permutations(range(4)))  # all 24 orders (each missed w.p. ~1e-21)
    per_image = [set(orders[i * views_per_image:(i + 1) * views_per_image]) for i in range(images)]
    assert min(len(s) for s in per_image) > 10  # drawn per view, not per image or per batch
    firsts = torch.tensor([order[0] for order in orders]).bincount(minlength=4).float() / len(orders)
    assert (firsts - 0.25).abs().max() < 0.05  # uniform: each step first in a quarter of the views


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (2, 3, 0, 1)])
def test_the_jitter_steps_run_in_the_order_drawn(order):
    """The batched jitter equals torchvision's four float kernels applied in the view's own order."""
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    factors = torch.tensor([[1.3], [0.6], [1.5], [0.08]])  # brightness, contrast, saturation, hue shift
    ours = views._color_jitter(x.clone(), torch.tensor([True]), factors, torch.tensor([order]))
    expected = x
    for step in order:
        expected = JITTER_STEPS[step](expected, factors[step, 0].item())
    assert torch.allclose(ours, expected, atol=1e-5)


def test_each_view_of_a_batch_runs_its_own_jitter_order():
    """Three views, three orders (hue first, last and in between), and a view without jitter, in one call."""
    orders = [(3, 0, 1, 2), (0, 1, 2, 3), (1, 3, 2, 0), (2, 1, 0, 3)]
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    factors = torch.tensor([[1.3, 0.8, 1.1, 1.2], [0.6, 1.4, 0.7, 0.9], [1.5, 0.5, 1.2, 0.8], [0.08, -0.1, 0.2, 0.05]])
    jitter = torch.tensor([True, True, True, False])
    ours = views._color_jitter(x.clone(), jitter, factors, torch.tensor(orders))
    for i, order in enumerate(orders[:3]):
        expected = x[i:i + 1]
        for step in order:
            expected = JITTER_STEPS[step](expected, factors[step, i].item())
        assert torch.allclose(ours[i:i + 1], expected, atol=1e-5), order
    assert torch.equal(ours[3], x[3])  # no jitter: untouched
