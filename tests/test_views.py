"""s2r2lib.views: the cpu and batched backends draw views from the same SimCLR distribution.

Distribution checks use images built so that a view's statistics reveal its random parameters (a
coordinate ramp shows the crop box and the flip; a flat colour shows the jitter and grayscale), with a
two-sample Kolmogorov-Smirnov test at level 0.001 and rate checks at 4 standard errors, so the
tolerance follows from the sample size; each comes with a wrong recipe the same check rejects.
"""

import dataclasses
import math
import pickle
import sys
import warnings

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from s2r2lib import views
from s2r2lib.views import SIMCLR, ViewCollate, draw_view_parameters, make_multicrop_views, make_views

COLOUR_OFF = dataclasses.replace(SIMCLR, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Per-view transforms of tiny images gain nothing from threads, and on a shared 2-core machine
    two threads can wait on each other for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest gap between the two samples' empirical CDFs; values are compared to 4 decimals, so that
    float noise does not split an atom (the views left unchanged) into two."""
    a, b = (a * 1e4).round(), (b * 1e4).round()
    grid = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a.sort().values, grid, right=True) / len(a)
    cdf_b = torch.searchsorted(b.sort().values, grid, right=True) / len(b)
    return (cdf_a - cdf_b).abs().max().item()


def ks_critical(n: int, m: int, alpha: float = 1e-3) -> float:
    return math.sqrt(-0.5 * math.log(alpha / 2)) * math.sqrt((n + m) / (n * m))


def rates_agree(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Two boolean samples' rates differ by less than 4 standard errors of their difference."""
    pooled = torch.cat([a, b]).float().mean().item()
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / len(a) + 1 / len(b)))
    return abs(a.float().mean().item() - b.float().mean().item()) < 4 * se


def ramp_image(height: int, width: int) -> torch.Tensor:
    """(1, 3, H, W) uint8: red = column, green = row (both 0-255), blue = 128."""
    x = torch.linspace(0, 255, width).round().expand(height, width)
    y = torch.linspace(0, 255, height).round()[:, None].expand(height, width)
    return torch.stack([x, y, torch.full_like(x, 128)]).to(torch.uint8)[None]


def crop_geometry(views: torch.Tensor, height: int, width: int):
    """Crop width/height in source pixels and flip, read off views of a ``ramp_image`` (colour off).

    Column u of a view samples x = left + (u + 0.5) * crop_w / size - 0.5, so the red slope over the
    interior columns is crop_w / (size * (W - 1)); a flip makes it negative.
    """
    size = views.shape[-1]
    lo, hi = size // 4, 3 * size // 4
    slope_x = (views[:, 0, :, hi] - views[:, 0, :, lo]).mean(dim=1) / (hi - lo)
    slope_y = (views[:, 1, hi, :] - views[:, 1, lo, :]).mean(dim=1) / (hi - lo)
    crop_w = slope_x.abs() * size * (width - 1)
    crop_h = slope_y * size * (height - 1)
    return crop_w, crop_h, slope_x < 0


def geometry_sample(backend, recipe, seed, height=64, width=64, size=16, images=30, views_per_image=100):
    source = ramp_image(height, width).expand(images, -1, -1, -1)
    views, _ = make_views(source, views_per_image, size, backend, torch.Generator().manual_seed(seed), recipe)
    crop_w, crop_h, flipped = crop_geometry(views, height, width)
    return crop_w * crop_h / (height * width), crop_w / crop_h, flipped


@pytest.fixture(scope="module")
def cpu_geometry():
    return geometry_sample("cpu", COLOUR_OFF, seed=0)


def test_backends_agree_on_crop_area_aspect_ratio_and_flip_rate(cpu_geometry):
    cpu_area, cpu_aspect, cpu_flip = cpu_geometry
    area, aspect, flip = geometry_sample("batched", COLOUR_OFF, seed=1)
    critical = ks_critical(len(area), len(cpu_area))
    assert ks_distance(area, cpu_area) < critical
    assert ks_distance(aspect, cpu_aspect) < critical
    assert rates_agree(flip, cpu_flip)
    assert rates_agree(flip, torch.rand(len(flip), generator=torch.Generator().manual_seed(2)) < 0.5)
    assert cpu_area.min() > 0.08 - 0.02 and cpu_area.max() < 1 + 0.02  # the ramp read-out is accurate


