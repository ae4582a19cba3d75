"""Benchmark: ``smooth_ap_loss`` beside the naive N x N x N form, in one run.

    python -m s2r2lib.bench loss [--sizes 160 320 640 1280] [--device cpu|cuda|all] [--threads 2]

Each measurement (forward + backward of one loss at B = N / K images, K views, D dims) runs in a fresh
subprocess, so its peak memory is its own: on the CPU the growth of peak resident memory above the
inputs (``ru_maxrss``), on CUDA ``torch.cuda.max_memory_allocated`` above the inputs. Time is the
median of a few repeats after one warm-up. pytorch-metric-learning's ``SmoothAPLoss`` is measured too
when it is installed (it comes with the ``test`` extra): the loss a user would otherwise pick. Note that
it computes another quantity (the query counts as its own positive and positives are grouped in
contiguous blocks of B, not K; see notebook 01), so only its cost is comparable.

Rows go to ``results/bench_loss.csv``, merged by (device, impl, N): a CPU run keeps GPU rows.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from ..losses import smooth_ap_loss
from . import (OUT_HELP, measured_devices, out_path, positive_int, provenance_at, run_worker, serve_worker,
               suite_parser, write_rows)

IMPLS = ("s2r2lib", "naive", "pml")


def naive_smooth_ap_loss(z: torch.Tensor, ids: torch.Tensor, tau: float = 0.01) -> torch.Tensor:
    """The same quantity as :func:`smooth_ap_loss`, written the direct way with N x N x N tensors
    (as the official Smooth-AP code does), for comparison only."""
    r = F.normalize(z.float(), dim=1)
    sim = r @ r.T
    n = len(sim)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = (ids[:, None] == ids[None, :]) & ~eye                        # (q, j)
    # g[q, i, j] = phi(s_qj - s_qi), with j == i and j == q left out.
    g = torch.sigmoid((sim[:, None, :] - sim[:, :, None]) / tau)
    g = g * (~eye)[None, :, :] * (~eye)[:, None, :]
    rank_all = 1 + g.sum(-1)
    rank_pos = 1 + (g * pos[:, None, :]).sum(-1)
    ap = ((rank_pos / rank_all) * pos).sum(1) / pos.sum(1)
    return 1 - ap.mean()


def _pml_loss(tau: float):
    from pytorch_metric_learning.losses import SmoothAPLoss

    loss = SmoothAPLoss(temperature=tau)
    return lambda z, ids: loss(z, ids)


def _estimated_gib(impl: str, n: int, k: int) -> float:
    """Scratch memory a form needs, from its largest tensors (float32), in GiB."""
    if impl == "s2r2lib":
        return 0.0
    live = 6 if impl == "naive" else 8  # N^3 tensors alive together in forward + autograd's saved ones
    return live * 4 * n**3 / 2**30


def _measure(impl: str, n: int, k: int, dim: int, device: str, threads: int, tau: float) -> dict:
    """Run in a worker process: time and peak memory of one forward + backward."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    ids = torch.arange(n // k).repeat_interleave(k).to(device)
    z = torch.randn(n, dim, generator=gen).to(device).requires_grad_()
    fn = {"s2r2lib": lambda z, ids: smooth_ap_loss(z, ids, tau),
          "naive": lambda z, ids: naive_smooth_ap_loss(z, ids, tau),
          "pml": _pml_loss(tau) if impl == "pml" else None}[impl]
    cuda = device.startswith("cuda")

    def step() -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = fn(z, ids)
        loss.backward()
        z.grad = None
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = [step()]
    peak = (torch.cuda.max_memory_allocated() - base if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
    while len(times) < 6 and sum(times) < 10:
        times.append(step())
    return {"fwd_bwd_s": statistics.median(times[1:] if len(times) > 1 else times),
            "peak_mib": peak / 2**20, "repeats": len(times) - 1 if len(times) > 1 else 1,
            "memory_measure": "cuda_max_allocated" if cuda else "peak_rss_growth"}


def _pml_available() -> bool:
    try:
        import pytorch_metric_learning  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = suite_parser("loss", __doc__)
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[160, 320, 640, 1280], help="N = B * K")
    parser.add_argument("--views", type=positive_int, default=20, help="K, views per image")
    parser.add_argument("--dim", type=positive_int, default=128)
    parser.add_argument("--tau", type=float, default=0.01)
    parser.add_argument("--device", default="all", help="cpu, cuda, or all (cpu, and cuda when present)")
    parser.add_argument("--threads", type=positive_int, default=2, help="CPU threads (this project's machines have 2)")
    parser.add_argument("--max-gib", type=float, default=12.0,
                        help="skip a form whose estimated scratch memory passes this (recorded as not measured)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per measurement")
    parser.add_argument("--out", default=None, help=OUT_HELP.format(table="bench_loss"))
    args = parser.parse_args(argv)
    if serve_worker(args, _measure):
        return 0
    uneven = [n for n in args.sizes if n % args.views]
    if uneven:
        raise SystemExit(f"--sizes: N = {uneven} not a multiple of K = {args.views} (--views); N = B * K")
    path = out_path(args.out, "bench_loss")
    impls = [impl for impl in IMPLS if impl != "pml" or _pml_available()]
    rows = []
    for device in measured_devices(args.device):
        prov = provenance_at(device, args.threads)
        for n in args.sizes:
            ours = None
            for impl in impls:
                row = {"impl": impl, "N": n, "B": n // args.views, "K": args.views, "D": args.dim,
                       "tau": args.tau, "threads": args.threads if device == "cpu" else ""}
                need = _estimated_gib(impl, n, args.views)
                if need > args.max_gib:
                    row["status"] = f"not measured: needs about {need:.0f} GiB (> --max-gib {args.max_gib:g})"
                else:
                    job = dict(impl=impl, n=n, k=args.views, dim=args.dim, device=device,
                               threads=args.threads, tau=args.tau)
                    row.update(run_worker("s2r2lib.bench.loss", job, args.timeout))
                if impl == "s2r2lib" and row["status"] == "measured":
                    ours = row["fwd_bwd_s"]
                measured = row["status"] == "measured" and ours
                row["time_vs_s2r2lib"] = f"{row['fwd_bwd_s'] / ours:.1f}" if measured else ""
                for key in ("fwd_bwd_s", "peak_mib"):
                    if key in row:
                        row[key] = f"{row[key]:.4g}"
                rows.append({**row, **prov})
                print(f"{device:4s} N={n:5d} {impl:8s} "
                      + (f"{row['fwd_bwd_s']:>8s} s {row['peak_mib']:>9s} MiB  x{row['time_vs_s2r2lib']}"
                         if row["status"] == "measured" else row["status"]), flush=True)
    columns = ["impl", "N", "B", "K", "D", "tau", "device", "threads", "fwd_bwd_s", "peak_mib",
               "memory_measure", "repeats", "time_vs_s2r2lib", "status", "commit", "torch", "date"]
    write_rows(path, "bench_loss", [{c: row.get(c, "") for c in columns} for row in rows])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
