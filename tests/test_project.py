"""The project's set-up: two install routes that agree, the two commands, outputs written safely."""

import dataclasses
import os
import subprocess
import time
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


def test_every_published_profile_gives_each_notebook_the_defaults_profile_parameters_or_its_own():
    # a notebook left on its own (quick) defaults would publish test-sized rows over the committed ones
    for name, profile in reproduce.PROFILES.items():
        if name != "quick":
            assert set(reproduce.PROFILES["default"]) <= set(profile), name
    assert reproduce.PROFILES["fashion"]["06_miniature_study"] == {"plan": "fashion"}
    assert reproduce.PROFILES["paper"]["06_miniature_study"] == {"plan": "default"}


def test_saved_figures_are_byte_identical_on_a_rerun():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    first = [p.read_bytes() for p in plots.save_figure(fig, "rerun")]
    second = [p.read_bytes() for p in plots.save_figure(fig, "rerun")]
    assert first == second
    assert results.output_dir("figures") != ROOT / "figures"  # tests never write the committed figures
    assert [p.name for p in plots.save_figure(fig, "one", formats="png")] == ["one.png"]  # not p, n and g
    for name in ("..", ".", "", "a/b"):
        with pytest.raises(ValueError, match="plain file stem"):
            plots.save_figure(fig, name)


# --- The run cache: a run is reused while its config, data and training code are unchanged -------------

def tiny_config(**changes):
    from s2r2lib import train

    settings = {"max_steps": 2, "images_per_batch": 4, "views_per_image": 2, "data_options": {"n": 64}}
    return train.TrainConfig(**{**settings, **changes}).resolved()


def test_a_run_key_changes_with_the_config_and_the_training_code_only(tmp_path):
    import shutil

    key = reproduce.run_key(tiny_config())
    assert reproduce.run_key(tiny_config()) == key
    assert reproduce.run_key(tiny_config(progress=False, checkpoint_every=7, output="elsewhere")) == key
    assert reproduce.run_key(tiny_config(max_steps=3)) != key
    assert reproduce.run_key(tiny_config(lr=2e-3)) != key
    # another device is another measurement (replace: resolving would refuse a device this machine lacks)
    assert reproduce.run_key(dataclasses.replace(tiny_config(), device="cuda:0")) != key

    library = tmp_path / "s2r2lib"
    shutil.copytree(ROOT / "s2r2lib", library, ignore=shutil.ignore_patterns("__pycache__"))
    digest = reproduce.code_digest(library=library)
    (library / "plots.py").write_text((library / "plots.py").read_text() + "\n# a plot changed\n")
    (library / "bench" / "views.py").write_text((library / "bench" / "views.py").read_text() + "\n# a benchmark\n")
    assert reproduce.code_digest(library=library) == digest  # figures re-render without retraining
    (library / "losses.py").write_text((library / "losses.py").read_text() + "\n# the loss changed\n")
    assert reproduce.code_digest(library=library) != digest


def test_a_run_key_follows_the_data_files(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"1")
    config = tiny_config(data="folder", data_root=str(tmp_path / "images"), split=None, data_options={})
    key = reproduce.run_key(config)
    assert reproduce.run_key(config) == key
    (tmp_path / "images" / "b.png").write_bytes(b"2")
    assert reproduce.run_key(config) != key


