"""The README's generated sections (s2r2lib.readme): written from the committed tables, never by hand."""

import pandas as pd
import pytest

from s2r2lib import readme, results, study
from test_study import _verdict_rows

MEASURED, LR_SEARCH, VERDICTS = readme.SECTIONS


def _run_rows(table, method, value, images=None, views=None, views_seen=None, seed=0, knn=None, **extra):
    """The rows of one probed encoder, as runs.csv holds them (linear and kNN top-1)."""
    common = {"table": table, "arch": "narrow_cnn", "dataset": "embedded", "method": method, "images": images,
              "views": views, "epochs": 0.5, "seed": seed, "views_seen": views_seen, "source": "measured",
              "commit": "abc1234", "device": "cpu:test", "train_s": None if method == "random-init" else 42.0,
              **extra}
    return [{**common, "metric": "linear_top1", "value": value},
            {**common, "metric": "knn20_top1", "value": value / 2 if knn is None else knn}]


def _runs(rows) -> pd.DataFrame:
    return results.typed(pd.DataFrame(rows), results.RUN_DTYPES)


def test_a_section_is_rewritten_between_its_markers_and_nowhere_else(tmp_path):
    table = _verdict_rows(("1", "inconclusive"))
    text = f"before\n{VERDICTS.begin}\nstale\n{VERDICTS.end}\nafter\n"
    new = readme.rewrite(text, VERDICTS, table)
    assert new == f"before\n{VERDICTS.block(table)}\nafter\n" and "stale" not in new
    assert study.verdict_sentence(table.iloc[0]) in new
    assert readme.rewrite(new, VERDICTS, table) == new  # the second time, nothing changes
    assert readme.rewrite(f"{VERDICTS.begin}x{VERDICTS.end}", VERDICTS, table) == VERDICTS.block(table)  # at the start
    for broken in ("no markers", f"{VERDICTS.end}\n{VERDICTS.begin}", VERDICTS.begin):
        with pytest.raises(ValueError, match="the README has no study verdicts section: put the lines"):
            readme.rewrite(broken, VERDICTS, table)


def test_update_writes_every_stale_section_and_check_writes_nothing(tmp_path):
    path = tmp_path / "README.md"
    stale = (f"intro\n{MEASURED.begin}\nSTALE\n{MEASURED.end}\nmiddle\n{LR_SEARCH.begin}\n{LR_SEARCH.end}\n"
             f"{VERDICTS.begin}\nSTALE\n{VERDICTS.end}\n")
    path.write_text(stale)
    tables = {"runs": _runs(_run_rows("probe", "S2R2", 0.6, 16, 8, 1280) + _run_rows("probe", "random-init", 0.3)),
              "study_verdicts": _verdict_rows(("1", "supported"))}
    assert readme.update(path, tables, check=True) == ["measured rows", "study verdicts"]  # no lr search: empty
    assert path.read_text() == stale
    assert readme.update(path, tables) == ["measured rows", "study verdicts"]
    text = path.read_text()
    assert text.startswith("intro\n") and "\nmiddle\n" in text and "STALE" not in text
    assert MEASURED.block(tables["runs"]) in text and VERDICTS.block(tables["study_verdicts"]) in text
    assert readme.update(path, tables) == [] and readme.update(path, tables, check=True) == []


def test_the_committed_readme_states_the_committed_rows():
    """Every generated section is the committed tables, word for word (make reproduce rewrites them)."""
    text = (results.project_dir() / "README.md").read_text()
    for section in readme.SECTIONS:
        assert section.block(results.committed_table(section.table)) in text, "run: python -m s2r2lib.readme"
    assert readme.main(["--check"]) == 0


def test_the_command_rewrites_a_stale_section_and_check_says_so(tmp_path, monkeypatch, capsys):
    (tmp_path / "results").mkdir()
    _verdict_rows(("1", "inconclusive")).to_csv(tmp_path / "results" / "study_verdicts.csv", index=False)
    pd.DataFrame(_run_rows("probe", "S2R2", 0.6, 16, 8, 1280)).to_csv(tmp_path / "results" / "runs.csv", index=False)
    (tmp_path / "README.md").write_text(f"{MEASURED.begin}\n{MEASURED.end}\n{LR_SEARCH.begin}\n{LR_SEARCH.end}\n"
                                        f"{VERDICTS.begin}\nstale\n{VERDICTS.end}\n")
    monkeypatch.setattr(results, "project_dir", lambda start=None: tmp_path)
    assert readme.main(["--check"]) == 1 and "stale" in (tmp_path / "README.md").read_text()
    assert capsys.readouterr().out.endswith("README.md: measured rows stale\n"
                                            f"{tmp_path / 'README.md'}: study lr search up to date\n"
                                            f"{tmp_path / 'README.md'}: study verdicts stale\n")
    assert readme.main([]) == 0 and "stale" not in (tmp_path / "README.md").read_text()
    assert capsys.readouterr().out.endswith("study verdicts rewritten\n")
    assert readme.main(["--check"]) == 0
    assert capsys.readouterr().out.endswith("study verdicts up to date\n")
    with pytest.raises(SystemExit):
        readme.main(["--help"])
    assert "exit 1 if a section is stale, writing nothing" in " ".join(capsys.readouterr().out.split())


