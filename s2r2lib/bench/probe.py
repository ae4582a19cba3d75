"""Benchmark: the whole probe at STL10's size, today's implementation beside the one it replaced, in one run.

    python -m s2r2lib.bench probe [--device cpu|cuda|all] [--threads 2] [--train 5000] [--test 8000]

The probe of :func:`s2r2lib.probe.evaluate` after feature extraction: the linear probe (C grid, refit),
kNN top-1 at k = 20 and 200, and retrieval mAP, on given features (STL10's size: 5,000 train and 8,000
test features of 512 dims, 10 classes). The features are Gaussian class clusters, weak enough that the
linear probe has to work (top-1 near 50 %), generated from a fixed seed.

Two implementations, each in a fresh subprocess at ``--threads`` CPU threads:

  s2r2lib  the library as it is: every metric on --device; retrieval mAP sorts many queries a chunk.
  before   the probe this replaced, on the CPU: L-BFGS held to one thread, and retrieval mAP by the
           rank sums of eq. 2, one query a chunk (its memory budget held one query's (K-1) x N terms at
           this size). That mAP is timed on --before-queries queries and scaled to all of them, since the
           time per query is the same for every query; the row says so.

Rows go to ``results/bench_probe.csv``, merged by (device, impl, threads): a CPU run keeps GPU rows.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from .. import probe
from . import (OUT_HELP, measured_devices, out_path, positive_int, provenance_at, run_worker, serve_worker,
               suite_parser, write_rows)

IMPLS = ("s2r2lib", "before")
GOAL_S = {"cpu": 60.0, "cuda": 10.0}  # the whole probe at STL10's size: on a 2-core CPU, on a GPU


def make_features(train: int, test: int, dim: int, classes: int, seed: int = 0):
    """Train and test features (N, dim) float32 with labels (N,): Gaussian clusters around random class
    centres, the centres at 0.08 of the noise's scale, classes equally often."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen)

    def split(n: int):
        labels = torch.arange(n) % classes
        return centres[labels] * 0.08 + torch.randn(n, dim, generator=gen), labels

    return (*split(train), *split(test))


def before_retrieval_seconds_per_query(features: torch.Tensor, labels: torch.Tensor,
                                       queries: int) -> tuple[float, float]:
    """The replaced retrieval mAP, one query at a time as its chunking ran at this size: the rank sums of
    eq. 2 with the strict indicator, over each query's K-1 positives. Returns (seconds per query, mean AP of
    the queries timed)."""
    r = F.normalize(features.float(), dim=1)
    same = labels[:, None] == labels[None, :]
    aps = []
    start = time.perf_counter()
    for q in range(queries):
        s = r[q] @ r.T                                               # (N,)
        pos_mask = same[q].clone()
        pos_mask[q] = False
        masks = torch.stack([pos_mask, ~same[q]], dim=1).float()      # (N, 2)
        s_pos = s[pos_mask]                                          # (K-1,)
        g = (s[None, :] - s_pos[:, None] > 0).float()                # (K-1, N)
        sums = g @ masks
        rank_pos, rank_neg = 1 + sums[:, 0], sums[:, 1]
        aps.append((rank_pos / (rank_pos + rank_neg)).mean())
    return (time.perf_counter() - start) / queries, float(torch.stack(aps).mean())