def test_cached_run_gives_each_config_its_folder_and_fresh_empties_it_once(tmp_path, monkeypatch):
    monkeypatch.setenv("S2R2_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv(reproduce.FRESH_ENV, raising=False)
    first = reproduce.cached_run("nb", tiny_config())
    assert reproduce.cached_run("nb", tiny_config()).output == first.output
    other = reproduce.cached_run("nb", tiny_config(seed=1))
    assert other.output != first.output and reproduce.latest_run("nb") == Path(other.output)
    Path(first.output).mkdir(parents=True)
    (Path(first.output) / "checkpoint.pt").write_bytes(b"trained")
    reproduce.cached_run("nb", tiny_config())
    assert (Path(first.output) / "checkpoint.pt").exists()  # no flag, no deletion
    monkeypatch.setenv(reproduce.FRESH_ENV, "pipeline-1")
    reproduce.cached_run("nb", tiny_config())
    assert not (Path(first.output) / "checkpoint.pt").exists()  # --fresh: trained again
    (Path(first.output) / "checkpoint.pt").write_bytes(b"trained again")
    reproduce.cached_run("nb", tiny_config())  # the same pipeline asks again: keep what it trained
    assert (Path(first.output) / "checkpoint.pt").read_bytes() == b"trained again"
    with pytest.raises(FileNotFoundError, match="run that notebook first"):
        reproduce.latest_run("never-ran")


def test_a_finished_run_is_reused_not_trained_again(tmp_path, monkeypatch):
    from s2r2lib import train

    monkeypatch.setenv("S2R2_RUNS_DIR", str(tmp_path / "runs"))
    config = reproduce.cached_run("nb", tiny_config(progress=False))
    first = train.train(config, resume="auto")
    trained = Path(first["checkpoint"]).stat().st_mtime_ns
    again = train.train(reproduce.cached_run("nb", tiny_config(progress=False)), resume="auto")
    assert again["resumed_from"] == first["steps"] == 2 and again["checkpoint"] == first["checkpoint"]
    assert Path(again["checkpoint"]).stat().st_mtime_ns == trained


@pytest.mark.smoke
def test_reproducing_one_notebook_deletes_no_other_run(tmp_path, monkeypatch):
    for kind in ("figures", "results", "records", "runs"):
        monkeypatch.setenv(f"S2R2_{kind.upper()}_DIR", str(tmp_path / kind))
    kept = tmp_path / "runs" / "02_training" / "0123456789abcdef" / "checkpoint.pt"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"a GPU run of notebook 02")
    before = {name: os.environ.get(name) for name in (reproduce.FRESH_ENV, results.PUBLISH_ENV)}
    reproduce.run("quick", only=["01"], output=tmp_path / "executed", fresh=True)
    assert kept.read_bytes() == b"a GPU run of notebook 02"
    assert (tmp_path / "figures" / "01_relaxation.png").is_file()
    assert {name: os.environ.get(name) for name in before} == before  # the caller's environment is left alone


def test_the_test_sized_profile_writes_to_scratch_and_every_other_publishes(tmp_path, monkeypatch, capsys):
    """make reproduce PROFILE=quick (the README offers it) must not put test-sized rows over the committed ones,
    and then rewrite the README from them."""
    seen = []

    def record(path, target, parameters):  # what a notebook's kernel would be given
        seen.append((parameters["publish"], os.environ[results.PUBLISH_ENV]))

    monkeypatch.setattr(reproduce, "execute_notebook", record)
    monkeypatch.delenv(results.PUBLISH_ENV, raising=False)
    for profile in sorted(reproduce.PROFILES):
        reproduce.run(profile, only=["01"], output=tmp_path)
    assert seen == [(False, "0") if name == "quick" else (True, "1") for name in sorted(reproduce.PROFILES)]
    assert results.PUBLISH_ENV not in os.environ  # and the caller's environment is left as it was
    assert reproduce.main(["--profile", "quick", "--only", "01"]) == 0
    assert capsys.readouterr().out.endswith("its figures and rows are in build/scratch/, the committed ones "
                                            "unchanged\n")
    assert reproduce.main(["--only", "01"]) == 0
    assert capsys.readouterr().out.endswith("figures/ and results/ are up to date\n")


