"""Benchmark: notebook 06's training step as the engine ran it before the study chose its settings, beside
the settings it runs with, in one run.

    python -m s2r2lib.bench study [--methods S2R2 SwAV] [--steps 12] [--settings SETTING ...] [--out FILE]

Each setting trains the study's own run (``study.method_config`` of the full profile: S2R2 at 16 x 8 views
of 32 px, narrow CNN, Adam) for a few steps in a fresh process, and reads the median step time from the
run's log (the views, forward, loss, backward and optimiser step; not the checkpoint writes). Settings:

  today            one process, torch's default threads (2 on this machine), channels_last on: what
                   ``s2r2lib.train`` did for the study before
  1 thread         one process, one thread, channels_last on / off
  2 threads        one process, two threads, channels_last off
  compiled         ``torch.compile`` (inductor), one thread; its first step (the compile) reported apart
  2 x 1 thread     two processes of one thread each, training side by side: the study's setting (its
                   ``Workers``); the step time is the wall time of both runs over their steps together

``s_per_step`` is per step of one run, ``ratio`` today's over it (above 1: faster than today). Timings on a
shared machine move with the neighbours' load: ``load_avg`` (1-minute) is printed beside each; rerun where it
passes the core count. The rows are merged into results/bench_study.csv (or ``--out``) by device, method and
setting, with their provenance.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from ..results import provenance
from . import OUT_HELP, out_path, positive_int, run_worker, serve_worker, suite_parser, write_rows

SETTINGS = {  # name -> (processes, threads per process, channels_last, compile)
    "today": (1, None, True, False),
    "1 thread, channels_last": (1, 1, True, False),
    "1 thread, no channels_last": (1, 1, False, False),
    "2 threads, no channels_last": (1, 2, False, False),
    "compiled, 1 thread": (1, 1, True, True),
    "2 x 1 thread (the study's)": (2, 1, True, False),
}


def _measure(method: str, steps: int, threads: int | None, channels_last: bool, compile: bool) -> dict:
    """In a worker process: train the study's run of ``method`` for 3 + ``steps`` steps; median step time."""
    import dataclasses

    import torch

    from .. import study
    from ..train import read_log, train

    if threads is not None:
        torch.set_num_threads(threads)
    plan = study.PLANS["full"]
    with tempfile.TemporaryDirectory() as folder:
        config = dataclasses.replace(study.method_config(method, plan, 1e-3, 3 + steps, data_n=512),
                                     output=folder, keep_steps=[], checkpoint_every=10**6, log_every=1,
                                     channels_last=channels_last, compile=compile)
        start = time.perf_counter()
        train(config)
        wall = time.perf_counter() - start
        log = read_log(folder)
    return {"s_per_step": statistics.median(row["wall_s"] for row in log[3:]), "first_step_s": log[0]["wall_s"],
            "run_s": wall, "threads": torch.get_num_threads()}


def measure(name: str, method: str, steps: int) -> dict:
    processes, threads, channels_last, compile = SETTINGS[name]
    job = dict(method=method, steps=steps, threads=threads, channels_last=channels_last, compile=compile)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with ThreadPoolExecutor(processes) as pool:
        runs = list(pool.map(lambda _: run_worker("s2r2lib.bench.study", job, timeout=900), range(processes)))
    wall = time.perf_counter() - start
    failed = [r["status"] for r in runs if r["status"] != "measured"]
    if failed:
        return {"setting": name, "method": method, "status": failed[0], "load_avg": load}
    per_step = statistics.mean(r["s_per_step"] for r in runs) / processes  # side by side: steps overlap
    return {"setting": name, "method": method, "processes": processes, "threads": runs[0]["threads"],
            "s_per_step": per_step, "first_step_s": max(r["first_step_s"] for r in runs), "wall_s": wall,
            "load_avg": load, "status": "measured"}


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser("study", __doc__)
    parser.add_argument("--methods", nargs="+", default=["S2R2"], choices=("S2R2", "SimCLR", "SwAV", "MV-NT-Xent"),
                        metavar="METHOD", help="study methods: S2R2, SimCLR, SwAV, MV-NT-Xent")
    parser.add_argument("--steps", type=positive_int, default=12, help="timed steps per run, after 3 warm-up steps")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS), metavar="SETTING")
    parser.add_argument("--out", default=None, help=OUT_HELP.format(table="bench_study"))
    args = parser.parse_args(argv)
    if serve_worker(args, _measure):
        return 0
    path = out_path(args.out, "bench_study")
    prov = provenance("cpu")  # the code the workers start from, not whatever the checkout holds at the end
    rows = []
    for method in args.methods:
        today = None
        for name in args.settings:
            row = measure(name, method, args.steps)
            if name == "today" and row["status"] == "measured":
                today = row["s_per_step"]
            row["ratio"] = today / row["s_per_step"] if today and row["status"] == "measured" else float("nan")
            rows.append(row)
            print(f"{method:10s} {name:28s} " + (f"{row['s_per_step']:.3f} s/step  x{row['ratio']:.2f} vs today  "
                                                  f"(first step {row['first_step_s']:.1f} s, load {row['load_avg']:.1f})"
                                                  if row["status"] == "measured" else row["status"]), flush=True)
    rounded = {"s_per_step": 4, "ratio": 3, "first_step_s": 2, "wall_s": 1, "load_avg": 2}
    write_rows(path, "bench_study", [{**{k: round(v, rounded[k]) if k in rounded and v == v else v
                                         for k, v in row.items()}, **prov} for row in rows])
    print(f"wrote {path}")
    return 0 if all(row["status"] == "measured" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
