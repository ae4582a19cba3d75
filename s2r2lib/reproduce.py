"""Run every notebook headlessly through papermill, in order; they rewrite figures/ and results/.

    python -m s2r2lib.reproduce [--profile quick|default|full|gpu|paper|fashion] [--data-root DIR] [--only 01 ...]

This is what ``make reproduce`` runs. Executed copies go to ``build/notebooks/`` (git-ignored), never
over the sources in ``notebooks/``. A profile is a set of papermill parameters per notebook: ``quick``
is what the tests run, ``default`` runs on the embedded data on a CPU, ``full`` adds notebook 06's whole
study (about an hour), ``gpu`` that study with ResNet18 on a GPU, ``paper`` trains and probes at the
paper's setting (STL10 under ``--data-root``, on a GPU), ``fashion`` on Fashion-MNIST (small real
data). A notebook receives only the parameters its ``parameters`` cell declares.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from .results import output_dir, project_dir

# notebook stem -> parameters, per profile. A notebook not named here runs on its own defaults.
PROFILES: dict[str, dict[str, dict]] = {
    "quick": {
        "02_training": {"images_per_batch": 8, "views_per_image": 4, "max_steps": 20, "data_options": {"n": 512}},
        "03_linear_probe": {"n_train": 500, "n_test": 300},
        "05_figure1": {"images_grid": [4, 8], "views_grid": [2, 4], "base_images": 8, "base_views": 4,
                       "max_steps": 10, "data_n": 256, "n_train": 300, "n_test": 200, "use_saved": False},
        "06_miniature_study": {"plan": "quick"},
    },
    "default": {
        "02_training": {"images_per_batch": 32, "views_per_image": 8, "max_steps": 300, "data_options": {"n": 10000}},
        "05_figure1": {"images_grid": [4, 8, 16, 32, 64], "views_grid": [2, 4, 8, 16], "base_images": 16,
                       "base_views": 8, "max_steps": 150, "data_n": 10000, "n_train": 5000, "n_test": 2000,
                       "use_saved": False},
        "06_miniature_study": {"plan": "default"},  # seed 0 rerun against the committed full rows
    },
    # Notebooks 02-03 at the paper's setting (Table 1, STL10, ResNet18, 64 x 20 views at 96 px, bf16) on a
    # GPU, with --data-root holding stl10_binary/; 05 stays on the embedded data.
    "paper": {
        "02_training": {"preset": "paper-resnet18-stl10-s2r2", "method": "s2r2", "data": "stl10",
                        "split": "train+unlabeled", "data_options": {}, "image_size": 96, "view_size": 96,
                        "arch": "resnet18", "small_input": False, "images_per_batch": 64, "views_per_image": 20,
                        "max_steps": 16400, "lr": None, "device": "cuda"},  # 16400 steps: 10 epochs of 105k images
        "03_linear_probe": {"data": "stl10", "image_size": 96, "view_size": 96, "n_train": None, "n_test": None,
                            "device": "cuda"},
    },
    # Small real data: Fashion-MNIST (the Debian package dataset-fashion-mnist, or --data-root).
    "fashion": {
        "02_training": {"data": "fashion_mnist", "split": "train", "data_options": {}, "image_size": 32,
                        "images_per_batch": 32, "views_per_image": 8, "max_steps": 300},
        "03_linear_probe": {"data": "fashion_mnist", "image_size": 32},
    },
}
# Notebook 06's whole study (s2r2lib.study.PLANS), the other notebooks as in default: "full" takes about an hour
# for 06 on an idle 2-core CPU and resumes where it stopped; "gpu" is the same study with ResNet18, on a GPU.
PROFILES["full"] = {**PROFILES["default"], "06_miniature_study": {"plan": "full"}}
PROFILES["gpu"] = {**PROFILES["default"], "06_miniature_study": {"plan": "gpu"}}


def notebook_paths(folder: Path | None = None, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in run order, optionally only those whose name
    starts with one of ``only``."""
    folder = folder or project_dir() / "notebooks"
    paths = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.stem.startswith(prefix) for prefix in only)]
    if not paths:
        raise FileNotFoundError(f"no notebooks matching {only or 'NN_*.ipynb'} in {folder}")
    return paths


def parameters_for(path: Path, profile: str, data_root: str | None = None) -> dict:
    """The papermill parameters ``path`` gets under ``profile``, limited to those it declares."""
    import papermill

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    declared = papermill.inspect_notebook(str(path))
    wanted = dict(PROFILES[profile].get(path.stem, {}))
    if data_root is not None:
        wanted["data_root"] = str(Path(data_root).resolve())
    return {name: value for name, value in wanted.items() if name in declared}


def run(profile: str = "default", data_root: str | None = None, only: list[str] | None = None,
        output: Path | None = None) -> list[Path]:
    """Execute the notebooks in order; return the executed copies. Stops at the first failure."""
    import papermill

    output = output or project_dir() / "build" / "notebooks"
    output.mkdir(parents=True, exist_ok=True)
    runs = output_dir("runs")
    if any(runs.iterdir()):  # the notebooks resume a run they find; the pipeline trains afresh
        print(f"removing the previous pipeline's training runs in {runs}")
        shutil.rmtree(runs)
    paths = notebook_paths(only=only)
    executed = []
    for number, path in enumerate(paths, start=1):
        params = parameters_for(path, profile, data_root)
        print(f"[{number}/{len(paths)}] {path.stem} (profile {profile}) ...", flush=True)
        start = time.perf_counter()
        target = output / path.name
        try:
            papermill.execute_notebook(str(path), str(target), parameters=params, cwd=str(path.parent),
                                       kernel_name="python3", progress_bar=False)
        except papermill.PapermillExecutionError as error:
            raise SystemExit(f"{path.name} failed in cell {error.exec_count}: {error.ename}: {error.evalue}\n"
                             f"the executed copy, with the traceback, is {target}") from None
        print(f"[{number}/{len(paths)}] {path.stem} done in {time.perf_counter() - start:.0f} s -> {target}",
              flush=True)
        executed.append(target)
    return executed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2r2lib.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES))
    parser.add_argument("--data-root", default=None, help="folder holding STL10/COCO/Fashion-MNIST files")
    parser.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 01 03")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    run(args.profile, args.data_root, args.only)
    print(f"all notebooks done in {time.perf_counter() - start:.0f} s; figures/ and results/ are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
