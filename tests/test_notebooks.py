"""Notebooks run headlessly through papermill, and the numbers they record are the right ones."""

import json

import pytest
import torch

from s2r2lib import reproduce

pytestmark = pytest.mark.smoke


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    for kind in ("figures", "results", "records"):
        monkeypatch.setenv(f"S2R2_{kind.upper()}_DIR", str(tmp_path / kind))
    return tmp_path


def run_notebook(prefix, outputs, **parameters):
    """Execute a notebook with the quick profile's parameters (and ``parameters``); its recorded numbers."""
    (path,) = reproduce.notebook_paths(only=[prefix])
    import papermill

    parameters = {**reproduce.parameters_for(path, "quick"), **parameters}
    papermill.execute_notebook(str(path), str(outputs / path.name), parameters=parameters,
                               cwd=str(path.parent), kernel_name="python3", progress_bar=False)
    return json.loads((outputs / "records" / f"{path.stem}.json").read_text())


def test_notebook_01_teaches_the_right_numbers(outputs):
    numbers = run_notebook("01", outputs)
    # The toy list has positives at ranks 1, 3 and 6 (eq. 1 by hand).
    assert numbers["exact_ap"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3, abs=1e-6)
    assert 0 < numbers["exact_ap"] - numbers["smooth_ap"] < 0.01
    # Counting the query as its own positive adds a hit at rank 1: ranks 1, 2, 4, 7.
    assert numbers["official_ap"] == pytest.approx((1 / 1 + 2 / 2 + 3 / 4 + 4 / 7) / 4, abs=1e-6)
    assert numbers["batch_loss"] == pytest.approx(1 - numbers["batch_ap"], abs=0.05)
    # A perfectly ranked batch: S2R2's gradient vanishes, NT-Xent's does not.
    assert numbers["ranked_ap"] == 1.0
    assert numbers["ranked_grad_s2r2"] < 1e-6 * numbers["ranked_grad_ntxent"]
    figures = sorted(p.name for p in (outputs / "figures").iterdir())
    for stem in ("01_ranked_list", "01_relaxation", "01_descent_field", "01_ranked_batch_gradients"):
        assert f"{stem}.png" in figures and f"{stem}.pdf" in figures


def test_notebook_01_takes_its_parameters(outputs):
    numbers = run_notebook("01", outputs, tau=0.2)
    assert numbers["tau"] == 0.2
    assert numbers["exact_ap"] - numbers["smooth_ap"] > 0.05  # a blunter relaxation at a larger tau


def test_notebook_02_trains_and_the_batch_ap_rises(outputs):
    numbers = run_notebook("02", outputs, output=str(outputs / "run"))
    assert numbers["steps"] == reproduce.PROFILES["quick"]["02_training"]["max_steps"]
    assert numbers["loss_end"] < numbers["loss_start"]
    assert numbers["batch_ap_end"] > numbers["batch_ap_start"]
    state = torch.load(outputs / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == numbers["steps"]
    assert {"02_views.png", "02_training_curves.png"} <= {p.name for p in (outputs / "figures").iterdir()}