def test_crop_comparison_rejects_a_wrong_crop_scale(cpu_geometry):
    cpu_area, cpu_aspect, _ = cpu_geometry
    area, aspect, _ = geometry_sample("batched", dataclasses.replace(COLOUR_OFF, crop_scale=(0.5, 1.0)), seed=1)
    assert ks_distance(area, cpu_area) > ks_critical(len(area), len(cpu_area))
    area, aspect, _ = geometry_sample("batched", dataclasses.replace(COLOUR_OFF, crop_ratio=(0.9, 1.1)), seed=1)
    assert ks_distance(aspect, cpu_aspect) > ks_critical(len(aspect), len(cpu_aspect))


def test_crop_that_never_fits_falls_back_to_torchvisions_central_crop():
    # Area >= 90% of a 2:1 image at aspect <= 4/3 never fits, so RandomResizedCrop takes the central
    # crop of aspect 4/3: height 32, width round(32 * 4/3) = 43, left (64 - 43) // 2 = 10.
    recipe = dataclasses.replace(COLOUR_OFF, crop_scale=(0.9, 1.0), flip_p=0.0)
    source = ramp_image(32, 64)
    expected = TF.resized_crop(source.float() / 255, 0, 10, 32, 43, [64, 64])
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # crop-then-resize clamps at the border
    for backend, atol in (("cpu", 0.5 / 255 + 1e-6), ("batched", 1e-5)):  # the cpu backend resizes in uint8
        views, _ = make_views(source, 3, 64, backend, recipe=recipe, allow_upscale=True)
        torch.testing.assert_close(views[inner], expected.expand_as(views)[inner], atol=atol, rtol=0)


def colour_sample(backend, recipe, seed, images=20, views_per_image=100):
    """Per-view brightness, saturation and hue, and grayscale / unchanged flags, from a flat orange image."""
    colour = torch.tensor([200, 120, 40], dtype=torch.uint8)
    source = colour.view(1, 3, 1, 1).expand(images, 3, 8, 8)
    views, _ = make_views(source, views_per_image, 8, backend, torch.Generator().manual_seed(seed), recipe)
    rgb = views.mean(dim=(2, 3))  # a flat image stays flat: crop, flip and blur leave it alone
    high, low = rgb.amax(dim=1), rgb.amin(dim=1)
    saturation = (high - low) / high.clamp_min(1e-6)
    hue = torch.atan2(math.sqrt(3) * (rgb[:, 1] - rgb[:, 2]), 2 * rgb[:, 0] - rgb[:, 1] - rgb[:, 2])
    unchanged = (rgb - colour / 255).abs().amax(dim=1) < 1e-4
    return rgb.mean(dim=1), saturation, hue, high - low < 1e-6, unchanged


@pytest.fixture(scope="module")
def cpu_colour():
    return colour_sample("cpu", SIMCLR, seed=0)


def test_backends_agree_on_brightness_saturation_hue_and_grayscale_rate(cpu_colour):
    batched = colour_sample("batched", SIMCLR, seed=1)
    for cpu_stat, stat in zip(cpu_colour[:3], batched[:3]):
        assert ks_distance(stat, cpu_stat) < ks_critical(len(stat), len(cpu_stat))
    gray, unchanged = batched[3:]
    assert rates_agree(gray, cpu_colour[3]) and rates_agree(unchanged, cpu_colour[4])
    reference = torch.rand(len(gray), generator=torch.Generator().manual_seed(3))
    assert rates_agree(gray, reference < SIMCLR.grayscale_p)
    assert rates_agree(unchanged, reference < (1 - SIMCLR.jitter_p) * (1 - SIMCLR.grayscale_p))


def test_colour_comparison_rejects_a_wrong_jitter(cpu_colour):
    brightness = colour_sample("batched", dataclasses.replace(SIMCLR, brightness=0.2), seed=1)[0]
    assert ks_distance(brightness, cpu_colour[0]) > ks_critical(len(brightness), len(cpu_colour[0]))
    hue = colour_sample("batched", dataclasses.replace(SIMCLR, hue=0.05), seed=1)[2]
    assert ks_distance(hue, cpu_colour[2]) > ks_critical(len(hue), len(cpu_colour[2]))
    unchanged = colour_sample("batched", dataclasses.replace(SIMCLR, jitter_p=0.6), seed=1)[4]
    assert not rates_agree(unchanged, cpu_colour[4])


