"""Every measured number names the commit it came from: the checkout's real HEAD, with ``+modified:...``
naming s2r2lib/ or the notebooks' cells where they differ from it (outputs in results/ and figures/, and a
notebook's saved outputs, do not count), and "unknown" only outside git."""

import re
import subprocess
from pathlib import Path

import pytest

from s2r2lib import results


def git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git repository laid out like this project (pyproject.toml, s2r2lib/, results/), one commit, and
    the working directory in its notebooks/ folder, as a notebook runs."""
    repo = tmp_path / "checkout"
    for path, text in {"pyproject.toml": "[project]\nname = 'x'\n", "s2r2lib/__init__.py": "",
                       "s2r2lib/losses.py": "TAU = 0.01\n", "results/runs.csv": "a\n1\n",
                       "figures/f.svg": "<svg/>\n", "notebooks/01.ipynb": "{}\n"}.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    monkeypatch.chdir(repo / "notebooks")
    monkeypatch.setattr(results, "code_dir", lambda: repo)  # as if the library were imported from it
    return repo


def test_the_commit_is_the_checkouts_head(checkout):
    assert results.git_commit() == git(checkout, "rev-parse", "--short", "HEAD")
    assert results.git_commit(short=False) == git(checkout, "rev-parse", "HEAD")
    assert results.provenance("cpu")["commit"] == git(checkout, "rev-parse", "--short", "HEAD")
    (checkout / "s2r2lib" / "losses.py").write_text("TAU = 0.02\n")
    git(checkout, "commit", "-qam", "second")
    assert results.git_commit() == git(checkout, "rev-parse", "--short", "HEAD")  # follows HEAD, not a constant


def test_a_changed_tracked_file_names_the_part_of_the_code_that_changed(checkout):
    (checkout / "s2r2lib" / "losses.py").write_text("TAU = 0.02\n")
    assert results.git_commit() == git(checkout, "rev-parse", "--short", "HEAD") + "+modified:s2r2lib"
    assert results.provenance("cpu")["commit"].endswith("+modified:s2r2lib")


def test_a_notebooks_cells_count_and_its_saved_outputs_do_not(checkout):
    import json

    cell = {"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": [], "execution_count": None}
    notebook = checkout / "notebooks" / "01.ipynb"
    notebook.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    git(checkout, "commit", "-qam", "a notebook")
    executed = {**cell, "outputs": [{"output_type": "stream", "name": "stdout", "text": "1"}], "execution_count": 1}
    notebook.write_text(json.dumps({"cells": [executed], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert results.git_commit() == git(checkout, "rev-parse", "--short", "HEAD")
    notebook.write_text(json.dumps({"cells": [{**cell, "source": "x = 2"}], "metadata": {}, "nbformat": 4,
                                    "nbformat_minor": 5}))
    assert results.git_commit().endswith("+modified:notebooks")
    # a cell without its source (a hand edit gone wrong) reads as empty: the commit is still named, not a crash
    notebook.write_text(json.dumps({"cells": [cell, {"cell_type": "markdown", "metadata": {}}]}))
    assert results.git_commit().endswith("+modified:notebooks")


def test_a_new_notebook_whose_name_git_quotes_counts(checkout):
    """git status quotes a path with a space ("notebooks/my copy.ipynb"); the quotes are not part of the name."""
    (checkout / "notebooks" / "my copy.ipynb").write_text('{"cells": [{"cell_type": "code", "source": "x = 3"}]}\n')
    assert '"notebooks/my copy.ipynb"' in git(checkout, "status", "--porcelain", "--", "notebooks")
    assert results.git_commit().endswith("+modified:notebooks")


def test_a_changed_notebook_counts_whatever_else_changed_in_notebooks(checkout):
    notes = checkout / "notebooks" / "00_notes.txt"
    notes.write_text("a tracked file that git status lists before the notebook\n")
    git(checkout, "add", ".")
    git(checkout, "commit", "-qm", "notes")
    notes.write_text("changed\n")
    (checkout / "notebooks" / "01.ipynb").write_text('{"cells": [{"cell_type": "code", "source": "x = 3"}]}\n')
    assert results.git_commit().endswith("+modified:notebooks")


def test_outputs_and_files_outside_the_code_do_not_count(checkout):
    (checkout / "results" / "runs.csv").write_text("a\n2\n")
    (checkout / "figures" / "f.svg").write_text("<svg></svg>\n")
    (checkout / "notes.txt").write_text("a scratch file beside the code\n")
    assert results.git_commit() == git(checkout, "rev-parse", "--short", "HEAD")
    (checkout / "s2r2lib" / "scratch.py").write_text("x = 1\n")  # a new module is code
    assert results.git_commit().endswith("+modified:s2r2lib")


def test_outside_git_the_commit_is_unknown(tmp_path, monkeypatch):
    (tmp_path / "s2r2lib").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(results, "code_dir", lambda: tmp_path)  # a library installed outside any checkout
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repository above tmp_path either
    assert results.git_commit() == "unknown"


def test_the_commit_is_the_librarys_checkouts_not_the_working_directorys(checkout, monkeypatch):
    library = Path(results.__file__).resolve().parents[1]  # this library's own checkout
    monkeypatch.undo()  # the real code_dir, from inside another repository
    monkeypatch.chdir(checkout)
    assert results.git_commit().split("+")[0] == git(library, "rev-parse", "--short", "HEAD")
    assert results.git_commit().split("+")[0] != git(checkout, "rev-parse", "--short", "HEAD")


def test_a_notebook_outside_notebooks_does_not_count(checkout):
    """Only notebooks/ holds the code of the numbers: an edited course copy elsewhere leaves the commit clean."""
    import json

    copy = checkout / "course" / "01.ipynb"
    copy.parent.mkdir()
    cell = {"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": [], "execution_count": None}
    copy.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    git(checkout, "add", ".")
    git(checkout, "commit", "-qm", "a course copy")
    copy.write_text(json.dumps({"cells": [{**cell, "source": "x = 2"}], "metadata": {}, "nbformat": 4,
                                "nbformat_minor": 5}))
    assert results.git_commit() == git(checkout, "rev-parse", "--short", "HEAD")


def test_provenance_names_the_torch_version_and_the_date_utc_now_in_iso_8601(checkout):
    import datetime as dt

    import torch

    assert results.provenance("cpu")["torch"] == torch.__version__
    date = results.provenance("cpu")["date"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", date)
    measured = dt.datetime.strptime(date, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert abs((dt.datetime.now(dt.timezone.utc) - measured).total_seconds()) < 60


def test_a_deleted_notebook_or_a_cell_changed_in_type_counts(checkout):
    import json

    cell = {"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": [], "execution_count": None}
    notebook = checkout / "notebooks" / "01.ipynb"
    notebook.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    git(checkout, "commit", "-qam", "a notebook")
    notebook.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": "x = 1", "metadata": {}}],
                                    "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert results.git_commit().endswith("+modified:notebooks")
    notebook.unlink()
    assert results.git_commit().endswith("+modified:notebooks")


def test_s2r2_commit_names_the_commit_where_there_is_no_git(checkout, monkeypatch):
    monkeypatch.setenv("S2R2_COMMIT", "abc1234")
    assert results.git_commit() == "abc1234" and results.provenance("cpu")["commit"] == "abc1234"
