"""The project's set-up: two install routes that agree, the two commands, outputs written safely."""

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


def test_saved_figures_are_byte_identical_on_a_rerun():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    first = [p.read_bytes() for p in plots.save_figure(fig, "rerun")]
    second = [p.read_bytes() for p in plots.save_figure(fig, "rerun")]
    assert first == second
    assert results.output_dir("figures") != ROOT / "figures"  # tests never write the committed figures