def sharpness_sample(backend, recipe, seed, images=10, views_per_image=100):
    """Mean absolute horizontal difference of views of a checkerboard, whole image, colour jitter off."""
    board = ((torch.arange(32)[:, None] // 2 + torch.arange(32) // 2) % 2 * 255).to(torch.uint8)
    source = board.expand(images, 3, 32, 32)
    views, _ = make_views(source, views_per_image, 32, backend, torch.Generator().manual_seed(seed), recipe)
    return views.diff(dim=-1).abs().mean(dim=(1, 2, 3))


def test_backends_agree_on_blur():
    whole = dataclasses.replace(SIMCLR, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_p=0.0,
                                grayscale_p=0.0, blur_kernel_fraction=0.25)  # a 9-tap kernel at 32 px
    cpu = sharpness_sample("cpu", whole, seed=0)
    batched = sharpness_sample("batched", whole, seed=1)
    assert ks_distance(batched, cpu) < ks_critical(len(batched), len(cpu))
    weaker = sharpness_sample("batched", dataclasses.replace(whole, blur_sigma=(0.1, 1.0)), seed=1)
    assert ks_distance(weaker, cpu) > ks_critical(len(weaker), len(cpu))


@pytest.mark.parametrize("backend", ["cpu", "batched"])
def test_same_seed_gives_same_views_and_another_seed_other_views(backend):
    images = torch.randint(0, 256, (2, 3, 24, 24), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    first, _ = make_views(images, 4, 16, backend, torch.Generator().manual_seed(7))
    again, _ = make_views(images, 4, 16, backend, torch.Generator().manual_seed(7))
    other, _ = make_views(images, 4, 16, backend, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("backend", ["cpu", "batched"])
def test_without_a_generator_each_call_draws_new_views(backend):
    images = torch.randint(0, 256, (2, 3, 24, 24), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    first, _ = make_views(images, 4, 16, backend)
    second, _ = make_views(images, 4, 16, backend)
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("backend", ["cpu", "batched"])
@pytest.mark.parametrize("channels", [1, 3])
def test_views_are_float_in_unit_range_with_image_major_ids(backend, channels):
    images = torch.randint(0, 256, (3, channels, 40, 30), dtype=torch.uint8)
    views, ids = make_views(images, 5, 24, backend)
    assert views.shape == (15, 3, 24, 24) and views.dtype == torch.float32
    assert views.min() >= 0 and views.max() <= 1
    assert ids.dtype == torch.int64 and torch.equal(ids, torch.arange(3).repeat_interleave(5))


@pytest.mark.parametrize("backend", ["cpu", "batched"])
def test_each_view_comes_from_the_image_its_id_names(backend):
    levels = torch.tensor([20, 90, 160, 230], dtype=torch.uint8)
    images = levels.view(4, 1, 1, 1).expand(4, 3, 16, 16)
    views, ids = make_views(images, 6, 8, backend, recipe=COLOUR_OFF)
    torch.testing.assert_close(views.mean(dim=(1, 2, 3)), levels[ids].float() / 255)


def test_multicrop_gives_one_batch_per_crop_size():
    images = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    (large, large_ids), (small, small_ids) = make_multicrop_views(images)
    assert large.shape == (4, 3, 96, 96) and small.shape == (12, 3, 48, 48)
    assert torch.equal(large_ids, torch.arange(2).repeat_interleave(2))
    assert torch.equal(small_ids, torch.arange(2).repeat_interleave(6))


def test_multicrop_small_crops_cover_less_of_the_image():
    source = ramp_image(64, 64).expand(10, -1, -1, -1)
    crops = ((20, 32, (0.14, 1.0)), (20, 16, (0.05, 0.14)))
    (large, _), (small, _) = make_multicrop_views(source, crops, recipe=COLOUR_OFF)
    large_w, large_h, _ = crop_geometry(large, 64, 64)
    small_w, small_h, _ = crop_geometry(small, 64, 64)
    assert (small_w * small_h).max() / 64**2 < 0.14 + 0.02 < (large_w * large_h).max() / 64**2


def test_view_collate_makes_views_in_dataloader_workers_from_images_of_different_sizes():
    dataset = [(torch.randint(0, 256, (3, 40 + 8 * i, 36), dtype=torch.uint8), i) for i in range(4)]
    collate = pickle.loads(pickle.dumps(ViewCollate(3, size=32)))
    batches = list(DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=collate))
    assert len(batches) == 2
    for made, ids in batches:
        assert made.shape == (6, 3, 32, 32) and torch.equal(ids, torch.arange(2).repeat_interleave(3))


@pytest.mark.parametrize("images, kwargs, message", [
    (torch.rand(2, 3, 32, 32), {}, "uint8"),
    (torch.zeros(32, 32, dtype=torch.uint8), {}, r"\(B, C, H, W\)"),
    (torch.zeros(3, 32, 32, dtype=torch.uint8), {}, r"\(B, C, H, W\)"),
    (torch.zeros(2, 4, 32, 32, dtype=torch.uint8), {}, "C = 1 or 3"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), {"views_per_image": 0}, "at least 1"),
    (torch.zeros(2, 3, 32, 48, dtype=torch.uint8), {"size": 40}, "allow_upscale"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), {"backend": "gpu"}, "unknown view backend"),
])
def test_bad_input_raises_a_clear_error(images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_views(images, **{"views_per_image": 2, "size": 16, **kwargs})


# Ops that wait for the device on a GPU: reading a value, an output sized by values, or a tensor made from
# Python numbers (lift_fresh: a copy from pageable host memory, which CUDA's sync debug mode flags).
SYNCS = {"aten::nonzero", "aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::unique",
         "aten::_unique2", "aten::masked_select", "aten::lift_fresh"}


def test_batched_views_never_wait_for_the_device():
    """No op that needs a tensor's value on the host (a device sync on a GPU) runs in make_views."""
    images = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8)
    with torch.profiler.profile() as prof:
        make_views(images, 6, 16, generator=torch.Generator().manual_seed(0))
        make_multicrop_views(images, ((2, 16, (0.5, 1.0)), (3, 8, (0.1, 0.5))))
    assert not [event.key for event in prof.key_averages() if event.key in SYNCS]


def test_a_generator_device_written_without_its_index_matches_the_images_device():
    from s2r2lib.views import _same_device

    assert _same_device(torch.device("cuda"), torch.device("cuda:0"))  # torch.Generator("cuda").device
    assert not _same_device(torch.device("cuda:1"), torch.device("cuda"))  # "cuda" is the current device, 0
    assert not _same_device(torch.device("cuda:1"), torch.device("cuda:0"))
    assert not _same_device(torch.device("cpu"), torch.device("cuda:0"))


def test_allow_upscale_enlarges_past_the_image():
    views, _ = make_views(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), 2, 32, allow_upscale=True)
    assert views.shape == (2, 3, 32, 32)


def test_view_collate_rejects_a_float_image():
    with pytest.raises(ValueError, match="uint8"):
        ViewCollate(2, size=16)([torch.rand(3, 32, 32)])


@pytest.mark.compiles
def test_views_bench_measures_kornia_beside_batched_or_says_it_is_missing(tmp_path, monkeypatch, capsys):
    from s2r2lib.bench import views as bench

    import kornia  # noqa: F401 (the [test] extra installs it: missing, this fails instead of skipping)
    monkeypatch.setenv("S2R2_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(bench, "encoder_images_per_second", lambda *args: 100.0)  # the encoder is not under test
    monkeypatch.setattr(bench, "loader_views_per_second", lambda *args: 100.0)
    argv = ["--size", "32", "--images", "2", "--views", "2", "--repeats", "1", "--device", "cpu",
            "--compile-backend", "eager"]
    assert bench.main(argv) == 0
    assert "batched backend at" in capsys.readouterr().out
    rows = (tmp_path / "bench_views.csv").read_text().splitlines()
    assert any(",kornia," in row and ",ok," in row for row in rows)
    assert any(",batched-compiled," in row and ",ok," in row for row in rows)
    stages = [row.split(",")[3] for row in rows if ",stage:" in row and ",ms/batch," in row]
    assert stages == ["stage:draw", "stage:crop", "stage:jitter", "stage:grayscale", "stage:blur", "stage:clamp"]

    monkeypatch.setitem(sys.modules, "kornia", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "kornia.augmentation", None)
    assert bench.main(argv) == 0
    rows = (tmp_path / "bench_views.csv").read_text().splitlines()
    assert any(",kornia," in row and bench.NO_KORNIA in row for row in rows)


def test_the_render_stages_in_order_are_the_renderer():
    from s2r2lib import views

    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    draws = views.draw_view_parameters(6, 40, 40, generator=torch.Generator().manual_seed(1))
    x = images
    for stage in views.render_stages(draws, 32, 3).values():
        x = stage(x)
    assert torch.equal(x, views.render_views(images, draws, 32, 3))
    assert list(views.render_stages(draws, 32, 3)) == ["crop", "jitter", "grayscale", "blur", "clamp"]
    assert list(views.render_stages(draws, 16, 1)) == ["crop", "jitter", "grayscale", "clamp"]  # no 1-px blur


@pytest.mark.compiles
@pytest.mark.parametrize("compile_backend", ["eager", "aot_eager"])
def test_compiled_views_are_the_eager_views(compile_backend):
    """The renderer traces as one graph (fullgraph: a graph break raises) and draws the same views; inductor's
    fused kernels are measured by ``bench views`` (the C++/Triton build is too slow for the suite)."""
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    eager, ids = make_views(images, 4, 32, generator=torch.Generator().manual_seed(1))
    compiled, compiled_ids = make_views(images, 4, 32, generator=torch.Generator().manual_seed(1),
                                        compile_backend=compile_backend)
    assert torch.equal(ids, compiled_ids)
    torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=0)


def test_compiled_views_need_the_batched_backend_and_a_backend_name():
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="backend='batched'"):
        make_views(images, 2, 32, backend="cpu", compile_backend="inductor")
    with pytest.raises(ValueError, match="compile_backend=True"):
        make_views(images, 2, 32, compile_backend=True)


