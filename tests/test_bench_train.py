"""The training-step benchmark: one row per (arch, method), the method step beside the encoder-only step."""

import re

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


def test_the_study_benchmark_writes_its_rows_where_out_says(tmp_path, monkeypatch, capsys):
    """python -m s2r2lib.bench study --out FILE: the rows, merged by method and setting, with provenance (it had
    imported a writer that does not exist, and lost every measurement at the end)."""
    import math

    from s2r2lib import results
    from s2r2lib.bench import study as bench_study

    timed = {"today": 0.5, "1 thread, channels_last": 0.25}

    def measure(name, method, steps):  # the worker processes' result, without training
        if name not in timed:
            return {"setting": name, "method": method, "status": "not measured: timed out", "load_avg": 1.0}
        return {"setting": name, "method": method, "processes": 1, "threads": 1, "s_per_step": timed[name],
                "first_step_s": 2.0, "wall_s": 9.0, "load_avg": 1.0, "status": "measured"}

    monkeypatch.setattr(bench_study, "measure", measure)
    out = tmp_path / "bench_study.csv"
    settings = ["today", "1 thread, channels_last", "2 x 1 thread (the study's)"]
    assert bench_study.main(["--settings", *settings, "--out", str(out)]) == 1  # one setting not measured
    assert capsys.readouterr().out.endswith(f"wrote {out}\n")
    table = results.read_table(out, dtypes=results.TABLES["bench_study"][0])
    assert table["setting"].tolist() == settings and set(table["method"]) == {"S2R2"}
    assert table["ratio"].tolist()[:2] == [1.0, 2.0] and math.isnan(table["ratio"].astype(float).iloc[2])
    assert table["status"].tolist()[2] == "not measured: timed out" and table["commit"].notna().all()
    timed["today"] = 1.0  # a second run replaces its own rows
    assert bench_study.main(["--settings", "today", "--out", str(out)]) == 0
    again = results.read_table(out, dtypes=results.TABLES["bench_study"][0])
    assert len(again) == 3 and again["s_per_step"].tolist()[0] == 1.0


def test_meets_goal_agrees_with_the_overhead_share_the_row_shows(monkeypatch):
    """An overhead of 9.996 % is written as 0.100: the row must not also say it meets the goal of under 10 %."""
    times = {True: 0.90004, False: 1.0}  # encoder-only step, whole step: overhead 0.09996

    def worker(module, job, timeout, hint=""):
        return {"status": "measured", "step_s": times[job["encoder_only"]], "peak_mib": 1.0}

    monkeypatch.setattr(bench, "run_worker", worker)
    row = bench.measure_row("narrow_cnn", "s2r2", 64, "cpu", "fp32", 1, 1, 60)
    assert (row["overhead_share"], row["meets_goal"]) == ("0.100", "no")
    times[True] = 0.9006  # 0.0994: written 0.099, under the goal
    row = bench.measure_row("narrow_cnn", "s2r2", 64, "cpu", "fp32", 1, 1, 60)
    assert (row["overhead_share"], row["meets_goal"]) == ("0.099", "yes")


@pytest.mark.parametrize("suite,argv,message", [
    ("loss", ["--device", "gpu"], "--device 'gpu' is not a device; use cpu or cuda, or all"),
    ("views", ["--device", "gpu"], "--device 'gpu' is not a device; use cpu or cuda"),
    ("train", ["--device", "tpu:0"], "--device 'tpu:0' is not a device"),
    ("loss", ["--device", "mps"], "--device mps: the benchmarks measure on cpu or cuda only"),
    ("probe", ["--device", "meta"], "--device meta: the benchmarks measure on cpu or cuda only"),
    ("probe", ["--out", "probe.txt"], "--out probe.txt: give a .csv file"),
    ("loss", ["--out", "."], "--out .: give a .csv file"),
    ("study", ["--out", "rows.txt"], "--out rows.txt: give a .csv file"),
    ("loss", ["--sizes", "100", "--views", "3"], "--sizes: N = [100] not a multiple of K = 3"),
])
def test_a_bad_option_ends_a_suite_before_anything_is_measured(suite, argv, message, monkeypatch):
    import importlib

    from s2r2lib import bench as suites

    module = importlib.import_module(f"s2r2lib.bench.{suite}")
    monkeypatch.setattr(module, "run_worker", lambda *a, **k: pytest.fail("measured despite a bad option"),
                        raising=False)  # (views measures in-process; it checks --device first)
    with pytest.raises(SystemExit, match=re.escape(message)):
        module.main(argv)
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="CUDA is not available here, so nothing would be measured"):
            suites.checked_device("cuda")
    assert suites.checked_device("all", allow_all=True) == "all" and suites.checked_device("cpu") == "cpu"


@pytest.mark.parametrize("argv", [["loss", "--views", "0"], ["probe", "--threads", "-1"], ["study", "--methods", "s2r2"]])
def test_counts_below_one_and_unknown_methods_are_refused_by_the_parser(argv, capsys):
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(f"s2r2lib.bench.{argv[0]}").main(argv[1:])
    assert "error: argument" in capsys.readouterr().err


def test_bench_all_takes_no_options_instead_of_failing_after_the_first_suite(capsys):
    from s2r2lib.bench.__main__ import main

    assert main(["all", "--threads", "1"]) == 2
    assert "takes no options" in capsys.readouterr().err


def test_a_suites_rows_go_to_any_csv_name_under_the_tables_columns_and_key(tmp_path):
    from s2r2lib import bench as suites, results

    path = suites.out_path(str(tmp_path / "my_loss.csv"), "bench_loss")
    row = {"impl": "s2r2lib", "N": 40, "B": 2, "K": 20, "D": 8, "tau": 0.01, "device": "cpu:x", "threads": 1,
           "status": "measured", "commit": "abc1234", "torch": "2", "date": "d"}
    suites.write_rows(path, "bench_loss", [row, {**row, "threads": 2}])  # different threads: two rows
    assert len(results.read_table(path, dtypes=results.TABLES["bench_loss"][0])) == 2


def test_a_cuda_index_this_machine_lacks_is_refused(monkeypatch):
    from s2r2lib import bench as suites

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert suites.checked_device("cuda:0") == "cuda:0" and suites.checked_device("cuda") == "cuda"
    with pytest.raises(SystemExit, match="this machine has 1 CUDA device"):
        suites.checked_device("cuda:7")
