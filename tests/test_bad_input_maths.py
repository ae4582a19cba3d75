"""Bad input to the maths (losses, views, models, probe) gets a ValueError or TypeError that names the argument.

One row a case: the call, the exception type, and the argument's name, which the message must contain.
"""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from s2r2lib import losses, probe
from s2r2lib.models import build_model
from s2r2lib.views import ViewCollate, make_multicrop_views, make_views

Z = torch.randn(6, 4)
IDS = torch.tensor([0, 0, 1, 1, 2, 2])
IMAGES = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
SCORES, RELEVANT = torch.tensor([0.3, 0.2, 0.1]), torch.tensor([True, False, True])
FEATURES, LABELS = torch.randn(20, 4), torch.arange(4).repeat(5)


def with_row(row, value):
    z = Z.clone()
    z[row] = value
    return z


CASES = {
    # losses: the temperature
    "smooth_ap tau=inf": (lambda: losses.smooth_ap_loss(Z, IDS, tau=float("inf")), ValueError,
                          "smooth_ap_loss: tau must be a positive finite number (tau > 0, a temperature), got inf"),
    "smooth_ap tau=None": (lambda: losses.smooth_ap_loss(Z, IDS, tau=None), TypeError, "tau"),
    "smooth_ap tau=str": (lambda: losses.smooth_ap_loss(Z, IDS, tau="0.01"), TypeError,
                          "tau must be a positive finite number, got str '0.01'"),  # (None is not allowed here)
    "smooth_ap tau=tensor": (lambda: losses.smooth_ap_loss(Z, IDS, tau=torch.tensor(0.01)), TypeError, "tau"),
    "smooth_ap tau=True": (lambda: losses.smooth_ap_loss(Z, IDS, tau=True), TypeError, "tau"),
    "nt_xent tau=inf": (lambda: losses.nt_xent_loss(Z, IDS, tau=float("inf")), ValueError, "nt_xent_loss: tau must"),
    "nt_xent tau=None": (lambda: losses.nt_xent_loss(Z, IDS, tau=None), TypeError, "tau"),
    "nt_xent tau=str": (lambda: losses.nt_xent_loss(Z, IDS, tau="0.1"), TypeError, "tau"),
    "nt_xent tau=tensor": (lambda: losses.nt_xent_loss(Z, IDS, tau=torch.tensor(0.1)), TypeError, "tau"),
    "ranking_ap tau=inf": (lambda: losses.ranking_ap(SCORES, RELEVANT, tau=float("inf")), ValueError, "tau"),
    "ranking_ap tau=str": (lambda: losses.ranking_ap(SCORES, RELEVANT, tau="0.1"), TypeError,
                           "tau must be a positive finite number or None (exact), got str '0.1'"),
    "ranking_ap tau=tensor": (lambda: losses.ranking_ap(SCORES, RELEVANT, tau=torch.tensor(0.1)), TypeError, "tau"),
    "swav temperature=inf": (lambda: losses.swav_loss([Z, Z], temperature=float("inf")), ValueError,
                             "swav_loss: temperature must be a positive finite number"),
    "swav epsilon=None": (lambda: losses.swav_loss([Z, Z], epsilon=None), TypeError, "epsilon"),
    # losses: embeddings, ids and scores
    "z with 0 columns": (lambda: losses.smooth_ap_loss(torch.randn(6, 0), IDS), ValueError, "z"),
    "z with an all-zero row": (lambda: losses.smooth_ap_loss(with_row(2, 0.0), IDS), ValueError, "z"),
    "z with inf": (lambda: losses.nt_xent_loss(with_row(1, float("inf")), IDS), ValueError, "z"),
    "z with NaN": (lambda: losses.average_precision(with_row(0, float("nan")), IDS), ValueError, "z"),
    "z with NaN, checked apart": (lambda: losses.check_embeddings(with_row(3, float("nan"))), ValueError,
                                  "check_embeddings: z row 3 holds NaN or inf"),  # the default name starts it
    "z a list": (lambda: losses.smooth_ap_loss(Z.tolist(), IDS), TypeError, "z"),
    "z integers": (lambda: losses.smooth_ap_loss(Z.long(), IDS), ValueError, "z"),
    "ids 2-D": (lambda: losses.smooth_ap_loss(Z, IDS[:, None]), ValueError,
                "smooth_ap_loss: ids must have shape (N,), one per view; got (6, 1)"),
    "ids a list": (lambda: losses.smooth_ap_loss(Z, IDS.tolist()), TypeError,
                   "smooth_ap_loss: ids must be a tensor of integers (or a BatchGroups from ranking_groups), got list"),
    "ids 2-D, grouped": (lambda: losses.ranking_groups(IDS[:, None]), ValueError, "ranking_groups: ids must have shape"),
    "ids floats": (lambda: losses.nt_xent_loss(Z, IDS.float()), ValueError, "ids"),
    "ids too short": (lambda: losses.average_precision(Z, IDS[:4]), ValueError, "ids"),
    "ids with a lone view": (lambda: losses.average_precision(Z, torch.tensor([0, 0, 1, 1, 1, 2])), ValueError, "ids"),
    "ids of unequal images": (lambda: losses.ranking_groups(torch.tensor([0, 0, 1, 1, 1])), ValueError,
                              "ranking_groups needs the same number of views for every image; ids give counts from 2 to 3"),
    "groups for another batch": (lambda: losses.smooth_ap_loss(Z[:4], losses.ranking_groups(IDS)), ValueError,
                                 "smooth_ap_loss: ids must have shape (4,), one per row of z; got (6,)"),
    "groups on another device": (lambda: losses.nt_xent_loss(Z.to("meta"), losses.ranking_groups(IDS)), ValueError,
                                 "nt_xent_loss: z is on meta but ids on cpu; move both to one device"),
    "scores with NaN": (lambda: losses.ranking_ap(torch.tensor([0.3, float("nan")]), RELEVANT[:2]), ValueError,
                        "scores"),
    "relevant marks nothing": (lambda: losses.ranking_ap(SCORES, torch.zeros(3, dtype=torch.bool)), ValueError,
                               "relevant"),
    # views
    "views_per_image=2.0": (lambda: make_views(IMAGES, 2.0, 16), TypeError, "views_per_image"),
    "views_per_image=None": (lambda: make_views(IMAGES, None, 16), TypeError, "views_per_image"),
    "views_per_image=0": (lambda: make_views(IMAGES, 0, 16), ValueError, "views_per_image"),
    "views_per_image=2.5": (lambda: make_views(IMAGES, 2.5, 16), TypeError,
                            "views_per_image must be a whole number of views per image (an int >= 1), got float 2.5"),
    "images float": (lambda: make_views(IMAGES.float(), 2, 16), ValueError,
                     "views need uint8 images with values 0-255; got torch.float32"),
    "size=31.5": (lambda: make_views(IMAGES, 2, 31.5, backend="cpu"), TypeError, "size"),
    "size=True": (lambda: make_views(IMAGES, 2, True), TypeError, "size"),
    "size=0": (lambda: make_views(IMAGES, 2, 0), ValueError,
               "size must be at least 1 (pixels (the view's side)); got 0"),
    "no images (B = 0)": (lambda: make_views(IMAGES[:0], 2, 16), ValueError, "images"),
    "images of 0x0 pixels": (lambda: make_views(torch.zeros(2, 3, 0, 0, dtype=torch.uint8), 2, 16, allow_upscale=True),
                             ValueError, "images"),
    "generator an int": (lambda: make_views(IMAGES, 2, 16, generator=5), TypeError,
                         "generator must be a torch.Generator or None, got int 5"),
    "crops a string": (lambda: make_multicrop_views(IMAGES, "2,96"), ValueError, "crops must be a non-empty list"),
    "generator numpy's": (lambda: make_views(IMAGES, 2, 16, backend="cpu", generator=np.random.default_rng(0)),
                          TypeError, "generator"),
    "backend unknown": (lambda: make_views(IMAGES, 2, 16, backend="gpu"), ValueError, "backend"),
    "recipe a string": (lambda: make_views(IMAGES, 2, 16, recipe="simclr"), TypeError,
                        "recipe must be a ViewRecipe (e.g. views.SIMCLR), got str"),
    "crops empty": (lambda: make_multicrop_views(IMAGES, []), ValueError, "crops"),
    "crops empty, with an example": (
        lambda: make_multicrop_views(IMAGES, []), ValueError,
        "(min_area, max_area)), e.g. ((2, 96, (0.14, 1.0)), (6, 48, (0.05, 0.14))); got []"),
    "crops entry too short": (lambda: make_multicrop_views(IMAGES, [(2, 16)]), ValueError, "crops[0]"),
    "crops area reversed": (lambda: make_multicrop_views(IMAGES, [(2, 16, (0.5, 1.0)), (2, 8, (0.5, 0.2))]),
                            ValueError, "crops[1]"),
    "crops area above 1": (lambda: make_multicrop_views(IMAGES, [(2, 16, (0.5, 1.5))]), ValueError,
                           "crops[0] area range must be two numbers with 0 < min_area <= max_area <= 1"),
    "images 0 pixels high": (lambda: make_views(torch.zeros(2, 3, 0, 16, dtype=torch.uint8), 2, 16, allow_upscale=True),
                             ValueError, "at least one image of at least 1x1 pixels"),
    "crops views 2.0": (lambda: make_multicrop_views(IMAGES, [(2.0, 16, (0.1, 1.0))]), TypeError,
                        "crops[0] views_per_image must be a whole number of views per image (an int >= 1), got float"),
    "crops area from 0": (lambda: make_multicrop_views(IMAGES, [(2, 16, (0.0, 0.5))]), ValueError,
                          "crops[0] area range must be two numbers with 0 < min_area <= max_area <= 1"),
    "crops size 16.0": (lambda: make_multicrop_views(IMAGES, [(2, 16, (0.2, 1.0)), (2, 16.0, (0.1, 0.2))]), TypeError,
                        "crops[1] size must be a whole number of pixels (the view's side) (an int >= 1), got float 16.0"),
    "ViewCollate size=True": (lambda: ViewCollate(2, size=True), TypeError, "size"),
    "ViewCollate a PIL image": (lambda: ViewCollate(2, size=16)([Image.new("RGB", (32, 32))]), ValueError,
                                "got Image. Convert"),  # a torchvision data set without a transform gives these
    "ViewCollate empty batch": (lambda: ViewCollate(2, size=16)([]), ValueError, "batch"),
    "view larger than a 10x12 image": (lambda: make_views(torch.zeros(2, 3, 10, 12, dtype=torch.uint8), 2, 16),
                                       ValueError, "view size 16 is larger than the image (10x12); pass a smaller size"),
    # models
    "proj_dim=0": (lambda: build_model("narrow_cnn", proj_dim=0), ValueError, "proj_dim"),
    "proj_dim negative": (lambda: build_model("narrow_cnn", proj_dim=-8), ValueError, "proj_dim"),
    "proj_dim=2.5": (lambda: build_model("narrow_cnn", proj_dim=2.5), TypeError, "proj_dim"),
    "proj_dim=True": (lambda: build_model("narrow_cnn", proj_dim=True), TypeError, "proj_dim"),
    "proj_hidden=0": (lambda: build_model("narrow_cnn", proj_hidden=0), ValueError, "proj_hidden"),
    "small_input a string": (lambda: build_model("narrow_cnn", small_input="yes"), TypeError, "small_input"),
    "std with a zero": (lambda: build_model("narrow_cnn", std=(0.0, 0.2, 0.2)), ValueError, "std"),
    "mean of one channel": (lambda: build_model("narrow_cnn", mean=(0.5,)), ValueError, "mean"),
    "arch unknown": (lambda: build_model("resnet34"), ValueError, "arch"),
    # probe
    "retrieval_map features an array": (lambda: probe.retrieval_map(FEATURES.numpy(), LABELS), TypeError,
                                        "retrieval_map: features and labels must be tensors, got ndarray and Tensor; "
                                        "wrap arrays with torch.as_tensor"),
    "retrieval_map labels a list": (lambda: probe.retrieval_map(FEATURES, LABELS.tolist()), TypeError,
                                    "got Tensor and list"),
    "retrieval_map features NaN": (lambda: probe.retrieval_map(FEATURES.masked_fill(FEATURES > 1, float("nan")),
                                                               LABELS), ValueError,
                                   "retrieval_map: features hold NaN or inf; check the encoder"),
    "retrieval_map a lone class member": (lambda: probe.retrieval_map(FEATURES[:6], LABELS[:6]), ValueError, "labels"),
    "retrieval_map float labels": (lambda: probe.retrieval_map(FEATURES, LABELS.float()), ValueError,
                                   "retrieval_map: labels must be 1-D integer class labels"),
    "rank_views an unknown recipe": (lambda: probe.rank_views(None, torch.zeros(2, 3, 40, 40, dtype=torch.uint8), 2, 32,
                                                              recipe="simclr_cifar"), ValueError,
                                     "rank_views: unknown recipe 'simclr_cifar'; expected one of ['simclr', "
                                     "'simclr-cifar']"),
    "knn k=0": (lambda: probe.knn_top1(FEATURES, LABELS, FEATURES, LABELS, k=0), ValueError, "k"),
    "knn k=2.5": (lambda: probe.knn_top1(FEATURES, LABELS, FEATURES, LABELS, k=2.5), ValueError,
                  "knn_top1: k must be a whole number of neighbours >= 1, got 2.5"),
    "knn k=True": (lambda: probe.knn_top1(FEATURES, LABELS, FEATURES, LABELS, k=True), ValueError,
                   "knn_top1: k must be a whole number of neighbours >= 1, got True"),
    "linear_probe train labels short": (lambda: probe.linear_probe(FEATURES, LABELS[:-1], FEATURES, LABELS),
                                        ValueError, "linear_probe: features and labels disagree"),
    "knn temperature=0": (lambda: probe.knn_top1(FEATURES, LABELS, FEATURES, LABELS, temperature=0), ValueError,
                          "temperature"),
    "knn temperature=inf": (lambda: probe.knn_top1(FEATURES, LABELS, FEATURES, LABELS, temperature=float("inf")),
                            ValueError, "knn_top1: temperature must be a positive finite number, got inf"),
    "linear_probe empty c_grid": (lambda: probe.linear_probe(FEATURES, LABELS, FEATURES, LABELS, c_grid=()),
                                  ValueError, "c_grid"),
    "linear_probe C = 0": (lambda: probe.linear_probe(FEATURES, LABELS, FEATURES, LABELS, c_grid=(0.0, 1.0)),
                           ValueError, "c_grid"),
    "linear_probe C = inf": (lambda: probe.linear_probe(FEATURES, LABELS, FEATURES, LABELS, c_grid=(1.0, math.inf)),
                             ValueError, "linear_probe: c_grid must be a non-empty list of positive finite numbers"),
    "linear_probe held_out=0.0": (lambda: probe.linear_probe(FEATURES, LABELS, FEATURES, LABELS, held_out=0.0),
                                  ValueError, "held_out must be a fraction strictly between 0 and 1, got 0.0"),
    "linear_probe 2-D train_y": (lambda: probe.linear_probe(FEATURES, LABELS[:, None], FEATURES, LABELS),
                                   ValueError, "linear_probe: train_y must be 1-D integer class labels"),
    "linear_probe held_out=1.5": (lambda: probe.linear_probe(FEATURES, LABELS, FEATURES, LABELS, held_out=1.5),
                                  ValueError, "held_out"),
    "linear_probe held_out=1.0": (lambda: probe.linear_probe(FEATURES, LABELS, FEATURES, LABELS, held_out=1.0),
                                  ValueError, "held_out must be a fraction strictly between 0 and 1"),
    "linear_probe negative test labels": (lambda: probe.linear_probe(FEATURES, LABELS, FEATURES, LABELS - 1),
                                          ValueError, "linear_probe: test_y"),
    "linear_probe negative labels": (lambda: probe.linear_probe(FEATURES, LABELS - 1, FEATURES, LABELS), ValueError,
                                     "train_y"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_a_clear_error_naming_the_argument(case):
    call, error, argument = CASES[case]
    with pytest.raises(error) as raised:
        call()
    assert type(raised.value) is error
    assert argument in str(raised.value), f"{case}: {raised.value}"


def test_an_empty_batch_is_refused_in_one_plain_sentence():
    with pytest.raises(ValueError) as raised:
        ViewCollate(2, size=16)([])
    assert str(raised.value) == "ViewCollate got an empty batch; a DataLoader batch needs at least one image"
