"""s2r2lib.models: encoders and projection head, randomly initialised, normalising their own input."""

import subprocess
import sys

import pytest
import torch

from s2r2lib.models import ARCHS, IMAGENET_MEAN, IMAGENET_STD, build_model

FEAT_DIMS = {"narrow_cnn": 256, "resnet18": 512, "resnet50": 2048}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [32, 96])
def test_projection_and_representation_shapes(arch, size):
    model = build_model(arch, small_input=size == 32, proj_dim=64)
    views = torch.rand(2, 3, size, size)
    assert model.feat_dim == FEAT_DIMS[arch]
    assert model(views).shape == (2, 64)
    assert model.representation(views).shape == (2, FEAT_DIMS[arch])


@pytest.mark.parametrize("arch", ["narrow_cnn", "resnet18"])
def test_small_input_stem_keeps_resolution_at_32px(arch):
    pooled_sides = {}
    for small_input in (False, True):
        backbone = build_model(arch, small_input=small_input).encoder.backbone
        backbone.avgpool.register_forward_hook(
            lambda module, args, out, key=small_input: pooled_sides.update({key: args[0].shape[-1]}))
        backbone(torch.rand(2, 3, 32, 32))
    assert pooled_sides[True] == 4 and pooled_sides[False] < pooled_sides[True]  # 32 px / 8 at the pool


def test_projection_head_is_linear_bn_relu_linear_with_feat_dim_hidden():
    projector = build_model("narrow_cnn").projector
    assert [type(layer).__name__ for layer in projector] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert projector[0].out_features == 256 and projector[-1].out_features == 128
    assert build_model("narrow_cnn", proj_hidden=32).projector[0].out_features == 32


@pytest.mark.parametrize("arch", ARCHS)
def test_weights_are_random_not_downloaded(arch):
    torch.manual_seed(0)
    first = dict(build_model(arch).named_parameters())
    torch.manual_seed(1)
    second = dict(build_model(arch).named_parameters())
    weights = [name for name, tensor in first.items() if tensor.dim() > 1]  # conv and linear; BN starts at 1, 0
    assert weights and all(not torch.equal(first[name], second[name]) for name in weights)


def test_encoder_normalises_with_imagenet_statistics_by_default():
    encoder = build_model("narrow_cnn").encoder
    assert encoder.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    assert encoder.std.flatten().tolist() == pytest.approx(IMAGENET_STD)
    assert {"mean", "std"} <= {name for name, _ in encoder.named_buffers()}
    views = torch.rand(4, 3, 32, 32)
    encoder.eval()
    torch.testing.assert_close(encoder(views), encoder.backbone((views - encoder.mean) / encoder.std))


def test_custom_normalisation_statistics_change_the_representation():
    torch.manual_seed(0)
    default = build_model("narrow_cnn").eval()
    torch.manual_seed(0)
    custom = build_model("narrow_cnn", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    views = torch.rand(4, 3, 32, 32)
    assert not torch.allclose(default.representation(views), custom.representation(views))


@pytest.mark.parametrize("arch", ["narrow_cnn", "resnet18"])
def test_gradients_reach_every_parameter(arch):
    model = build_model(arch, small_input=True)
    model(torch.rand(4, 3, 32, 32)).pow(2).mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_eval_mode_freezes_batchnorm_statistics_and_train_mode_updates_them():
    model = build_model("resnet18", small_input=True)
    before = {name: buf.clone() for name, buf in model.named_buffers() if "running" in name}
    views = torch.rand(4, 3, 32, 32) * 2 + 1
    with torch.no_grad():
        model.eval()(views)
    assert all(torch.equal(buf, before[name]) for name, buf in model.named_buffers() if name in before)
    with torch.no_grad():
        model.train()(views)
    assert all(not torch.equal(buf, before[name]) for name, buf in model.named_buffers() if name in before)


@pytest.mark.parametrize("arch", ["narrow_cnn", "resnet18"])
def test_forward_works_in_bf16_autocast_with_channels_last(arch):
    model = build_model(arch, small_input=True).to(memory_format=torch.channels_last)
    views = torch.rand(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = model(views)
    assert z.shape == (4, 128) and torch.isfinite(z).all()


def test_unknown_arch_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown arch 'resnet34'.*narrow_cnn.*resnet18.*resnet50"):
        build_model("resnet34")


def test_torchvision_loads_only_for_a_resnet_or_the_cpu_views():
    """Each ``python -m s2r2lib.train``, DDP worker and notebook kernel imports the library, and torchvision takes
    1.5 s of that here: a narrow_cnn run on batched views never loads it."""
    code = ("import sys, torch, s2r2lib.train, s2r2lib.study, s2r2lib.bench.gpu\n"
            "assert 'torchvision' not in sys.modules, 'imported with the library'\n"
            "model = s2r2lib.models.build_model('narrow_cnn')\n"
            "views, ids = s2r2lib.views.make_views(torch.zeros(2, 3, 40, 40, dtype=torch.uint8), 2, 32)\n"
            "model(views)\n"
            "assert 'torchvision' not in sys.modules, 'imported by a narrow_cnn step on batched views'\n"
            "s2r2lib.views.cpu_view_transform(8)\n"
            "assert 'torchvision' in sys.modules, 'the cpu views are torchvision transforms'\n")
    resnet = ("import sys, s2r2lib.models\n"
              "s2r2lib.models.build_model('resnet18')\n"
              "assert 'torchvision' in sys.modules, 'a resnet is torchvision'\n")
    for program in (code, resnet):
        done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-500:]