def test_fresh_trains_the_study_again_only_when_notebook_06_runs(tmp_path, monkeypatch, capsys):
    from s2r2lib import study

    monkeypatch.setenv("S2R2_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(reproduce, "execute_notebook", lambda *args: None)
    journal = study.default_root() / study.JOURNAL
    assert study.default_root() == tmp_path / "study"
    journal.parent.mkdir(parents=True)
    journal.write_text('{"job": "a finished job", "rows": []}\n')
    reproduce.run("quick", only=["01"], output=tmp_path / "executed", fresh=True)
    assert journal.is_file()  # notebook 06 did not run: its study stays
    reproduce.run("quick", only=["06"], output=tmp_path / "executed")
    assert journal.is_file()  # not fresh: read back, not trained again
    reproduce.run("quick", only=["06"], output=tmp_path / "executed", fresh=True)
    assert study.Journal(study.default_root()).read() == {}  # its finished job forgotten: trained again
    assert f"--fresh: emptying {tmp_path / 'study'} (a GPU study's journal and budget kept), so that notebook 06 " \
           f"trains" in capsys.readouterr().out


def test_a_kernel_wait_without_limit_looks_again_every_slice(monkeypatch):
    """A wait for a kernel message is cut into slices, so a reply that a missed wake-up left unread is found at
    the next slice instead of never (make reproduce hung at notebook 01's widget cell without this)."""
    import asyncio
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel

    asked = []

    async def reply_on_third_look(self, timeout=None):
        asked.append(timeout)
        if len(asked) < 3:
            raise Empty
        return {"msg_type": "execute_reply"}

    monkeypatch.setattr(AsyncZMQSocketChannel, "get_msg", reply_on_third_look)
    sliced = reproduce._sliced_channel_class()
    channel = sliced.__new__(sliced)  # no socket: get_msg's parent is patched
    assert asyncio.run(channel.get_msg(timeout=None)) == {"msg_type": "execute_reply"}
    assert asked == [reproduce.POLL_SLICE_S] * 3


def test_a_kernel_wait_with_a_limit_still_ends_at_the_limit(monkeypatch):
    import asyncio
    import time
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel

    asked = []

    async def never(self, timeout=None):
        asked.append(timeout)
        await asyncio.sleep(timeout)
        raise Empty

    monkeypatch.setattr(AsyncZMQSocketChannel, "get_msg", never)
    monkeypatch.setattr(reproduce, "POLL_SLICE_S", 0.02)
    sliced = reproduce._sliced_channel_class()
    channel = sliced.__new__(sliced)  # no socket: get_msg's parent is patched
    began = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(channel.get_msg(timeout=0.1))
    assert 0.1 <= time.monotonic() - began < 1.0
    assert len(asked) >= 4 and max(asked) <= 0.02


def test_the_notebook_kernel_client_uses_the_sliced_channels():
    """nbclient sets the manager's client_class to jupyter_client's own after creating it; the client must still
    be the one whose shell and iopub waits are sliced."""
    manager = reproduce.kernel_manager_class()(kernel_name="python3")
    manager.client_class = "jupyter_client.asynchronous.AsyncKernelClient"  # as nbclient does
    client = manager.client()
    assert client.shell_channel_class.__name__ == client.iopub_channel_class.__name__ == "SlicedChannel"


def test_the_notebook_kernel_talks_over_encrypted_sockets(tmp_path, capfd):
    """ipykernel 7 warns on every notebook of make reproduce that its TCP sockets are plain text (any local user
    may subscribe to a kernel's output); the pipeline's kernels get CurveZMQ keys where libzmq supports them."""
    import nbformat
    import zmq

    if not zmq.has("curve"):
        pytest.skip("this libzmq has no CurveZMQ")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("answer = 6 * 7\nprint(answer)")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "tiny.ipynb")
    reproduce.execute_notebook(tmp_path / "tiny.ipynb", tmp_path / "ran.ipynb")
    assert nbformat.read(tmp_path / "ran.ipynb", as_version=4).cells[0].outputs[0]["text"] == "42\n"
    assert "without encryption" not in capfd.readouterr().err
    assert reproduce.kernel_manager_class()(kernel_name="python3").transport_encryption == "auto"


@pytest.fixture
def mutation_run():
    """mutation/run.py as a module (it is a script, not part of the package)."""
    import importlib.util

    path = Path(reproduce.__file__).parents[1] / "mutation" / "run.py"
    spec = importlib.util.spec_from_file_location("mutation_run", path)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    return run


def test_a_sampled_mutation_score_carries_its_wilson_interval(mutation_run):
    """make mutation on a sample of a module's mutants reports the score's 95 % Wilson interval (worked by hand:
    45 of 50 caught, centre 0.9384 / 1.0768, half-width 1.96 * 0.046735 / 1.0768)."""
    run = mutation_run
    low, high = run.wilson_interval(45, 50)
    assert (low, high) == (pytest.approx(0.7864, abs=1e-4), pytest.approx(0.9565, abs=1e-4))
    assert run.wilson_interval(50, 50)[1] == 1.0 and run.wilson_interval(0, 10)[0] == 0.0
    with pytest.raises(ValueError, match="judged"):
        run.wilson_interval(0, 0)


def test_a_mutation_tally_leaves_out_listed_equivalents_and_refuses_other_unjudged_mutants(mutation_run):
    status = {"a": "killed", "b": "killed", "c": "survived", "d": "survived", "e": "timeout", "f": "no tests",
              "g": "segfault"}
    killed, timeout, survived, equivalent, no_tests = mutation_run.tally(status, {"d", "g", "z"})
    assert (killed, timeout, survived, equivalent, no_tests) == (2, 1, ["c"], {"d", "g"}, 1)
    assert mutation_run.tally({"a": "killed", "d": "killed"}, {"d"})[:4] == (2, 0, [], set())  # a listed one killed
    with pytest.raises(RuntimeError, match=r"1 mutants were not judged, e\.g\. \['g'\] \(segfault\)"):
        mutation_run.tally(status, {"d"})


def test_every_name_on_a_line_of_the_equivalent_list_is_read_and_none_from_its_reason(mutation_run, tmp_path):
    listed = tmp_path / "equivalent.md"
    listed.write_text("# Equivalent mutants\n\nProse naming `not.a_mutant`.\n\n"
                      "- `m.x_f__mutmut_1`: `topk(k)` without `dim=1`\n"
                      "- `m.x_f__mutmut_2`, `m.x_g__mutmut_3` and `m.x_h__mutmut_4`: made on `cpu`\n")
    assert mutation_run.equivalent_mutants(listed) == {"m.x_f__mutmut_1", "m.x_f__mutmut_2", "m.x_g__mutmut_3",
                                                       "m.x_h__mutmut_4"}
    assert mutation_run.equivalent_mutants(tmp_path / "missing.md") == set()


