"""Keep test runs (unit tests, papermill and nbval kernels alike) away from the committed outputs:
figures, results, records and training runs go to a temporary folder, through the variables s2r2lib.results reads.
Kernels started by papermill or nbval inherit these variables. The folder (several hundred MB after a full run) is
removed when the run ends; set S2R2_KEEP_TEST_OUTPUTS=1 to keep it for a look."""

import os
import shutil
import tempfile

_SCRATCH: str | None = None
# Tests that reuse the work of the notebooks' nbval run when they follow it on its worker, in the session's runs
# folder (notebook 06's test runs the same quick study in the same build/study, so its journal answers the jobs
# nbval's run finished; the 02-04 sequence runs notebook 02 at its defaults, as nbval did, and reads the run
# back): they join the notebooks' unit, after its cells. Alone, or in another order, they do all the work
# themselves. Nothing else may write the session's runs of those notebooks (the browser test has its own folder).
AFTER_NOTEBOOKS = ("tests/test_study.py::test_notebook_06_runs_the_quick_study_and_writes_every_verdict",
                   "tests/test_notebooks.py::test_notebooks_02_to_04_train_probe_and_tabulate_in_sequence")


def pytest_configure(config):
    global _SCRATCH
    _SCRATCH = tempfile.mkdtemp(prefix="s2r2-test-outputs-")
    for kind in ("FIGURES", "RESULTS", "RECORDS", "RUNS"):
        os.environ[f"S2R2_{kind}_DIR"] = os.path.join(_SCRATCH, kind.lower())
    os.environ.setdefault("MPLBACKEND", "Agg")
    if os.environ.get("PYTEST_XDIST_WORKER"):  # make test: one worker per core, so one thread per worker
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"  # and in the kernels it starts
        import torch

        torch.set_num_threads(1)


def pytest_unconfigure(config):
    if _SCRATCH is None:
        return
    if os.environ.get("S2R2_KEEP_TEST_OUTPUTS"):
        print(f"\ntest outputs kept in {_SCRATCH}")
        return
    shutil.rmtree(_SCRATCH, ignore_errors=True)


def pytest_xdist_make_scheduler(config, log):
    """``pytest -n N tests notebooks``: every notebook's nbval cells go to one worker, in their order (a
    notebook's cells share a kernel, and notebook 03 reads the run notebook 02 made); every other test is
    scheduled on its own. (xdist's --dist loadgroup cannot do it here: it renames a test through a private
    attribute that this pytest no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class NotebooksOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "notebooks" if ".ipynb::" in nodeid or nodeid in AFTER_NOTEBOOKS else nodeid

    return NotebooksOnOneWorker(config, log)


def pytest_collection_modifyitems(config, items):
    """Start the long work first, so that two workers finish together: the notebooks (one unit, see above,
    with AFTER_NOTEBOOKS at its end), then the tests marked slow, then the rest, each in its collected order.
    Under mutmut (MUTANT_UNDER_TEST set) the other way round: it stops at a mutant's first failing test (-x),
    so the quick tests go first and a slow one runs only for a mutant they all miss."""
    if os.environ.get("MUTANT_UNDER_TEST"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is not None)
        return

    def rank(item) -> int:
        if item.path.suffix == ".ipynb":
            return 0
        if item.nodeid in AFTER_NOTEBOOKS:
            return 1
        return 2 if item.get_closest_marker("slow") else 3

    items.sort(key=rank)
