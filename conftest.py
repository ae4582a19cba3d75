"""Keep test runs (unit tests, papermill and nbval kernels alike) away from the committed outputs:
figures, results, records and training runs go to a temporary folder, through the variables s2r2lib.results reads.
Kernels started by papermill or nbval inherit these variables."""

import os
import tempfile


def pytest_configure(config):
    scratch = tempfile.mkdtemp(prefix="s2r2-test-outputs-")
    for kind in ("FIGURES", "RESULTS", "RECORDS", "RUNS"):
        os.environ[f"S2R2_{kind}_DIR"] = os.path.join(scratch, kind.lower())
    os.environ.setdefault("MPLBACKEND", "Agg")
