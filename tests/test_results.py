"""The results tables: typed columns, merges by key, writers that take turns, files with the user's mode,
the paper's tables as printed, and outputs that publish only when asked."""

import contextlib
import multiprocessing
import os
import re
import stat
from pathlib import Path

import pandas as pd
import pytest

from s2r2lib import fileio, plots, results

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT.parent / "shared" / "paper" / "s2r2-paper.md"
MEASURED = {"table": "probe", "arch": "narrow_cnn", "dataset": "embedded", "method": "S2R2", "images": 32,
            "views": 8, "epochs": 1, "seed": 0, "metric": "linear_top1", "value": "0.4", "source": "measured"}


@pytest.fixture
def own_results(tmp_path, monkeypatch):
    """A results folder of this test's own: a broken runs.csv must not leak into other tests."""
    monkeypatch.setenv("S2R2_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"


# --- The paper's rows and tables --------------------------------------------------------------------

def test_paper_rows_hold_every_printed_cell_of_tables_1_and_2():
    rows = results.paper_rows()
    assert len(rows) == 9 * 8 + 6 * 4
    assert set(rows["source"]) == {"paper"} and set(rows["metric"]) == {"linear_top1"}
    assert rows["value"].dtype == "Float64" and rows["images"].dtype == "Int64"


@pytest.mark.skipif(not PAPER.is_file(), reason="the paper's text is not beside this checkout")
def test_paper_rows_match_the_paper_text_exactly():
    printed = []
    for line in PAPER.read_text().splitlines():
        cells = line.split("\t")
        names = [i for i, cell in enumerate(cells) if cell in ("SimCLR", "SwAV", "S2R2")]
        if names and re.search(r"\b(SimCLR|SwAV|S2R2)\t", line):
            printed.append(cells[names[0] + 1:])
    ours = {}
    for row in results.paper_rows().to_dict("records"):
        ours.setdefault((row["table"], row["dataset"], row["method"]), [str(row["images"]), str(row["views"])]) \
            .append(f"{row['value']:.1f}")
    assert sorted(printed) == sorted(ours.values())


def test_paper_table_is_a_pivot_in_the_papers_order_with_measured_cells_only_where_measured():
    runs = pd.concat([results.paper_rows(), results.typed([{
        **MEASURED, "table": "table1", "arch": "resnet18", "dataset": "COCO-Val", "method": "S2R2", "images": 8,
        "views": 10, "epochs": 50, "value": 0.6123}], results.RUN_DTYPES)], ignore_index=True)
    table = results.paper_table(runs, "table1")
    assert table.shape == (9, 16) and table.columns.names == ["epochs", "source"]
    assert table.index.names == ["training data", "model", "#images", "#views"]
    assert list(table.index.get_level_values("model")[:3]) == ["SimCLR", "SwAV", "S2R2"]
    assert table.loc[("STL10 (unlabeled + train)", "S2R2", 64, 20), (10, "paper")] == pytest.approx(72.4)
    assert table.loc[("COCO-Val", "S2R2", 8, 10), (50, "measured")] == pytest.approx(61.23)  # in %, as the paper
    assert int(table.xs("measured", axis=1, level="source").notna().sum().sum()) == 1
    html = results.styled(table).to_html()
    assert "61.2" in html and "–" in html  # an unmeasured cell reads as a dash, never as a number


def test_a_run_at_a_printed_setting_probed_on_stl10_fills_its_paper_cell():
    """notebook 03's rows of a run at the paper profile (S2R2, ResNet18, 64 x 20, 16,400 steps of STL10's 105k
    images) fill Table 1's 10-epoch cell, and notebook 04 shows them there."""
    stl10 = {"data": "stl10", "split": "train+unlabeled"}
    trained = {**MEASURED, "arch": "resnet18", "dataset": "stl10", "images": 64, "views": 20, "epochs": 9.996,
               "value": "0.6010"}
    rows = [trained, {**trained, "metric": "knn20_top1"}, {**trained, "method": "random-init", "images": "",
                                                          "views": "", "epochs": 0}]
    [cell] = results.paper_cell_rows(rows, stl10, "stl10")
    assert cell == {**trained, "table": "table1", "dataset": "STL10 (unlabeled + train)", "epochs": 10}
    table = results.paper_table(pd.concat([results.paper_rows(), results.typed([cell], results.RUN_DTYPES)]),
                                "table1")
    assert table.loc[("STL10 (unlabeled + train)", "S2R2", 64, 20), (10, "measured")] == pytest.approx(60.1)
    assert int(table.xs("measured", axis=1, level="source").notna().sum().sum()) == 1
    for row, config, probed in (({**trained, "epochs": 9.8}, stl10, "stl10"),  # 2 % short of the budget
                                ({**trained, "images": 32}, stl10, "stl10"),  # a batch no row prints
                                (trained, {**stl10, "split": "train"}, "stl10"),  # not the paper's training split
                                (trained, stl10, "embedded")):  # probed elsewhere than on STL10
        assert results.paper_cell_rows([row], config, probed) == []
    resnet50 = {**trained, "arch": "resnet50", "images": 16, "epochs": 200}  # Table 2's COCO-Val S2R2 at 200
    assert [(c["table"], c["dataset"], c["epochs"]) for c in results.paper_cell_rows(
        [resnet50], {"data": "coco", "split": "val2017"}, "stl10")] == [("table2", "COCO-Val", 200)]
    swav = {**trained, "method": "SwAV", "images": 128, "views": 6, "epochs": 50.2}  # 2 + 4 crops, COCO-Train
    assert [(c["table"], c["epochs"]) for c in results.paper_cell_rows(
        [swav], {"data": "coco", "split": "train2017"}, "stl10")] == [("table1", 50)]
    notebook_03 = (ROOT / "notebooks" / "03_linear_probe.ipynb").read_text()
    assert "results.paper_cell_rows(rows, config, data)" in notebook_03.replace('\\"', '"')  # what it writes


def test_paper_margins_are_s2r2_minus_the_best_other_model_per_budget():
    margins = results.paper_margins(results.paper_rows(), "table1")
    assert results.paper_margins(results.paper_rows()) == margins  # table 1 by default
    assert margins["STL10 (unlabeled + train)"][0] == pytest.approx(72.4 - 67.4)
    assert margins["COCO-Val"][-1] == pytest.approx(68.5 - 64.8)
    assert len(margins["COCO-Train"]) == 8
    assert list(margins) == ["STL10 (unlabeled + train)", "COCO-Train", "COCO-Val"]  # the paper's order


def test_a_table_the_project_has_not_committed_reads_as_empty_with_its_columns(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "project_dir", lambda: tmp_path)
    empty = results.committed_table("runs")
    assert empty.empty and list(empty.columns) == results.RUN_COLUMNS


# --- Merging, refusing, reading back ---------------------------------------------------------------------

def test_write_runs_merges_by_key_in_place_keeps_the_paper_and_refuses_bad_columns(own_results):
    results.write_runs([MEASURED, {**MEASURED, "seed": 1}])
    results.write_runs([{**MEASURED, "value": "0.5"}])
    runs = results.read_runs()
    ours = runs[runs["source"] == "measured"]
    assert list(zip(ours["seed"], ours["value"])) == [(0, 0.5), (1, 0.4)]  # seed 0 replaced where it stood
    assert (runs["source"] == "paper").sum() == 96
    with pytest.raises(ValueError, match=r"no column\(s\) \['accuracy'\]"):
        results.write_runs([{**MEASURED, "accuracy": 1}])


def _reference_merge(old: list[dict], new: list[dict], key: tuple[str, ...]) -> list[dict]:
    """merge_rows' contract, written out the slow way on lists of dicts."""
    def of(row):
        return tuple(row[k] for k in key)

    newest = {}
    for row in new:
        newest.pop(of(row), None)  # of new rows sharing a key the last counts, at its place among them
        newest[of(row)] = row
    merged, placed = [], set()
    for row in old:
        if of(row) not in newest:
            merged.append(row)
        elif of(row) not in placed:  # the new row takes the first place of its key; later old rows go
            merged.append(newest[of(row)])
            placed.add(of(row))
    return merged + [row for k, row in newest.items() if k not in placed]


def test_merge_rows_agrees_with_its_contract_on_random_tables():
    """Keys repeated in the old rows, in the new rows, empty cells in keys, and either side empty."""
    import random

    dtypes, rng = {"a": "string", "b": "Int64", "v": "Float64"}, random.Random(3)
    for _ in range(300):
        old, new = ([{"a": rng.choice(["x", "y", None]), "b": rng.choice([1, 2, None]), "v": float(rng.randrange(99))}
                     for _ in range(rng.randint(0, 5))] for _ in range(2))
        for key in (("a",), ("a", "b")):
            got = results.merge_rows(results.typed(old, dtypes), results.typed(new, dtypes), key)
            want = results.typed(_reference_merge(old, new, key), dtypes)
            pd.testing.assert_frame_equal(got, want)


def test_writing_no_rows_leaves_a_table_as_it_was(own_results):
    results.write_runs([MEASURED, {**MEASURED, "seed": 1}])
    before = (own_results / "runs.csv").read_bytes()
    results.write_runs([])
    assert (own_results / "runs.csv").read_bytes() == before


def test_a_table_at_a_path_of_its_own_starts_empty_whatever_results_holds(own_results, tmp_path):
    """Only a table in the results folder falls back to the published one; a .csv elsewhere is its own."""
    spec = {"key_columns": ["claim"], "dtypes": {"claim": "Int64", "verdict": "string"}}
    results.write_table("claims", [{"claim": 1, "verdict": "holds"}], **spec)
    path = results.write_table(tmp_path / "elsewhere" / "claims.csv", [{"claim": 2, "verdict": "fails"}], **spec)
    assert path.read_text() == "claim,verdict\n2,fails\n"


def test_a_runs_table_without_rows_reads_as_the_papers_rows(own_results):
    own_results.mkdir()
    (own_results / "runs.csv").write_text(",".join(results.RUN_COLUMNS) + "\n")
    assert results.read_runs().equals(results.paper_rows())


def test_a_line_cut_short_or_too_long_is_named_by_its_line_number(own_results):
    results.write_runs([MEASURED])
    path = own_results / "runs.csv"
    good = path.read_text()
    lines = good.count("\n")  # the header, then the rows
    path.write_text(good + "measured,narrow_cnn\n")
    with pytest.raises(ValueError, match=rf"runs\.csv:{lines + 1}: fewer fields than the header's "
                                         rf"{len(results.RUN_COLUMNS)}; fix or delete that line"):
        results.read_runs()
    path.write_text(good + good.splitlines()[-1] + ",extra\n")
    with pytest.raises(ValueError, match=rf"runs\.csv:{lines + 1}: a line with more fields than the header"):
        results.read_runs()


def test_a_run_that_differs_only_in_lr_or_steps_is_a_row_of_its_own(own_results):
    results.write_runs([{**MEASURED, "lr": 1e-4, "steps": 100}, {**MEASURED, "lr": 1e-3, "steps": 100},
                        {**MEASURED, "lr": 1e-3, "steps": 200, "views_seen": 25600, "train_s": 12.5}])
    ours = results.read_runs().query("source == 'measured'")
    assert len(ours) == 3 and ours["views_seen"].iloc[2] == 25600 and ours["train_s"].iloc[2] == 12.5


def test_a_table_written_before_the_new_columns_reads_with_them_empty(own_results):
    own_results.mkdir(parents=True)
    old_columns = [c for c in results.RUN_COLUMNS if c not in ("lr", "steps", "views_seen", "train_s")]
    pd.DataFrame([MEASURED], columns=old_columns).to_csv(results.runs_path(), index=False)
    runs = results.read_runs()
    assert list(runs.columns) == results.RUN_COLUMNS and runs["lr"].isna().all() and runs["value"][0] == 0.4


@pytest.mark.parametrize("column, value", [("value", "abc"), ("value", "=1+2"), ("value", "inf"), ("value", [1]),
                                           ("images", 2.5), ("images", "8 images"), ("seed", True)])
def test_a_number_column_refuses_anything_but_a_number(own_results, column, value):
    with pytest.raises(ValueError, match=f"column '{column}' holds"):
        results.write_runs([{**MEASURED, column: value}])
    assert not results.runs_path().exists()  # refused before anything was written


@pytest.mark.parametrize("text", ['=HYPERLINK("http://x","click")', "=cmd|' /C calc'!A0", "@SUM(1+1)*cmd|'/C calc'!A0",
                                  "+1+cmd", "-2+3+cmd", "\t=1+1"])
def test_text_a_spreadsheet_would_run_as_a_formula_is_refused(own_results, text):
    with pytest.raises(ValueError, match="CSV injection"):
        results.write_runs([{**MEASURED, "method": text}])


def test_a_hand_edited_formula_or_a_broken_line_is_refused_with_its_line(own_results):
    results.write_runs([MEASURED])
    path = results.runs_path()
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace("SimCLR", "=SUM(A1:A9)", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 4: column 'method' starts with '='"):
        results.read_runs()
    lines[3] = lines[4]
    lines[5] += ",an extra field"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"runs\.csv:6"):
        results.write_runs([])


def test_a_text_column_holds_text_whatever_it_was_given():
    table = results.typed([{"commit": 123}, {"commit": "abc"}, {"commit": None}], {"commit": "string"})
    assert table["commit"].tolist() == ["123", "abc", pd.NA]


def test_a_table_needs_declared_types_and_a_key(own_results):
    with pytest.raises(ValueError, match="no declared column types"):
        results.write_table("claims", [{"claim": "1"}])
    path = results.write_table("claims", [{"claim": 1, "verdict": "holds"}], key_columns=["claim"],
                               dtypes={"claim": "Int64", "verdict": "string"})
    results.write_table("claims", [{"claim": 1, "verdict": "fails"}, {"claim": 2, "verdict": "holds"}],
                        key_columns=["claim"], dtypes={"claim": "Int64", "verdict": "string"})
    table = results.read_table(path.stem, dtypes={"claim": "Int64", "verdict": "string"})
    assert table.to_dict("records") == [{"claim": 1, "verdict": "fails"}, {"claim": 2, "verdict": "holds"}]
    with pytest.raises(ValueError, match=r"key_columns \['run'\] of table 'claims' are not among its columns "
                                         r"\['claim', 'verdict'\]"):
        results.write_table("claims", [{"claim": 3}], key_columns=["run"],
                            dtypes={"claim": "Int64", "verdict": "string"})
    with pytest.raises(ValueError, match=r"^claims\.csv, row 1: column 'claim' holds an integer"):
        results.write_table("claims", [{"claim": 3}, {"claim": "three"}], key_columns=["claim"],
                            dtypes={"claim": "Int64", "verdict": "string"})  # the error names the file


def _write_many(args):
    worker, count = args
    for i in range(count):
        results.write_runs([{**MEASURED, "seed": worker * 1000 + i}])


@contextlib.contextmanager
def closing_pool(processes: int):
    """A fork pool that is closed and joined, never terminated. ``with Pool()`` terminates its workers with
    SIGTERM; a worker that inherits a SIGTERM handler (mutmut's forkserver installs one in every test process)
    can outlive that, and the test then waits for it forever at 0 % CPU (seen under make mutation: py-spy
    showed the test joining a worker still waiting for work)."""
    pool = multiprocessing.get_context("fork").Pool(processes)
    try:
        yield pool
    finally:
        pool.close()
        pool.join()


def test_writers_in_several_processes_at_once_lose_no_row(own_results):
    workers, count = 4, 12
    with closing_pool(workers) as pool:
        pool.map(_write_many, [(worker, count) for worker in range(workers)])
    ours = results.read_runs().query("source == 'measured'")
    assert sorted(ours["seed"]) == sorted(w * 1000 + i for w in range(workers) for i in range(count))
    assert (results.read_runs()["source"] == "paper").sum() == 96


def test_a_lock_held_too_long_names_the_file_and_what_to_do(tmp_path):
    path = tmp_path / "t.csv"
    with fileio.locked(path), pytest.raises(TimeoutError, match=r"t\.csv stayed locked.*delete"):
        with closing_pool(1) as pool:  # another process: the lock is per process
            pool.apply(_lock_briefly, (path,))


def _lock_briefly(path):
    with fileio.locked(path, timeout=0.2):
        pass


# --- Files: atomic, with the user's mode ---------------------------------------------------------------------

def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    fileio.atomic_write_bytes(path, b"old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_written_files_get_the_users_umask_like_any_other_file(tmp_path, umask, monkeypatch):
    import torch

    from s2r2lib import train

    monkeypatch.setenv("S2R2_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("S2R2_RESULTS_DIR", str(tmp_path / "results"))
    expected = 0o666 & ~umask
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()
    written = [fileio.atomic_write_bytes(tmp_path / "plain.bin", b"x"), results.write_runs([MEASURED]),
               *plots.save_figure(fig, "mode"), train.save_checkpoint(tmp_path / "checkpoint.pt", {"w": torch.ones(1)})]
    plt.close(fig)
    config = train.TrainConfig(max_steps=1, output=str(tmp_path / "run")).resolved()
    train._prepare_output(config, resume=False)
    written.append(tmp_path / "run" / "config.yaml")
    modes = {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in written}
    assert modes == {path.name: oct(expected) for path in written}


# --- Where outputs go --------------------------------------------------------------------------------------

def test_outputs_go_to_scratch_unless_published(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "s2r2lib").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    monkeypatch.chdir(project)
    for kind in ("FIGURES", "RESULTS"):
        monkeypatch.delenv(f"S2R2_{kind}_DIR", raising=False)
    monkeypatch.setenv(results.PUBLISH_ENV, "0")  # and restored after the test
    assert results.output_dir("figures") == project / "build" / "scratch" / "figures"
    published = project / "results"
    published.mkdir()
    results.write_runs([MEASURED])  # by hand: the scratch table starts from the published one
    assert not (published / "runs.csv").exists()
    results.set_publish(True)
    assert results.output_dir("results") == published and results.output_dir("figures") == project / "figures"
    results.write_runs([{**MEASURED, "seed": 7}])
    results.set_publish(False)
    results.write_runs([{**MEASURED, "seed": 8}])
    scratch = results.read_runs().query("source == 'measured'")
    assert sorted(scratch["seed"]) == [0, 8]  # the scratch copy is older than the publish of seed 7
    assert results.committed_table("runs").query("source == 'measured'")["seed"].tolist() == [7]  # the project's own rows, wherever outputs go
    results.set_publish(True)
    results.write_table("study_verdicts", [{"claim": "1", "data": "d", "verdict": "supported", "comparison": "c"}])
    results.set_publish(False)  # a table not written to scratch yet is read from the published folder
    assert results.read_table("study_verdicts")["verdict"].tolist() == ["supported"]
    assert results.read_table(published / "study_verdicts.csv")["verdict"].tolist() == ["supported"]  # by path
    results.write_table("study_verdicts", [{"claim": "2", "data": "d", "verdict": "inconclusive", "comparison": "c"}])
    assert results.read_table("study_verdicts")["claim"].tolist() == ["1", "2"]  # a scratch table starts from it
    assert results.committed_table("study_verdicts")["claim"].tolist() == ["1"]  # and leaves it alone
    with pytest.raises(TypeError, match="publish must be True or False"):
        results.set_publish("yes")


def test_provenance_names_commit_device_and_date():
    prov = results.provenance("cpu")
    assert prov["device"].startswith("cpu:") and prov["date"].endswith("Z")
    assert prov["commit"] == "unknown" or re.fullmatch(r"[0-9a-f]{7,}(\+modified:[a-z0-9,]+)?", prov["commit"])


def test_provenance_counts_code_and_notebook_sources_but_never_saved_outputs(tmp_path, monkeypatch):
    import json
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    def notebook(source, outputs=()):
        cell = {"cell_type": "code", "source": source, "metadata": {}, "outputs": list(outputs),
                "execution_count": 1 if outputs else None}
        (tmp_path / "notebooks" / "01_a.ipynb").write_text(json.dumps(
            {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))

    (tmp_path / "s2r2lib").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "s2r2lib" / "a.py").write_text("x = 1\n")
    notebook("print(1)")
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(results, "code_dir", lambda: tmp_path)  # as if the library were imported from it
    assert re.fullmatch(r"[0-9a-f]{7,}", results.git_commit())
    notebook("print(1)", outputs=[{"output_type": "stream", "name": "stdout", "text": "1\n"}])
    (tmp_path / "README.md").write_text("other files never count")
    assert "+" not in results.git_commit()  # a notebook run and saved: its outputs are no change of code
    notebook("print(2)")
    assert results.git_commit().endswith("+modified:notebooks")
    (tmp_path / "s2r2lib" / "b.py").write_text("y = 2\n")
    assert results.git_commit().endswith("+modified:s2r2lib,notebooks")


def _measured_runs(count: int) -> "pd.DataFrame":
    """``count`` measured runs that differ in six of measured_table's index columns, two metrics each, and a
    random-init floor whose lr and steps are empty."""
    rows = [{"table": "study", "dataset": f"set-{i}", "method": f"m-{i}", "arch": "narrow_cnn", "images": i + 1,
             "views": 8, "epochs": 0, "seed": i, "lr": 10.0 ** -(i + 1), "steps": 10 * (i + 1), "metric": metric,
             "value": 0.01 * i + (0.5 if metric == "knn_top1" else 0.0), "source": "measured", "commit": f"c{i}"}
            for i in range(count) for metric in ("linear_top1", "knn_top1")]
    rows.append({"table": "study", "dataset": "set-0", "method": "random-init", "arch": "narrow_cnn", "images": "",
                 "views": "", "epochs": 0, "seed": 0, "lr": "", "steps": "", "metric": "linear_top1", "value": 0.2,
                 "source": "measured", "commit": "c0"})
    return results.typed(rows, results.TABLES["runs"][0])


def test_measured_table_has_one_line_per_run_with_its_metrics_and_commit():
    wide = results.measured_table(_measured_runs(3))
    assert len(wide) == 4 and list(wide.columns) == ["linear_top1", "knn_top1", "commit"]
    floor = wide.xs("random-init", level="method")
    assert floor["linear_top1"].tolist() == [pytest.approx(20.0)] and floor["knn_top1"].isna().all()
    run = wide.xs("m-2", level="method")
    assert run[["linear_top1", "knn_top1"]].values.tolist() == [[pytest.approx(2.0), pytest.approx(52.0)]]
    assert run["commit"].tolist() == ["c2"]


def test_measured_table_memory_grows_with_the_runs_not_their_combinations():
    """Notebook 04's kernel was killed for memory at 761 rows: pivot_table(dropna=False) built every
    combination of the index columns. 12 runs differing in 6 columns are 12**6 = 3 million combinations."""
    import tracemalloc

    runs = _measured_runs(12)
    tracemalloc.start()
    try:
        wide = results.measured_table(runs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(wide) == 13
    assert peak < 20 * 2**20, f"measured_table peaked at {peak / 2**20:.0f} MiB for 25 rows"


# --- What make mutation found untested in results.py (each test kills a surviving mutant) ---------------------

def test_a_bad_cell_is_named_by_its_row_or_by_its_line_in_the_file():
    dtypes = {"name": results.S, "n": results.I, "flag": results.B}
    good = {"name": "a", "n": 1, "flag": True}
    for bad, column in (({"n": 1.5}, "n"), ({"flag": "maybe"}, "flag"), ({"name": "=cmd"}, "name")):
        rows = [good, good, {**good, **bad}]
        with pytest.raises(ValueError, match=rf"^t, row 2: column '{column}'"):
            results.typed(rows, dtypes, table="t")
        with pytest.raises(ValueError, match=rf"^t, line 4: column '{column}'"):
            results.typed(rows, dtypes, table="t", first_line=2)
        with pytest.raises(ValueError, match=rf"^table, row 2: column '{column}'"):  # rows with no name given
            results.typed(rows, dtypes)


def test_a_refused_formula_is_quoted_to_its_first_80_characters():
    value = "=" + "x" * 200
    with pytest.raises(ValueError) as error:
        results.typed([{"name": value}], {"name": results.S})
    assert repr(value[:80]) in str(error.value) and repr(value[:81]) not in str(error.value)


def test_write_runs_names_runs_csv_in_its_errors():
    with pytest.raises(ValueError, match=r"^runs\.csv has no column"):
        results.write_runs([{"no_such_column": 1}])


def test_a_paper_table_other_than_1_or_2_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"table must be one of \['table1', 'table2'\], got 'table3'"):
        results.paper_table(results.paper_rows(), "table3")


def test_a_measured_cell_of_a_paper_table_is_the_mean_over_its_seeds():
    cell = {**MEASURED, "table": "table2", "arch": "resnet50", "dataset": "STL10 (unlabeled + train)",
            "method": "S2R2", "images": 32, "views": 20, "epochs": 50}
    runs = pd.concat([results.paper_rows(), results.typed([{**cell, "seed": 0, "value": 0.60},
                                                           {**cell, "seed": 1, "value": 0.64}], results.RUN_DTYPES)],
                     ignore_index=True)
    table = results.paper_table(runs, "table2")
    assert table.loc[("STL10 (unlabeled + train)", "S2R2", 32, 20), (50, "measured")] == pytest.approx(62.0)


def test_paper_tables_name_their_epoch_budgets_as_integers():
    table = results.paper_table(results.paper_rows(), "table1")
    epochs = table.columns.get_level_values(0)
    assert all(type(e) is int for e in epochs)  # 10, not 10.0, in the printed header
    assert (table.dtypes == "Float64").all()  # as runs.csv's value column: an unmeasured cell is pd.NA, not NaN
    assert table.xs("measured", axis=1, level="source").isna().all().all()


def test_styled_tables_show_one_decimal_by_default():
    html = results.styled(pd.DataFrame({"top-1": [61.234]})).to_html()
    assert "61.2" in html and "61.23" not in html


def test_styled_tables_group_thousands_with_commas():
    html = results.styled(pd.DataFrame({"views/s": [12345.67]})).to_html()
    assert ">12,345.7<" in html


def test_the_cpu_is_named_from_cpuinfo_or_else_by_platform(monkeypatch):
    import pathlib
    import platform

    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        model = next(line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                     if line.startswith("model name"))
        assert results.device_name("cpu").startswith(f"cpu:{model} (")
    assert results.device_name() == results.device_name("cpu")  # the CPU by default

    class NoCpuinfo(type(pathlib.Path())):
        def read_text(self, *args, **kwargs):
            raise OSError("no /proc here")

    monkeypatch.setattr(results, "Path", NoCpuinfo)
    monkeypatch.setattr(platform, "processor", lambda: "TestCPU 3000")
    assert results.device_name("cpu").startswith("cpu:TestCPU 3000 (")


def test_a_cpu_model_is_read_whole_after_the_first_colon(monkeypatch):
    import pathlib

    class Cpuinfo(type(pathlib.Path())):
        def read_text(self, *args, **kwargs):
            return "processor\t: 0\nmodel name\t: Vendor CPU rev: 2 @ 3.0GHz\n"

    monkeypatch.setattr(results, "Path", Cpuinfo)
    assert results.device_name("cpu").startswith("cpu:Vendor CPU rev: 2 @ 3.0GHz (")


def test_a_table_not_written_anywhere_reads_as_empty_with_its_columns(own_results):
    table = results.read_table("study_verdicts")
    assert table.empty and list(table.columns) == list(results.TABLES["study_verdicts"][0])


def test_a_parser_error_without_a_line_number_still_names_the_file(own_results, monkeypatch):
    results.write_runs([MEASURED])

    def fail(*args, **kwargs):
        raise pd.errors.ParserError("Error tokenizing data")

    monkeypatch.setattr(pd, "read_csv", fail)
    with pytest.raises(ValueError, match=r"runs\.csv:\?: a line with more fields than the header"):
        results.read_runs()


def test_pandas_missing_values_are_empty_cells_not_errors():
    table = results.typed([{"n": pd.NA, "x": None, "s": pd.NA}], {"n": results.I, "x": results.F, "s": results.S})
    assert table.isna().all(axis=None)


def test_a_record_is_read_back_as_saved(tmp_path, monkeypatch):
    monkeypatch.setenv("S2R2_RECORDS_DIR", str(tmp_path / "records"))
    path = results.record("01_test", exact_ap=0.7222, steps=[1, 2])
    assert path == tmp_path / "records" / "01_test.json"
    assert results.read_record("01_test") == {"exact_ap": 0.7222, "steps": [1, 2]}


def test_save_wide_flattens_column_levels_and_keeps_the_index(tmp_path, monkeypatch):
    monkeypatch.setenv("S2R2_RESULTS_DIR", str(tmp_path / "results"))
    columns = pd.MultiIndex.from_tuples([(10, "paper"), (10, "measured")], names=["epochs", "source"])
    frame = pd.DataFrame([[61.2, 60.1]], index=pd.Index(["stl10"], name="dataset"), columns=columns)
    path = results.save_wide(frame, "wide")
    assert path == tmp_path / "results" / "wide.csv"
    assert path.read_text() == "dataset,10 paper,10 measured\nstl10,61.2,60.1\n"


def test_a_declared_table_is_written_and_read_by_its_declaration_alone(own_results):
    row = {"claim": "1", "data": "embedded-object", "verdict": "supported", "effect": 0.2, "ci_low": 0.1,
           "ci_high": 0.3, "threshold": 0.05, "seeds": 5, "comparison": "S2R2 - SimCLR", "level": 0.05}
    path = results.write_table("study_verdicts", [row])
    results.write_table("study_verdicts", [dict(row, effect=0.25)])  # the same key: in place
    table = results.read_table(path.stem)
    assert list(table.columns) == list(results.TABLES["study_verdicts"][0])
    assert table[list(row)].to_dict("records") == [dict(row, effect=0.25)]  # (its provenance columns left empty)


def test_a_true_or_false_column_reads_as_written_in_any_case():
    table = results.typed([{"on": "true"}, {"on": "False"}, {"on": " TRUE "}, {"on": ""}, {"on": True}],
                          {"on": "boolean"})
    assert table["on"].tolist() == [True, False, True, pd.NA, True]


def test_styled_tables_carry_their_caption():
    frame = pd.DataFrame({"top-1": [47.25]})
    assert results.styled(frame, caption="Table 1 (measured)").caption == "Table 1 (measured)"
    assert results.styled(frame).caption is None


def test_a_cell_saved_as_lines_or_as_one_string_has_the_same_source():
    as_lines = '{"cells": [{"cell_type": "code", "source": ["a = 1\\n", "b = 2"], "outputs": []}]}'
    as_string = '{"cells": [{"cell_type": "code", "source": "a = 1\\nb = 2", "execution_count": 3}]}'
    assert results._notebook_sources(as_lines) == results._notebook_sources(as_string) == [("code", "a = 1\nb = 2")]


def test_a_bad_paper_cell_is_named_as_the_paper_rows(monkeypatch):
    table, *rest, cells = results._PAPER_TABLES[0]
    monkeypatch.setattr(results, "_PAPER_TABLES", [(table, *rest, "n/a " + cells.split(" ", 1)[1])])
    with pytest.raises(ValueError, match=r"^paper rows, row 0: column 'value' holds a finite number"):
        results.paper_rows()


# --- What a sample of 200 of results.py's mutants left alive (seed 30) ------------------------------------------

def test_an_unknown_output_kind_is_refused_naming_the_kinds():
    with pytest.raises(ValueError, match=r"^unknown output kind 'plots'; expected one of \['figures', 'records', "
                                         r"'results', 'runs'\]$"):
        results.output_dir("plots")


def test_a_bad_cell_read_from_a_file_is_named_by_the_files_path_and_line(own_results):
    results.write_runs([MEASURED])
    path = results.runs_path()
    lines = path.read_text().splitlines()
    lines[-1] = lines[-1].replace("narrow_cnn", "=cmd", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}, line {len(lines)}: column 'arch' starts with"):
        results.read_runs()


def test_a_commit_that_looks_like_a_number_reads_back_as_written(own_results):
    """Short hashes such as 3e81910 (3 x 10^81910 to a number parser) or 0123456 are text, also in a table where
    every row's commit looks like a number (runs.csv's paper rows, with no commit, would hide it)."""
    dtypes = {"run": "Int64", "commit": "string"}
    rows = [{"run": 1, "commit": "3e81910"}, {"run": 2, "commit": "0123456"}]
    path = results.write_table("commits", rows, key_columns=["run"], dtypes=dtypes)
    assert results.read_table(path.stem, dtypes=dtypes)["commit"].tolist() == ["3e81910", "0123456"]


def test_a_gpu_is_named_by_its_model(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: {1: "NVIDIA H200"}[torch.device(device).index])
    assert results.device_name("cuda:1") == results.device_name(torch.device("cuda", 1)) == "cuda:NVIDIA H200"


def test_the_checkout_is_the_folder_with_both_pyproject_and_s2r2lib(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "s2r2lib").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    (checkout / "examples" / "other").mkdir(parents=True)
    (checkout / "examples" / "other" / "pyproject.toml").write_text("")  # another project inside: not it
    (checkout / "vendored" / "s2r2lib").mkdir(parents=True)  # a package copy without a project file: not it
    for start in (checkout / "examples" / "other", checkout / "vendored", checkout):
        assert results.project_dir(start) == checkout, start


def test_the_date_is_utc_whatever_the_machines_time_zone(monkeypatch):
    import datetime
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no daylight saving
    time.tzset()
    try:
        stamp = datetime.datetime.strptime(results.provenance()["date"], "%Y-%m-%dT%H:%M:%SZ")
    finally:
        monkeypatch.undo()
        time.tzset()
    utc = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert abs((utc - stamp).total_seconds()) < 120


def test_provenance_names_this_cpu_by_default():
    assert results.provenance()["device"] == results.device_name("cpu")


def test_a_table_without_declared_types_is_refused_on_reading(tmp_path):
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"^table 'notes' has no declared column types; pass dtypes= or declare it "
                                         r"in s2r2lib.results.TABLES$"):
        results.read_table(tmp_path / "notes.csv")


def test_a_paper_row_with_a_cell_missing_is_refused(monkeypatch):
    *setting, cells = results._PAPER_TABLES[0]
    monkeypatch.setattr(results, "_PAPER_TABLES", [(*setting, cells.rsplit(" ", 1)[0])])
    with pytest.raises(ValueError, match="shorter"):
        results.paper_rows()
