"""SimCLR (cosine schedule) and SwAV (LARS, prototype freeze, queue) killed mid-run and resumed end bitwise
where an uninterrupted run ends: weights, prototypes, optimiser state and queue, and the same per-step log.
test_train.py does the same for S2R2 at a constant learning rate."""

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from s2r2lib.train import load_checkpoint, read_log
from test_train import _train_command, small_config

STEPS = 10


def tensors(state, prefix=""):
    """Every tensor in a checkpoint, by its path of keys; everything else (paths, wall times) left out."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return {path: t for key, value in items for path, t in tensors(value, f"{prefix}/{key}").items()}


def kill_and_resume(config, kill_after_rows: int) -> dict:
    """Run ``config`` with python -m s2r2lib.train, SIGKILL it once its log has ``kill_after_rows`` steps,
    then --resume it to the end; returns the resumed run's summary."""
    process = subprocess.Popen(_train_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = Path(config.output) / "log.csv"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) > kill_after_rows:
            break
        time.sleep(0.005)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert load_checkpoint(Path(config.output) / "checkpoint.pt")["step"] < STEPS
    resumed = subprocess.run(_train_command(config, "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return yaml.safe_load(resumed.stdout)


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