def _measure(impl: str, device: str, threads: int, train: int, test: int, dim: int, classes: int,
             before_queries: int) -> dict:
    """Run in a worker process: the seconds of each part of the probe, and its numbers."""
    torch.set_num_threads(threads)
    train_x, train_y, test_x, test_y = make_features(train, test, dim, classes)
    on = torch.device(device if impl == "s2r2lib" else "cpu")
    train_x, train_y, test_x, test_y = (t.to(on) for t in (train_x, train_y, test_x, test_y))
    cuda = on.type == "cuda"

    def timed(fn):
        if cuda:
            torch.cuda.synchronize(on)
        start = time.perf_counter()
        value = fn()
        if cuda:
            torch.cuda.synchronize(on)
        return value, time.perf_counter() - start

    if impl == "before":
        torch.set_num_threads(1)  # the replaced probe held L-BFGS to one thread
    linear, linear_s = timed(lambda: probe.linear_probe(train_x, train_y, test_x, test_y))
    torch.set_num_threads(threads)
    knn, knn_s = timed(lambda: (probe.knn_top1(train_x, train_y, test_x, test_y, k=20),
                                probe.knn_top1(train_x, train_y, test_x, test_y, k=200)))
    if impl == "before":
        per_query, mean_ap = before_retrieval_seconds_per_query(test_x, test_y, before_queries)
        map_s, map_note = per_query * len(test_x), f"mAP time scaled from {before_queries} queries"
    else:
        mean_ap, map_s = timed(lambda: probe.retrieval_map(test_x, test_y))
        map_note = "mAP over every query"
    return {"linear_s": linear_s, "knn_s": knn_s, "map_s": map_s, "total_s": linear_s + knn_s + map_s,
            "linear_top1": linear.top1, "knn20_top1": knn[0], "knn200_top1": knn[1], "retrieval_map": mean_ap,
            "note": map_note}


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser("probe", __doc__)
    parser.add_argument("--device", default="all", help="cpu, cuda, or all (cpu, and cuda when present)")
    parser.add_argument("--threads", type=positive_int, nargs="+", default=[2],
                        help="CPU threads, one row each (this project's machines have 2)")
    parser.add_argument("--train", type=positive_int, default=5000)
    parser.add_argument("--test", type=positive_int, default=8000)
    parser.add_argument("--dim", type=positive_int, default=512)
    parser.add_argument("--classes", type=positive_int, default=10)
    parser.add_argument("--before-queries", type=positive_int, default=200,
                        help="queries the replaced retrieval mAP is timed on (scaled to all)")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--timeout", type=int, default=600, help="seconds per measurement")
    parser.add_argument("--out", default=None, help=OUT_HELP.format(table="bench_probe"))
    args = parser.parse_args(argv)
    if serve_worker(args, _measure):
        return 0

    path = out_path(args.out, "bench_probe")
    rows = []
    for device in measured_devices(args.device):
        impls = [impl for impl in args.impls if impl == "s2r2lib" or device == "cpu"]  # the old probe had no device
        for threads in args.threads:
            prov = provenance_at(device, threads)
            for impl in impls:
                job = dict(impl=impl, device=device, threads=threads, train=args.train, test=args.test, dim=args.dim,
                           classes=args.classes, before_queries=args.before_queries)
                row = {"impl": impl, "train": args.train, "test": args.test, "dim": args.dim, "classes": args.classes,
                       "threads": threads, **run_worker("s2r2lib.bench.probe", job, args.timeout), **prov}
                rows.append(row)
    for row in rows:
        before = next((r for r in rows if r["impl"] == "before" and r["threads"] == row["threads"]
                       and r["status"] == "measured"), None)
        measured = row["status"] == "measured"
        row["speedup_vs_before"] = f"{before['total_s'] / row['total_s']:.1f}" if measured and before else ""
        goal = GOAL_S.get(row["device"].split(":")[0])
        ours = measured and goal and row["impl"] == "s2r2lib"
        row["meets_goal"] = ("yes" if row["total_s"] < goal else "no") if ours else ""
        for key in ("linear_s", "knn_s", "map_s", "total_s"):
            if key in row:
                row[key] = f"{row[key]:.3g}"
        for key in ("linear_top1", "knn20_top1", "knn200_top1", "retrieval_map"):
            if key in row:
                row[key] = f"{row[key]:.4f}"
        print(f"{row['device']:40s} {row['impl']:8s} " + (
            f"linear {row['linear_s']:>6s} s  kNN {row['knn_s']:>6s} s  mAP {row['map_s']:>6s} s  "
            f"total {row['total_s']:>6s} s  x{row['speedup_vs_before'] or '-'}  ({row['note']})"
            if measured else row["status"]), flush=True)
    columns = ["impl", "train", "test", "dim", "classes", "device", "threads", "linear_s", "knn_s", "map_s", "total_s",
               "speedup_vs_before", "meets_goal", "linear_top1", "knn20_top1", "knn200_top1", "retrieval_map", "note",
               "status", "commit", "torch", "date"]
    write_rows(path, "bench_probe", [{c: row.get(c, "") for c in columns} for row in rows])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
