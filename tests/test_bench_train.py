"""The training-step benchmark: one row per (arch, method), the method step beside the encoder-only step."""

import pytest
import torch

from s2r2lib.bench import train as bench
from s2r2lib.results import read_table
from s2r2lib.train import PRESETS


def test_bench_config_divides_the_paper_batch_by_the_scale_and_keeps_two_images():
    config = bench.bench_config("resnet18", "s2r2", 8, "cpu", "fp32")
    preset = PRESETS["paper-resnet18-stl10-s2r2"]
    assert config.images_per_batch == preset["images_per_batch"] // 8
    assert config.views_in_batch == config.images_per_batch * preset["views_per_image"]
    assert config.view_size == 96 and config.optimizer == "adam"
    assert bench.bench_config("resnet18", "s2r2", 1000, "cpu", "fp32").images_per_batch == 2


def test_swav_views_are_the_presets_large_and_small_crops():
    config = bench.bench_config("resnet18", "swav", 1, "cpu", "fp32")
    assert bench.view_shapes(config) == [(256 * 2, 96), (256 * 6, 48)]
    assert sum(count for count, _ in bench.view_shapes(config)) == config.views_in_batch
    small = bench.bench_config("resnet18", "swav", 64, "cpu", "fp32")
    images = torch.randint(0, 256, (small.images_per_batch, 3, 96, 96), dtype=torch.uint8)
    assert [(len(v), v.shape[-1]) for v in bench.premade_views(small, images)] == bench.view_shapes(small)


def test_an_arch_without_a_paper_preset_takes_resnet18s_sizes():
    assert bench.preset_name("narrow_cnn", "simclr") == "paper-resnet18-stl10-simclr"
    assert bench.preset_name("resnet50", "swav") == "paper-resnet18-stl10-swav"  # the paper trains no resnet50 swav
    assert bench.preset_name("resnet50", "s2r2") == "paper-resnet50-stl10-s2r2"


@pytest.mark.slow
def test_bench_writes_one_row_per_method_with_ratios_that_follow_from_the_times(tmp_path, capsys):
    out = tmp_path / "bench_train.csv"
    tiny = ["--device", "cpu", "--archs", "narrow_cnn", "--scale", "64", "--repeats", "1", "--out", str(out)]
    threads = torch.get_num_threads()
    assert bench.main([*tiny, "--methods", "s2r2", "swav"]) == 0
    assert torch.get_num_threads() == threads  # the benchmark leaves its caller's settings alone
    printed = capsys.readouterr().out
    rows = read_table(out).to_dict("records")
    assert [(row["arch"], row["method"], row["scale"]) for row in rows] == [("narrow_cnn", "s2r2", 64),
                                                                            ("narrow_cnn", "swav", 64)]
    assert set(bench.COLUMNS) <= set(rows[0])
    for row in rows:
        assert row["status"] == "measured"
        assert row["commit"] and row["torch"] and row["date"] and row["device"].startswith("cpu:")
        step, encoder = float(row["step_s"]), float(row["encoder_step_s"])
        assert float(row["time_vs_encoder"]) == pytest.approx(step / encoder, rel=2e-3)
        assert float(row["overhead_share"]) == pytest.approx(1 - encoder / step, abs=2e-3)
        assert row["meets_goal"] == ("yes" if float(row["overhead_share"]) < bench.GOAL else "no")
        assert float(row["views_per_s"]) == pytest.approx(int(row["views"]) / step, rel=2e-3)
        assert float(row["peak_mib"]) >= 0 and float(row["encoder_peak_mib"]) >= 0  # peak RSS may not grow
        assert f"{'meets' if row['meets_goal'] == 'yes' else 'misses'} the goal" in printed
    assert rows[1]["view_sizes"] == "8@96px + 24@48px"  # 256 // 64 = 4 images, 2 large and 6 small crops each

    # A second run of one method replaces its row and keeps the other (rows are keyed by device, arch, method, scale).
    assert bench.main([*tiny, "--methods", "s2r2"]) == 0
    again = read_table(out).to_dict("records")
    assert [row["method"] for row in again] == ["s2r2", "swav"]  # replaced in place: the file keeps its order
    assert again[1] == rows[1] and again[0]["date"] >= rows[0]["date"]
