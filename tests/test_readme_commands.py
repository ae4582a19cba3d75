"""The README's training commands for your own images, STL10 and COCO, run as a user runs them: read from
README.md, in a fresh process, from a folder outside the checkout, on small files in the real formats.

Each command runs as written, with its /data paths pointed at the small files, plus the fewest overrides
that make it take seconds on a CPU. The paper presets ask for a GPU (device=cuda) and a ResNet18 over
64 x 20 views; here they get device=cpu, arch=narrow_cnn, 4 x 4 views and max_steps=2. torchrun gets 2
processes instead of 4 (the same code path on a 2-core machine) and --standalone (a free port, so that it
never collides with another test's)."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_data import _write_stl10

from s2r2lib.train import load_checkpoint, read_log

pytestmark = pytest.mark.smoke

PROJECT = Path(__file__).resolve().parents[1]
PRESET_ON_A_CPU = ["device=cpu", "arch=narrow_cnn", "images_per_batch=4", "views_per_image=4", "max_steps=2"]


def _readme_command(*words: str) -> list[str]:
    """The one training command in the README's bash blocks that holds every one of ``words``, split
    into arguments (its trailing comment dropped)."""
    lines, inside = [], False
    for line in (PROJECT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            inside = line == "```bash"
        elif inside and "s2r2lib.train" in line and all(word in line for word in words):
            lines.append(line)
    assert len(lines) == 1, f"expected one README command with {words}, found {lines}"
    return shlex.split(lines[0], comments=True)


def _run(command: list[str], data: Path, cwd: Path, *overrides: str) -> dict:
    """Run a README command with its /data paths under ``data``; return the summary it prints."""
    launcher = {"python": [sys.executable], "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone"]}
    args = launcher[command[0]] + [arg.replace("data_root=/data", f"data_root={data}") for arg in command[1:]]
    if "--nproc-per-node" in args:
        args[args.index("--nproc-per-node") + 1] = "2"
    env = {key: value for key, value in os.environ.items() if not key.startswith("S2R2_")}
    env.update(PYTHONPATH=str(PROJECT), XDG_CACHE_HOME=str(cwd / "xdg"), OMP_NUM_THREADS="1", TMPDIR=str(cwd))
    done = subprocess.run(args + list(overrides), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{shlex.join(args)}\n{done.stderr[-3000:]}"
    return yaml.safe_load(done.stdout) | {"stderr": done.stderr}


def _photo(path: Path, seed: int, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_readme_own_images_command_trains_on_a_folder_of_photos(tmp_path):
    # 16 photos (TrainConfig's default images_per_batch) of mixed formats, sizes and sub-folders, and one
    # broken file: the command runs exactly as the README writes it.
    photos = tmp_path / "data" / "my_photos"
    for i in range(16):
        _photo(photos / ("holiday" if i % 2 else "garden") / f"IMG_{i:04d}.{'jpg' if i % 3 else 'png'}",
               seed=i, size=(64 + 8 * i, 48))
    (photos / "IMG_9999.jpg").write_bytes(b"\xff\xd8 cut off by a full memory card")
    summary = _run(_readme_command("data=folder"), tmp_path / "data", tmp_path)
    assert summary["steps"] == 1 and summary["epochs"] == 1.0  # one epoch of 16 images, 16 a step
    assert "1 of 17 files" in summary["stderr"] and "IMG_9999.jpg" in summary["stderr"]
    assert load_checkpoint(tmp_path / summary["checkpoint"])["num_images"] == 16
    assert len(list((tmp_path / "xdg" / "s2r2").glob("folder-my_photos-*.npy"))) == 1  # the user's cache
    assert not (tmp_path / "build").exists()  # not ./build/cache of wherever the command ran


def test_readme_stl10_commands_train_and_resume(tmp_path):
    _write_stl10(tmp_path / "data", train=4, test=2, unlabeled=4)
    command = _readme_command("paper-resnet18-stl10-s2r2")
    summary = _run(command, tmp_path / "data", tmp_path, *PRESET_ON_A_CPU)
    run = tmp_path / summary["checkpoint"].rsplit("/", 1)[0]
    assert summary["steps"] == 2 and len(read_log(run)) == 2
    assert load_checkpoint(run / "checkpoint.pt")["num_images"] == 8  # train + unlabeled, the paper's split
    # The README's resume line, on the run the line above left (finished: it resumes at its last step).
    resumed = _run(_readme_command("--resume"), tmp_path / "data", tmp_path)
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 2


def test_readme_coco_torchrun_command_trains_on_train2017(tmp_path):
    for i in range(8):
        _photo(tmp_path / "data" / "coco" / "train2017" / f"{i:012d}.jpg", seed=i, size=(120, 100))
    summary = _run(_readme_command("torchrun", "coco"), tmp_path / "data", tmp_path, *PRESET_ON_A_CPU)
    assert summary["steps"] == 2
    assert load_checkpoint(tmp_path / summary["checkpoint"])["num_images"] == 8
    assert len(list((tmp_path / "xdg" / "s2r2").glob("coco-train2017-96-*.npy"))) == 1
