"""Run every notebook headlessly through papermill, in order, publishing to figures/ and results/; and the
run cache that makes a second run cheap.

    python -m s2r2lib.reproduce [--profile quick|default|full|extend|long|gpu|paper|fashion] [--data-root DIR] [--only 01 ...]
                                [--fresh]

This is what ``make reproduce`` runs (``make reproduce FRESH=1`` passes --fresh). Executed copies go to
``build/notebooks/`` (git-ignored), never over the sources in ``notebooks/``. A profile is a set of papermill
parameters per notebook: ``quick`` is what the tests run (test-sized, so it writes to ``build/scratch/``, never
over the committed figures/ and results/), ``default`` runs on the embedded data on a CPU,
``full`` adds notebook 06's whole study (about 150 minutes), ``gpu`` that study with ResNet18 on a GPU, ``paper``
trains and probes at the paper's setting (STL10 under ``--data-root``, on a GPU), ``fashion`` on
Fashion-MNIST (small real data). A notebook receives only the parameters its ``parameters`` cell declares.

The run cache (as jupyter-cache and DVC's run cache): a training run lives in ``<runs>/<name>/<key>``, where
the key hashes its config, a fingerprint of its data files and the library code that trains (not the plots,
tables or this pipeline). A notebook asks :func:`cached_run` for its folder, and ``train(..., resume="auto")``
reuses a finished run there; probe results are cached by ``s2r2lib.probe`` the same way. Nothing is deleted
except a run that ``--fresh`` is about to recreate.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from .fileio import atomic_write_bytes
from .results import PUBLISH_ENV, output_dir, project_dir

FRESH_ENV = "S2R2_FRESH"
# Library files whose code cannot change a training run's numbers: editing them re-renders figures and
# tables without retraining. Everything else in s2r2lib/ is part of a run's key.
NOT_TRAINING_CODE = ("plots.py", "results.py", "fileio.py", "reproduce.py", "study.py", "probe.py", "bench")

# notebook stem -> parameters, per profile. A notebook not named here runs on its own defaults.
PROFILES: dict[str, dict[str, dict]] = {
    "quick": {
        # 16 x 8 views for 60 steps: on the palette-coloured embedded data a smaller batch's loss is still flat
        "02_training": {"images_per_batch": 16, "views_per_image": 8, "max_steps": 60, "data_options": {"n": 512}},
        "03_linear_probe": {"n_train": 500, "n_test": 300},
        "05_figure1": {"images_grid": [4, 8], "views_grid": [2, 4], "base_images": 8, "base_views": 4,
                       "max_steps": 10, "data_n": 256, "n_train": 300, "n_test": 200, "retrain": True},
        "06_miniature_study": {"plan": "quick"},
    },
    "default": {
        "02_training": {"images_per_batch": 32, "views_per_image": 8, "max_steps": 300, "data_options": {"n": 10000}},
        "05_figure1": {"images_grid": [4, 8, 16, 32, 64], "views_grid": [2, 4, 8, 16], "base_images": 16,
                       "base_views": 8, "max_steps": 150, "data_n": 10000, "n_train": 5000, "n_test": 2000,
                       "retrain": True},
        "06_miniature_study": {"plan": "default"},  # seed 0 on the object set, against the committed rows
    },
}
# Profiles of test-sized runs: their figures and rows go to build/scratch/, never over the committed ones.
SCRATCH_PROFILES = frozenset({"quick"})
# Every other profile is the default one with some notebooks' parameters replaced (never a notebook left on its
# own quick defaults: they would publish test-sized rows over the committed ones).
PROFILES |= {
    # Notebooks 02-03 at the paper's setting (Table 1, STL10, ResNet18, 64 x 20 views at 96 px, bf16) on a
    # GPU, with --data-root holding stl10_binary/; 05 and 06 as in default.
    "paper": {
        **PROFILES["default"],
        "02_training": {"preset": "paper-resnet18-stl10-s2r2", "method": "s2r2", "data": "stl10",
                        "split": "train+unlabeled", "data_options": {}, "image_size": 96, "view_size": 96,
                        "arch": "resnet18", "small_input": False, "images_per_batch": 64, "views_per_image": 20,
                        "max_steps": 16400, "lr": None, "device": "cuda"},  # 16400 steps: 10 epochs of 105k images
        "03_linear_probe": {"data": "stl10", "image_size": 96, "view_size": 96, "n_train": None, "n_test": None,
                            "device": "cuda"},
    },
    # Small real data: Fashion-MNIST (the Debian package dataset-fashion-mnist, or --data-root); notebook 06
    # adds the study's main runs on Fashion-MNIST and its clutter (seeds 0-2, about 45 minutes here).
    "fashion": {
        **PROFILES["default"],
        "06_miniature_study": {"plan": "fashion"},
        "02_training": {"data": "fashion_mnist", "split": "train", "data_options": {}, "image_size": 32,
                        "images_per_batch": 32, "views_per_image": 8, "max_steps": 300},
        "03_linear_probe": {"data": "fashion_mnist", "image_size": 32},
    },
}
# Notebook 06's whole study (s2r2lib.study.PLANS), the other notebooks as in default: "full" takes about 150 minutes
# for 06 on an idle 2-core CPU and resumes where it stopped; "gpu" is the same study with ResNet18, on a GPU.
PROFILES["full"] = {**PROFILES["default"], "06_miniature_study": {"plan": "full"}}
PROFILES["gpu"] = {**PROFILES["default"], "06_miniature_study": {"plan": "gpu"}}
# The committed full study taken to 5 seeds (seeds 3 and 4 of every run, at the committed steps and lrs).
PROFILES["extend"] = {**PROFILES["default"], "06_miniature_study": {"plan": "extend"}}
# Is the budget long enough? The committed main runs (seeds 0-2) at 4x their steps (table study-long).
PROFILES["long"] = {**PROFILES["default"], "06_miniature_study": {"plan": "long"}}


def code_digest(exclude: tuple[str, ...] = NOT_TRAINING_CODE, library: Path | None = None) -> str:
    """A hash of the library's Python sources (names and bytes), leaving out the files and folders ``exclude``
    names (relative to s2r2lib/)."""
    library = library or Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(library.rglob("*.py")):
        relative = path.relative_to(library).as_posix()
        if relative.split("/")[0] in exclude:
            continue
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def data_fingerprint(config) -> str:
    """Names, sizes and modification times of the data files a config trains on (its data_root, or the
    default data folder); the embedded data is made by code, which :func:`code_digest` covers."""
    if config.data == "embedded":
        return "embedded"
    from . import data as datasets

    roots = [Path(config.data_root) if config.data_root else datasets.data_root()]
    if config.data.startswith("fashion_mnist") and not config.data_root:
        roots.append(datasets.FASHION_MNIST_DEBIAN_DIR)
    digest = hashlib.sha256()
    for root in roots:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        for path in files:
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def run_key(config) -> str:
    """The content key of a training run: its config (less the fields that only say where or how verbosely
    it runs), its data's fingerprint and the training code; 16 hex digits."""
    from .train import RUNTIME_FIELDS

    settings = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_FIELDS or k == "device"}
    blob = json.dumps([settings, data_fingerprint(config), code_digest()], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_run(name: str, config):
    """``config`` with its output set to ``<runs>/<name>/<run_key>``: a finished run with the same content is
    reused by ``train(config, resume="auto")``, an interrupted one resumed, a new one trained; a config that
    differs gets a folder of its own, so no run ever blocks another. Under ``--fresh`` (S2R2_FRESH) the
    folder is emptied once per pipeline run, to be trained again. Records the folder as ``name``'s latest."""
    folder = output_dir("runs") / name / run_key(config)
    token = os.environ.get(FRESH_ENV)
    marker = folder / ".fresh"
    if token and folder.exists() and not (marker.is_file() and marker.read_text() == token):
        print(f"--fresh: training {folder} again")
        shutil.rmtree(folder)
    if token:
        atomic_write_bytes(marker, token.encode())
    atomic_write_bytes(folder.parent / "latest", folder.name.encode())
    return dataclasses.replace(config, output=str(folder))


def latest_run(name: str) -> Path:
    """The folder :func:`cached_run` last gave ``name`` (e.g. notebook 02's run, for notebook 03)."""
    pointer = output_dir("runs") / name / "latest"
    if not pointer.is_file():
        raise FileNotFoundError(f"no run of {name!r} in {pointer.parent}: run that notebook first, or pass "
                                f"the checkpoint's path")
    return pointer.parent / pointer.read_text().strip()


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


def parameters_for(path: Path, profile: str, data_root: str | None = None, **extra) -> dict:
    """The papermill parameters ``path`` gets under ``profile`` (and ``extra``), limited to those it declares."""
    import papermill

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    declared = papermill.inspect_notebook(str(path))
    wanted = {**PROFILES[profile].get(path.stem, {}), **extra}
    if data_root is not None:
        wanted["data_root"] = str(Path(data_root).resolve())
    return {name: value for name, value in wanted.items() if name in declared}


def run(profile: str = "default", data_root: str | None = None, only: list[str] | None = None,
        output: Path | None = None, fresh: bool = False) -> list[Path]:
    """Execute the notebooks in order, publishing their figures and rows (to build/scratch/ for a profile of
    :data:`SCRATCH_PROFILES`); return the executed copies. Stops at the first failure. ``fresh`` trains and
    probes every run they ask for again."""
    output = output or project_dir() / "build" / "notebooks"
    output.mkdir(parents=True, exist_ok=True)
    saved = {name: os.environ.get(name) for name in (PUBLISH_ENV, FRESH_ENV)}
    publish = profile not in SCRATCH_PROFILES
    os.environ[PUBLISH_ENV] = "1" if publish else "0"  # the kernels inherit it, and get it as a parameter
    paths = notebook_paths(only=only)
    if fresh:
        os.environ[FRESH_ENV] = f"{time.time_ns()}"
        shutil.rmtree(project_dir() / "build" / "features", ignore_errors=True)  # probe caches, recreated as needed
        if any(path.stem.startswith("06") for path in paths):  # the study's runs, probes and journal
            from .study import clear_for_fresh, default_root

            if default_root().exists():
                print(f"--fresh: emptying {default_root()} (a GPU study's journal and budget kept), so that notebook "
                      f"06 trains and probes its study again")
                clear_for_fresh(default_root())
    try:
        return [_execute(path, number, len(paths), profile, data_root, output, publish)
                for number, path in enumerate(paths, start=1)]
    finally:  # leave the caller's environment as it was (the tests call this in-process)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# How long one wait for a kernel message may block before it looks again. A wait with no limit can hang for
# good: the client's sockets are watched through an edge-triggered file descriptor, and a wake-up that is missed
# (seen here in about 1 run in 4 of notebook 01, always after its widget cell, with ipykernel 6 and 7 alike)
# leaves a reply that has arrived unread. A wait that ends by its timeout polls the socket once more and finds it.
POLL_SLICE_S = 1.0


def _sliced_channel_class():
    """jupyter_client's asyncio channel whose waits are cut into :data:`POLL_SLICE_S` slices (same results)."""
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel

    class SlicedChannel(AsyncZMQSocketChannel):
        async def get_msg(self, timeout: float | None = None):
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = POLL_SLICE_S if deadline is None else min(POLL_SLICE_S, deadline - time.monotonic())
                try:
                    return await super().get_msg(timeout=max(left, 0.0))
                except Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise

    return SlicedChannel


def kernel_encryption() -> str:
    """jupyter_client's ``transport_encryption`` for our kernels: "auto" (CurveZMQ keys for the kernel's sockets)
    where libzmq has libsodium, else "disabled". Without keys ipykernel warns that its TCP sockets are plain text.
    papermill's kernels use it (:func:`kernel_manager_class`), and so does ``make lab``."""
    import zmq

    return "auto" if zmq.has("curve") else "disabled"


def kernel_manager_class():
    """The kernel manager papermill (through nbclient) uses here: its clients wait in slices (see POLL_SLICE_S)."""
    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import Type, default

    channel = _sliced_channel_class()

    class SlicedClient(AsyncKernelClient):
        shell_channel_class = Type(channel)
        iopub_channel_class = Type(channel)

    class SlicedKernelManager(AsyncKernelManager):
        @default("transport_encryption")
        def _encrypt_when_zmq_can(self):
            return kernel_encryption()

        def client(self, **kwargs):  # nbclient sets client_class after creating the manager: choose here instead
            self.client_factory = SlicedClient
            return super().client(**kwargs)

    return SlicedKernelManager


def execute_notebook(path: Path, target: Path, parameters: dict | None = None, cwd: Path | None = None):
    """papermill's ``execute_notebook`` with the python3 kernel, in ``path``'s folder unless ``cwd``, no progress
    bar, and this module's kernel manager (no wait without a limit). Raises papermill's errors as it does."""
    import papermill

    return papermill.execute_notebook(str(path), str(target), parameters=parameters or {},
                                      cwd=str(cwd or Path(path).parent), kernel_name="python3", progress_bar=False,
                                      kernel_manager_class=kernel_manager_class())


HEARTBEAT_S = 300.0  # a long notebook (06 under PROFILE=full: about 150 minutes) says every 5 minutes how far it is


def cells_done(notebook: Path) -> tuple[int, int] | None:
    """(code cells run, code cells) of the executed copy papermill is writing; None while it cannot be read."""
    try:
        cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sum(c.get("execution_count") is not None for c in cells), len(cells)


@contextlib.contextmanager
def _heartbeat(label: str, target: Path):
    """While a notebook runs, print every :data:`HEARTBEAT_S` how long it has run and how many of its code cells
    are done, read off the executed copy that papermill saves as each cell finishes."""
    start, stop = time.perf_counter(), threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            done = cells_done(target)
            cells = f", {done[0]} of {done[1]} code cells done" if done else ""
            print(f"{label}: still running after {(time.perf_counter() - start) / 60:.0f} min{cells} "
                  f"(outputs so far in {target})", flush=True)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _execute(path: Path, number: int, count: int, profile: str, data_root: str | None, output: Path,
             publish: bool) -> Path:
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    params = parameters_for(path, profile, data_root, publish=publish)
    print(f"[{number}/{count}] {path.stem} (profile {profile}) ...", flush=True)
    start = time.perf_counter()
    target = output / path.name
    try:
        with _heartbeat(f"[{number}/{count}] {path.stem}", target):
            execute_notebook(path, target, params)
    except papermill.PapermillExecutionError as error:
        raise SystemExit(f"{path.name} failed in cell {error.exec_count}: {error.ename}: {error.evalue}\n"
                         f"the executed copy, with the traceback, is {target}") from None
    except (DeadKernelError, CellTimeoutError) as error:  # a kernel killed (out of memory, say) or a cell stuck
        raise SystemExit(f"{path.name} stopped: {type(error).__name__}: {str(error).strip()[:300]}\nthe executed "
                         f"copy, as far as it got, is {target}; rerun: finished runs are reused") from None
    print(f"[{number}/{count}] {path.stem} done in {time.perf_counter() - start:.0f} s -> {target}", flush=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2r2lib.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES))
    parser.add_argument("--data-root", default=None, help="folder holding STL10/COCO/Fashion-MNIST files")
    parser.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 01 03")
    parser.add_argument("--fresh", action="store_true", help="train and probe every run again, cached or not")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    run(args.profile, args.data_root, args.only, fresh=args.fresh)
    where = ("figures/ and results/ are up to date" if args.profile not in SCRATCH_PROFILES else
             f"profile {args.profile} is test-sized: its figures and rows are in build/scratch/, the committed "
             f"ones unchanged")
    print(f"all notebooks done in {time.perf_counter() - start:.0f} s; {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
