"""SimCLR (cosine schedule) and SwAV (LARS, prototype freeze, queue) killed mid-run and resumed end bitwise
where an uninterrupted run ends: weights, prototypes, optimiser state and queue, and the same per-step log.
test_train.py does the same for S2R2 at a constant learning rate."""

import subprocess

import pytest
import torch

from s2r2lib.train import load_checkpoint, read_log
from test_train import _train_command, kill_and_resume, small_config

STEPS = 10


def tensors(state, prefix=""):
    """Every tensor in a checkpoint, by its path of keys; everything else (paths, wall times) left out."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return {path: t for key, value in items for path, t in tensors(value, f"{prefix}/{key}").items()}


@pytest.mark.slow
@pytest.mark.parametrize("method,changes", [
    ("simclr", {"views_per_image": 2}),  # Adam, lr 3e-4 with cosine decay over the run
    # LARS with cosine decay; 4 steps an epoch, so the prototypes are frozen for steps 0-3 and learn after;
    # a queue of 2 batches that joins Sinkhorn from step 2 on.
    ("swav", {"data_options": {"n": 32}, "queue_length": 16}),
])
def test_a_killed_run_resumes_bitwise_to_the_uninterrupted_one(tmp_path, method, changes):
    whole = small_config(tmp_path, "whole", method=method, max_steps=STEPS, **changes)
    subprocess.run(_train_command(whole), check=True, capture_output=True, timeout=600)
    killed = small_config(tmp_path, "killed", method=method, max_steps=STEPS, **changes)
    summary = kill_and_resume(killed, kill_after_rows=4)  # checkpoints every 3 steps: resumes from 3 or 6
    assert 0 < summary["resumed_from"] < STEPS

    a, b = (tensors(load_checkpoint(tmp_path / run / "checkpoint.pt")) for run in ("whole", "killed"))
    assert a.keys() == b.keys()
    differing = [path for path in a if not torch.equal(a[path], b[path])]
    assert not differing, f"the resumed run differs from the uninterrupted one in {differing[:5]}"
    if method == "swav":
        assert any(path.startswith("/queue") for path in a) and any(path.startswith("/prototypes") for path in a)
    log_whole, log_killed = read_log(tmp_path / "whole"), read_log(tmp_path / "killed")
    assert [row["step"] for row in log_killed] == list(range(STEPS))
    assert [(row["lr"], row["loss"]) for row in log_killed] == [(row["lr"], row["loss"]) for row in log_whole]
    assert len({row["lr"] for row in log_whole}) == STEPS  # the schedule decays: every step its own lr