def test_a_hung_mutation_run_is_stopped_with_its_children(mutation_run, tmp_path):
    """A test waiting at 0 % CPU escapes mutmut's CPU-time limit; past its wall-clock limit the run is stopped
    with every process it started (a child left behind would hold a core), and the error says what to do."""
    fake = tmp_path / "mutmut"  # `python -m mutmut` in the scratch folder finds this one first
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(
        "import pathlib, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "pathlib.Path('child.pid').write_text(str(child.pid))\n"
        "time.sleep(60)\n")
    began = time.monotonic()
    with pytest.raises(TimeoutError, match="py-spy dump --pid"):
        mutation_run.mutmut(tmp_path, "run", timeout_s=3)
    assert time.monotonic() - began < 30
    pid = int((tmp_path / "child.pid").read_text())
    for _ in range(100):  # the orphan is reaped by init shortly after the kill
        try:
            state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":  # killed, waiting to be reaped
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"mutmut's child {pid} still runs after the watchdog stopped the run")


def test_a_long_notebook_says_how_far_it_is_while_it_runs(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setattr(reproduce, "HEARTBEAT_S", 0.05)

    def execute(path, target, parameters):  # papermill saving the executed copy as cells finish
        cells = [{"cell_type": "markdown", "source": ""}] + [
            {"cell_type": "code", "source": "", "execution_count": n if n <= 2 else None} for n in (1, 2, 3)]
        target.write_text(json.dumps({"cells": cells}))
        time.sleep(0.3)

    monkeypatch.setattr(reproduce, "execute_notebook", execute)
    reproduce.run("quick", only=["01"], output=tmp_path)
    beats = [line for line in capsys.readouterr().out.splitlines() if "still running" in line]
    assert beats and beats[-1].startswith("[1/1] 01_loss_derivation: still running after 0 min, 2 of 3 code "
                                          f"cells done (outputs so far in {tmp_path / '01_loss_derivation.ipynb'})")
    assert reproduce.cells_done(tmp_path / "absent.ipynb") is None
    (tmp_path / "cut.ipynb").write_text('{"cells": [')  # caught mid-write
    assert reproduce.cells_done(tmp_path / "cut.ipynb") is None


def test_a_mutation_score_names_edited_tests_in_its_commit(mutation_run, tmp_path, monkeypatch):
    """A score measures the tests: uncommitted test edits must not pass for the clean commit."""
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("def test(): pass\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "start")
    monkeypatch.setattr(mutation_run, "ROOT", tmp_path)
    commit = {"commit": "abc1234"}
    monkeypatch.setattr(mutation_run, "provenance", lambda device: dict(commit))
    assert mutation_run.tested_provenance()["commit"] == "abc1234"
    (tmp_path / "tests" / "scratch.py").write_text("x = 1\n")  # untracked: the scratch copy leaves it out
    assert mutation_run.tested_provenance()["commit"] == "abc1234"
    (tmp_path / "tests" / "test_a.py").write_text("def test(): assert True\n")
    assert mutation_run.tested_provenance()["commit"] == "abc1234+modified:tests"
    commit["commit"] = "abc1234+modified:s2r2lib"
    assert mutation_run.tested_provenance()["commit"] == "abc1234+modified:s2r2lib,tests"


def test_a_dead_kernel_ends_the_pipeline_with_one_line_not_a_traceback(tmp_path, monkeypatch):
    from nbclient.exceptions import DeadKernelError

    def killed(*args, **kwargs):
        raise DeadKernelError("Kernel died")

    monkeypatch.setattr(reproduce, "execute_notebook", killed)
    with pytest.raises(SystemExit, match=r"01_loss_derivation.ipynb stopped: DeadKernelError: Kernel died"):
        reproduce.run("quick", only=["01"], output=tmp_path)


def test_a_relative_output_folder_is_the_checkouts_wherever_the_process_runs(monkeypatch):
    monkeypatch.setenv("S2R2_RESULTS_DIR", "build/scratch/relative")
    for where in (ROOT, ROOT / "notebooks"):  # a notebook's kernel runs in notebooks/
        monkeypatch.chdir(where)
        assert results._folder("results") == ROOT / "build" / "scratch" / "relative"


def test_a_mutation_sample_of_zero_is_refused_not_run_as_the_whole_census(mutation_run, capsys):
    for sample in ("0", "-3"):
        with pytest.raises(SystemExit):
            mutation_run.main(["--modules", "losses", "--sample", sample])
        assert "argument --sample" in capsys.readouterr().err