def test_the_probe_sentence_reads_its_run_and_the_floor_of_the_same_seed():
    rows = (_run_rows("probe", "S2R2", 0.671, 32, 8, 300 * 32 * 8, knn=0.455)
            + _run_rows("probe", "random-init", 0.2655, knn=0.238)
            + _run_rows("probe", "random-init", 0.9, seed=1)  # another seed's floor is not this run's
            + _run_rows("figure1", "S2R2", 0.99, 32, 8, 100))  # nor are another table's rows
    [line] = readme.probe_lines(_runs(rows))
    assert ("after 300 steps of S2R2 with 32 images × 8 views on the embedded data (narrow_cnn, seed 0, 42 s of "
            "training), the linear probe reaches **67.1 %** top-1 on the test split against **26.6 %** for the same "
            "encoder at random init; kNN top-1 (k = 20) 45.5 % against 23.8 %.") in line
    assert "commit abc1234, cpu:test" in line
    [alone] = readme.probe_lines(_runs(_run_rows("probe", "SimCLR", 0.4, 128, 2, 128 * 2 * 7, seed=2)))
    assert "after 7 steps of SimCLR" in alone and "(no random-init row of this data, architecture and seed)" in alone
    [old] = readme.probe_lines(_runs(_run_rows("probe", "S2R2", 0.4, 32, 8)))  # rows from before views_seen
    assert "after 0.5 epochs of S2R2" in old


def test_the_figure1_sentence_lists_both_sweeps_in_order_with_the_best_point_and_the_seed_noise():
    points = {(4, 8): 0.35, (64, 8): 0.59, (16, 8): 0.48, (32, 8): 0.606, (16, 2): 0.371, (16, 16): 0.577}
    rows = [row for (b, k), value in points.items() for row in _run_rows("figure1", "S2R2", value, b, k, 150 * b * k)]
    rows += _run_rows("figure1", "random-init", 0.2655)
    study_rows = [{"table": "study", "method": "S2R2", "dataset": "embedded-object", "seed": seed, "steps": steps,
                   "metric": "linear_top1", "value": value, "source": "measured"}
                  for seed, final in enumerate((0.60, 0.64, 0.62)) for steps, value in ((100, 0.1), (400, final))]
    text = " ".join(readme.figure1_lines(_runs(rows + study_rows)))
    assert ("S2R2's linear top-1 after 150 steps a point, one seed each; at K = 8: 35.0 % (B = 4), 48.0 % (B = 16), "
            "60.6 % (B = 32), 59.0 % (B = 64); at B = 16: 37.1 % (K = 2), 48.0 % (K = 8), 57.7 % (K = 16); random "
            "init 26.6 %. The highest point is B = 32 along B and K = 16 along K.") in text
    assert "(the study's 3 seeds of S2R2 on the object set spread by a standard deviation of 2.0 points)" in text
    assert "within the noise. So" in " ".join(readme.figure1_lines(_runs(rows)))  # no study rows: no spread to quote
    assert readme.figure1_lines(_runs(_run_rows("probe", "S2R2", 0.5, 16, 8, 100))) == []


def test_measured_lines_are_wrapped_as_the_readme_without_splitting_an_equation():
    for shift in range(12):  # names of every length move the line breaks across each "B = 32"
        rows = _run_rows("probe", "S2R2", 0.671, 32, 8, 300 * 32 * 8) + _run_rows("probe", "random-init", 0.2655)
        rows += [row for b in (4, 8, 16, 32, 64, 128, 256) for k in ((2, 4, 8, 16, 32) if b == 16 else (8,))
                 for row in _run_rows("figure1", "S2R2", 0.5 + b / 1000 + k / 100, b, k, 150 * b * k)]
        runs = _runs([{**row, "dataset": "d" * (shift + 1)} for row in rows])
        lines = readme.measured_lines(runs)
        items = readme.probe_lines(runs) + readme.figure1_lines(runs)
        assert len(lines) > 6 and all(len(line) <= 115 for line in lines)
        starts = [at for at, line in enumerate(lines) if line.startswith("- **")]
        assert starts == [0, starts[1]] and all(line.startswith("  ") for at, line in enumerate(lines)
                                                 if at not in starts)
        assert not any(line.endswith(" =") or line.lstrip().startswith("= ") for line in lines), shift
        assert [" ".join(line.strip() for line in lines[a:b]) for a, b in ((0, starts[1]), (starts[1], None))] == items


def test_the_lr_search_lines_mark_each_winner_and_say_whether_it_lies_inside_the_lrs_scored():
    def search(method, scores, dataset="embedded-object"):
        return [{**_run_rows("study-lr", method, value, 16, 8, 1280, lr=lr, steps=400, train_s=60.0)[0],
                 "dataset": dataset} for lr, value in scores.items()]

    inside = search("S2R2", {3e-4: 0.40, 1e-3: 0.55, 3e-3: 0.50})
    edge = search("SimCLR", {3e-4: 0.30, 1e-3: 0.40, 3e-3: 0.45, 9e-3: 0.47, 2.7e-2: 0.49, 8.1e-2: 0.5, 0.243: 0.51})
    lines = study.lr_search_lines(_runs(inside + edge + _run_rows("probe", "S2R2", 0.6, 16, 8, 1280)))
    assert lines == [
        "- embedded-object, S2R2: 3e-4: 40.0 %, **1e-3: 55.0 %**, 3e-3: 50.0 %; the winner lies inside them.",
        "- embedded-object, SimCLR: 3e-4: 30.0 %, 1e-3: 40.0 %, 3e-3: 45.0 %, 9e-3: 47.0 %, 2.7e-2: 49.0 %, "
        "8.1e-2: 50.0 %, **2.43e-1: 51.0 %**; the winner lies at an edge of the lrs scored, so not shown to be "
        "its best.", "", "Winners at an edge: SimCLR on embedded-object."]
    assert study.lr_search_lines(_runs(inside))[-1] == "Every winner lies inside the learning rates scored."
    assert study.lr_search_lines(_runs(_run_rows("probe", "S2R2", 0.6, 16, 8, 1280))) == []
