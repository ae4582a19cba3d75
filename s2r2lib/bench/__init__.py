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
