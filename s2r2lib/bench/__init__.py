"""Benchmarks: ours beside the alternative, in one run, ratios printed and written to results/.

    python -m s2r2lib.bench loss     smooth_ap_loss against the naive N x N x N form (and PML's SmoothAPLoss)
    python -m s2r2lib.bench views    view backends against the encoder's appetite
    python -m s2r2lib.bench train    one training step per method against the encoder-only step
    python -m s2r2lib.bench all      every suite in turn

Each suite is a module here with ``main(argv) -> int``.
"""

SUITES = ("loss", "views", "train")