def test_a_multicrop_area_range_may_be_a_single_area():
    """0 < min_area <= max_area <= 1: a fixed area (min = max) is a valid crop setting, as documented."""
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    ((views, ids),) = make_multicrop_views(images, [(2, 16, (0.5, 0.5))], generator=torch.Generator().manual_seed(0))
    assert views.shape == (4, 3, 16, 16) and ids.tolist() == [0, 0, 1, 1]


def test_view_collate_upscales_small_images_only_when_allowed():
    small = [torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8) for _ in range(2)]
    views, ids = ViewCollate(2, size=32, allow_upscale=True)(small)
    assert views.shape == (4, 3, 32, 32) and ids.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="allow_upscale"):
        ViewCollate(2, size=32)(small)


def test_crop_boxes_reach_every_edge_of_the_image():
    # top and left are drawn over every position a crop can take, the last (touching the bottom and right
    # edges) included
    draws = draw_view_parameters(4000, 40, 40, generator=torch.Generator().manual_seed(0))
    for start, extent in ((draws.top, draws.crop_h), (draws.left, draws.crop_w)):
        assert ((start + extent == 40) & (extent < 40)).any() and ((start == 0) & (extent < 40)).any()
        assert (start >= 0).all() and (start + extent <= 40).all()


def test_the_cpu_backend_renders_with_torchvision(spy):
    calls = spy(views, "_cpu_views")
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    make_views(images, 2, 32, backend="cpu", generator=torch.Generator().manual_seed(0))
    make_views(images, 2, 32, backend="batched", generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1  # the cpu backend only


def test_the_cpu_backend_resizes_its_crops_with_antialiasing():
    from torchvision.transforms import v2

    crops = [t for t in views.cpu_view_transform(32).transforms if isinstance(t, v2.RandomResizedCrop)]
    assert len(crops) == 1 and crops[0].antialias is True  # (as the batched backend's crop, and torchvision's default)


@pytest.mark.compiles
def test_a_compile_backend_renders_through_torch_compile_with_that_backend(spy):
    calls = spy(views, "compiled_render_views")
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    make_views(images, 2, 32, generator=torch.Generator().manual_seed(0))
    make_views(images, 2, 32, generator=torch.Generator().manual_seed(0), compile_backend="eager")
    assert [call["backend"] for call in calls] == ["eager"]  # eager views by default; the backend asked for, if one is


def test_a_compile_backend_reaches_the_renderer_without_compiling(monkeypatch):
    # the same path as the compiles test above, with the compiler replaced by the eager renderer, so that it runs
    # in every suite (mutation runs deselect the tests that compile)
    asked = []
    monkeypatch.setattr(views, "compiled_render_views", lambda backend: asked.append(backend) or views.render_views)
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    eager, _ = make_views(images, 2, 32, generator=torch.Generator().manual_seed(0))
    through, _ = make_views(images, 2, 32, generator=torch.Generator().manual_seed(0), compile_backend="aot_eager")
    assert asked == ["aot_eager"] and torch.equal(through, eager)
    make_multicrop_views(images, ((2, 32, (0.14, 1.0)), (2, 16, (0.05, 0.14))), compile_backend="aot_eager")
    assert asked == ["aot_eager"] * 3  # and every crop of a multi-crop batch


def test_multicrop_views_follow_their_generator_not_the_global_seed():
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    crops = [(2, 32, (0.14, 1.0)), (3, 16, (0.05, 0.14))]
    torch.manual_seed(1)
    first = make_multicrop_views(images, crops, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    second = make_multicrop_views(images, crops, generator=torch.Generator().manual_seed(7))
    for (a, a_ids), (b, b_ids) in zip(first, second):
        assert torch.equal(a, b) and torch.equal(a_ids, b_ids)


def test_view_ids_are_made_on_the_device_asked_for():
    # on a GPU the ids must sit beside the views; the meta device stands in for it here
    ids = views._view_ids(3, 2, torch.device("meta"))
    assert ids.device.type == "meta" and ids.shape == (6,)


def test_the_cpu_backend_clamps_its_views_into_0_1_from_both_sides():
    # torchvision's float blur can round a little past the range; the batched backend's views lie in [0, 1] too
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    for value, clamped in ((-0.25, 0.0), (1.25, 1.0)):
        got, ids = views._cpu_views([image], 2, lambda _: torch.full((3, 4, 4), value))
        assert torch.equal(got, torch.full((2, 3, 4, 4), clamped)) and ids.tolist() == [0, 0]


@pytest.mark.parametrize("backend", ["cpu", "batched"])
def test_views_warn_about_nothing(backend):
    # a warning raised at every step would bury a run's log (grid_sample warns unless align_corners is given)
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_views(images, 3, 32, backend, generator=torch.Generator().manual_seed(0))
        make_multicrop_views(images, generator=torch.Generator().manual_seed(0), allow_upscale=True)


def test_multicrop_views_upscale_only_when_allowed():
    images = torch.randint(0, 256, (2, 3, 24, 24), dtype=torch.uint8)
    crops = [(2, 32, (0.5, 1.0))]
    with pytest.raises(ValueError, match="allow_upscale"):
        make_multicrop_views(images, crops)
    ((upscaled, ids),) = make_multicrop_views(images, crops, allow_upscale=True)
    assert upscaled.shape == (4, 3, 32, 32) and ids.tolist() == [0, 0, 1, 1]



def test_a_view_that_no_try_fits_takes_the_central_crop_of_clamped_ratio():
    """RandomResizedCrop's fallback, per view: a view whose ten tries all overflow the image takes the central
    crop of the whole image, its aspect ratio clamped to the recipe's range (3/4 to 4/3); its neighbour keeps
    its own fitting try."""
    def uniform_of(area_draws):
        draws = iter([area_draws, torch.full((2, 10), 0.5)])  # the tries' areas, then their log-ratios (ratio 1)

        def uniform(low, high, *shape):
            return low + (high - low) * next(draws, torch.full(shape, 0.5))  # then top and left: the middle
        return uniform

    areas = torch.tensor([[1.0] * 10, [0.1] * 10])  # the whole image (never fits at ratio 1), and 17.2 % of it
    # tall, 40 x 10: the fallback is 10 wide and round(10 / (3/4)) = 13 high; the fitting try 8 x 8 (68.8 px^2)
    top, left, h, w = views._sample_crop_boxes(2, 40, 10, views.SIMCLR, uniform_of(areas))
    assert (top.tolist(), left.tolist(), h.tolist(), w.tolist()) == ([13, 16], [0, 1], [13, 8], [10, 8])
    # wide, 10 x 40: round(10 x 4/3) = 13 wide, 10 high, in the middle
    top, left, h, w = views._sample_crop_boxes(2, 10, 40, views.SIMCLR, uniform_of(areas))
    assert (top.tolist(), left.tolist(), h.tolist(), w.tolist()) == ([0, 1], [13, 16], [10, 8], [13, 8])


def test_view_collate_makes_the_papers_96_pixel_views_unless_told():
    images = [torch.randint(0, 256, (3, 100, 120), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i in range(2)]
    out, ids = views.ViewCollate(3)(images)
    assert out.shape == (6, 3, 96, 96) and ids.tolist() == [0, 0, 0, 1, 1, 1]


def test_the_cpu_transform_makes_the_papers_96_pixel_views_unless_told():
    image = torch.randint(0, 256, (3, 100, 120), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert views.cpu_view_transform()(image).shape == (3, 96, 96)


# --- What make mutation left alive in views.py (seed 23, a sample of 60) -----------------------------------

def test_a_crop_stays_inside_its_image_when_a_position_draw_returns_its_upper_bound():
    # torch's uniform_ can return its upper bound on some devices: the crop's corner is clamped for that
    def uniform(low, high, *shape):
        return torch.full(shape, 1.0 if (low, high) == (0, 1) else (low + high) / 2)

    top, left, crop_h, crop_w = views._sample_crop_boxes(3, 32, 40, views.SIMCLR, uniform)
    assert (top + crop_h).max() == 32 and (left + crop_w).max() == 40  # at the far edge, not past it


@pytest.mark.parametrize("area", [(True, 1.0), (0.1, "1.0")])
def test_a_swav_crop_area_must_be_two_real_numbers(area):
    with pytest.raises(ValueError, match=r"crops\[0\] area range must be two numbers"):
        views._check_crops([(2, 16, area)])


# --- What make mutation left alive in views.py (every one of its 1,284 mutants, at 58eec3c) ----------------

def test_the_batched_views_never_leave_the_images_device():
    """On a GPU every tensor the batched backend makes must sit beside the images. The meta device stands in for
    one: a tensor made on the CPU by mistake meets a meta tensor and raises."""
    images = torch.zeros(2, 3, 40, 40, dtype=torch.uint8, device="meta")
    made = [make_views(images, 3, 32)] + make_multicrop_views(images, ((2, 32, (0.14, 1.0)), (2, 16, (0.05, 0.14))))
    assert [(v.device.type, i.device.type) for v, i in made] == [("meta", "meta")] * 3
    draws = draw_view_parameters(4, 40, 40, device="meta")
    assert {f.name: getattr(draws, f.name).device.type for f in dataclasses.fields(draws)} == \
        {f.name: "meta" for f in dataclasses.fields(draws)}
    with pytest.raises(ValueError, match="generator is on cpu but images are on meta; create it with "
                                         r"torch.Generator\(device=images.device\)"):
        make_views(images, 3, 32, generator=torch.Generator())


@pytest.mark.parametrize("n", [1, 3])
def test_the_batched_blur_is_torchvisions_gaussian_blur_with_each_views_sigma(n):
    x = torch.rand(n, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([0.4, 1.0, 2.0])[:n]
    blurred = views._gaussian_blur(x, sigmas, 5)
    for view, sigma in enumerate(sigmas.tolist()):
        expected = TF.gaussian_blur(x[view], [5, 5], [sigma, sigma])
        torch.testing.assert_close(blurred[view], expected, atol=1e-6, rtol=0)


def test_views_lie_in_0_1_though_a_blur_of_white_rounds_past_1():
    # the blur's weights sum to 1 only up to rounding: a white view comes out of it a few 1e-7 above 1
    white = torch.full((4, 3, 40, 40), 255, dtype=torch.uint8)
    blurred = dataclasses.replace(SIMCLR, jitter_p=0.0, grayscale_p=0.0, blur_p=1.0)
    out, _ = make_views(white, 8, 32, generator=torch.Generator().manual_seed(0), recipe=blurred)
    assert out.max() == 1.0 and out.min() >= 0.9


def test_one_view_per_image_of_one_pixel_from_a_one_pixel_wide_image_is_allowed():
    thin = torch.full((2, 3, 8, 1), 255, dtype=torch.uint8)
    for backend in ("batched", "cpu"):
        out, ids = make_views(thin, 1, 1, backend, generator=torch.Generator().manual_seed(0), recipe=COLOUR_OFF)
        assert out.shape == (2, 3, 1, 1) and ids.tolist() == [0, 1] and (out == 1).all()


def test_make_views_makes_the_papers_96_pixel_views_unless_told():
    images = torch.randint(0, 256, (2, 3, 100, 120), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert make_views(images, 2)[0].shape == (4, 3, 96, 96)


def test_view_collate_takes_the_image_of_a_labelled_item():
    black, white = torch.zeros(3, 20, 20, dtype=torch.uint8), torch.full((3, 20, 20), 255, dtype=torch.uint8)
    out, ids = ViewCollate(2, size=16, recipe=COLOUR_OFF)([(black, 7), [white, 3]])  # (image, label) items
    assert out.shape == (4, 3, 16, 16) and ids.tolist() == [0, 0, 1, 1]
    assert (out[:2] == 0).all() and (out[2:] == 1).all()


def test_the_cpu_transform_follows_the_recipe_it_is_given():
    from torchvision.transforms import v2

    recipe = dataclasses.replace(SIMCLR, crop_scale=(0.3, 0.9), crop_ratio=(0.9, 1.1), blur_p=0.3,
                                 blur_sigma=(0.5, 0.7))
    steps = views.cpu_view_transform(32, recipe).transforms
    (crop,) = [t for t in steps if isinstance(t, v2.RandomResizedCrop)]
    (blur,) = [t for t in steps if isinstance(t, v2.RandomApply) and isinstance(t.transforms[0], v2.GaussianBlur)]
    assert (tuple(crop.scale), tuple(crop.ratio)) == ((0.3, 0.9), (0.9, 1.1))
    assert blur.p == 0.3 and tuple(blur.transforms[0].sigma) == (0.5, 0.7)


def test_the_cpu_backend_seeds_its_views_from_a_wide_range():
    # the seed drawn from the generator spans 2**62 values: 64 generators give 64 different sets of views
    image = torch.randint(0, 256, (1, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    drawn = {make_views(image, 1, 8, "cpu", torch.Generator().manual_seed(seed))[0].sum().item() for seed in range(64)}
    assert len(drawn) == 64


@pytest.mark.parametrize("area, log_ratio, box", [
    (1200.0, math.log(4 / 3), (40, 30)),  # the full width, 30 rows (ratio 4/3, the recipe's largest): it fits
    (1200.0, -math.log(4 / 3), (30, 40)),  # the full height
    (1.0, 0.0, (1, 1)),  # one pixel fits
    (0.3, math.log(3 / 4), (40, 40)),  # 0 wide, 1 high: no crop, so the fallback (the whole square image)
    (0.3, math.log(4 / 3), (40, 40)),  # 1 wide, 0 high
])
def test_a_try_fits_when_its_box_is_at_least_one_pixel_and_at_most_the_image(area, log_ratio, box):
    """RandomResizedCrop's test, 0 < w <= W and 0 < h <= H, on ten tries that all draw one box."""
    shapes = []

    def uniform(low, high, *shape):
        shapes.append(shape)
        value = {0: area / (40 * 40), 1: log_ratio}.get(len(shapes) - 1, 0.0)  # area, log-ratio, then top, left
        return torch.full(shape, value, dtype=torch.float64)

    _, _, crop_h, crop_w = views._sample_crop_boxes(1, 40, 40, SIMCLR, uniform)
    assert (crop_w.item(), crop_h.item()) == box and shapes[:2] == [(1, 10), (1, 10)]  # ten tries, as torchvision's


def test_a_generator_on_cuda_without_an_index_is_the_current_device_not_any(monkeypatch):
    from s2r2lib.views import _same_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # a process whose current device is cuda:1
    assert _same_device(torch.device("cuda"), torch.device("cuda:1"))
    assert not _same_device(torch.device("cuda"), torch.device("cuda:0"))
    assert _same_device(torch.device("cpu"), torch.device("cpu"))
