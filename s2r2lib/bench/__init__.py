"""Benchmarks: ours beside the alternative, in one run, ratios printed and written to results/.

    python -m s2r2lib.bench loss     smooth_ap_loss against the naive N x N x N form (and PML's SmoothAPLoss)
    python -m s2r2lib.bench views    view backends against the encoder's appetite
    python -m s2r2lib.bench train    one training step per method against the encoder-only step
    python -m s2r2lib.bench probe    the whole probe at STL10's size against the implementation it replaced
    python -m s2r2lib.bench study    notebook 06's step as the engine ran it before, beside the study's settings
    python -m s2r2lib.bench all      every suite in turn
    python -m s2r2lib.bench gpu      the device check: the paper's setting on one GPU (a CPU smoke without one)

Each suite is a module here with ``main(argv) -> int``.
"""

SUITES = ("loss", "views", "train", "probe", "study")


def suite_parser(suite: str, doc: str):
    """The command line every suite starts from: its ``prog``, the first paragraph of ``doc`` as its
    description, and the hidden ``--worker`` that :func:`run_worker` calls it back with."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m s2r2lib.bench {suite}", description=doc.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (sizes, views, threads, repeats)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def checked_device(device: str, allow_all: bool = False) -> str:
    """``--device`` as given, once it names a device this machine has (or ``all``, where allowed); else the
    command ends, naming the flag and what to use instead, before anything is measured."""
    import torch

    if allow_all and device == "all":
        return device
    choices = "cpu or cuda" + (", or all" if allow_all else "")
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise SystemExit(f"--device {device!r} is not a device; use {choices}") from None
    if parsed.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {device}: the benchmarks measure on cpu or cuda only; use {choices}")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available here, so nothing would be measured; use "
                         f"--device cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise SystemExit(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); use "
                         f"--device cuda")
    return device


def measured_devices(device: str) -> list[str]:
    """The devices ``--device`` asks for (:func:`checked_device`): ``all`` is the CPU, and CUDA where present."""
    import torch

    if checked_device(device, allow_all=True) != "all":
        return [device]
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def provenance_at(device: str, threads: int) -> dict:
    """:func:`s2r2lib.results.provenance` of ``device`` as a worker with ``threads`` torch threads sees it (its
    device name states them); the caller's thread count is left as it was (main() may run inside the tests)."""
    import torch

    from ..results import provenance

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return provenance(device)
    finally:
        torch.set_num_threads(before)


def out_path(out: str | None, table: str):
    """Where a suite writes: ``--out`` (a .csv path) or ``results/<table>.csv`` (``build/scratch/results/``
    unless S2R2_PUBLISH=1, as ``make bench`` sets). Checked before anything is measured."""
    from pathlib import Path

    from ..results import output_dir

    if out is None:
        return output_dir("results") / f"{table}.csv"
    path = Path(out)
    if path.suffix != ".csv" or path.is_dir():
        raise SystemExit(f"--out {out}: give a .csv file to write the rows to, e.g. --out {table}.csv")
    return path


def write_rows(path, table: str, rows):
    """``rows`` merged into ``path`` under the columns and key that :data:`s2r2lib.results.TABLES` declares
    for ``table``, whatever the file is called."""
    from ..results import TABLES, write_table

    dtypes, key = TABLES[table]
    return write_table(path, rows, key_columns=key, dtypes=dtypes)


OUT_HELP = ("CSV to merge the rows into (default: results/{table}.csv with S2R2_PUBLISH=1, as make bench runs it; "
            "else build/scratch/results/{table}.csv)")


def serve_worker(args, measure) -> bool:
    """In a :func:`run_worker` subprocess (``args.worker`` set): print ``measure(**job)`` as the JSON line the
    parent reads, and return True (the suite's ``main`` then returns 0); else False."""
    import json

    if not args.worker:
        return False
    print(json.dumps(measure(**json.loads(args.worker))))
    return True


def run_worker(module: str, job: dict, timeout: int, hint: str = "") -> dict:
    """Run one measurement as ``python -m <module> --worker <job as JSON>`` in a fresh process (so its peak
    memory is its own); the JSON dict it prints last, with ``status`` "measured", or a "not measured: ..."
    status saying why."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", module, "--worker", json.dumps(job)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"not measured: over the {timeout} s limit{hint}"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"not measured: failed ({last[:160]})"}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "status": "measured"}
