"""The project's set-up: two install routes that agree, the two commands, outputs written safely."""

import os
import tomllib
from pathlib import Path

import pytest
import yaml

from s2r2lib import plots, reproduce, results

ROOT = Path(__file__).resolve().parents[1]


def test_pip_and_conda_routes_list_the_same_packages_and_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_route = set(project["dependencies"]) | set(project["optional-dependencies"]["test"]) \
        | set(project["optional-dependencies"]["lab"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    (pip_section,) = [item["pip"] for item in env["dependencies"] if isinstance(item, dict)]
    conda_route = {spec for spec in pip_section if not spec.startswith("-e")}
    assert conda_route == pip_route
    assert "torch==2.14.1" in pip_route and "torchvision==0.29.1" in pip_route


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make reproduce" in readme and "make test" in readme
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"


def test_notebooks_in_git_carry_no_outputs_and_have_a_parameters_cell():
    import nbformat

    for path in reproduce.notebook_paths():
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(not cell.outputs and cell.execution_count is None for cell in code), path.name
        assert any("parameters" in cell.metadata.get("tags", []) for cell in code), path.name
        assert "/work/" not in path.read_text() and "/home/" not in path.read_text(), path.name


def test_parameters_for_passes_only_what_a_notebook_declares(monkeypatch):
    (path,) = reproduce.notebook_paths(only=["01"])
    monkeypatch.setitem(reproduce.PROFILES, "quick", {path.stem: {"tau": 0.05, "not_declared": 1}})
    assert reproduce.parameters_for(path, "quick") == {"tau": 0.05}
    with pytest.raises(ValueError, match="unknown profile"):
        reproduce.parameters_for(path, "nope")


def test_upsert_replaces_rows_by_key_and_keeps_the_others(tmp_path):
    path = tmp_path / "t.csv"
    results.upsert_csv(path, [{"device": "cuda", "n": 1, "v": "gpu"}, {"device": "cpu", "n": 1, "v": "old"}],
                       key=("device", "n"))
    results.upsert_csv(path, [{"device": "cpu", "n": 1, "v": "new", "extra": "x"}], key=("device", "n"))
    rows = results.read_csv(path)
    assert [(r["device"], r["v"], r["extra"]) for r in rows] == [("cuda", "gpu", ""), ("cpu", "new", "x")]


def test_a_malformed_csv_line_is_named_in_the_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(ValueError, match=r"t\.csv:3"):
        results.read_csv(path)


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    results.atomic_write_bytes(path, b"old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        results.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_saved_figures_are_byte_identical_on_a_rerun():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    first = [p.read_bytes() for p in plots.save_figure(fig, "rerun")]
    second = [p.read_bytes() for p in plots.save_figure(fig, "rerun")]
    assert first == second
    assert results.output_dir("figures") != ROOT / "figures"  # tests never write the committed figures


def test_provenance_names_commit_device_and_date():
    prov = results.provenance("cpu")
    assert prov["device"].startswith("cpu:") and prov["date"].endswith("Z")
    assert prov["commit"] == "unknown" or len(prov["commit"].split("+")[0]) >= 7
