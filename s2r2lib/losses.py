"""Losses of S2R2 and its baselines, and the exact AP they are judged by.

Conventions shared by every function here (paper, Methodology):

* ``z`` is (N, D): one row per view, N = B * K for B images with K views each. Similarity is the
  cosine similarity of eq. 2, so ``z`` need not be normalised.
* ``ids`` is (N,) integers naming each view's source image: any values, any order; the views of one
  image need not be contiguous, but every image has the same number of views K >= 2 (``average_precision``
  also takes images with different numbers), and B >= 2. In a training loop, pass instead the
  :class:`BatchGroups` that :func:`ranking_groups` builds once: the losses then make no host sync.
* Every view is a query once. Its positives are the other K - 1 views of its image, its negatives the
  K (B - 1) views of the other images. The query is never in its own retrieval set.

The official Smooth-AP code (Brown et al., 2020) counts the query as its own positive (it sits at rank
1 with similarity 1); the paper's S2R2 does not, and neither do we: |P| = K - 1, |N| = K (B - 1).
``tests/test_losses.py`` shows the two conventions give different numbers.

Ties. Eq. 2 as printed counts only views strictly more similar than positive i, so a view tied with i
does not rank above it and a collapsed encoder (every similarity equal) would score AP = 1. The exact AP
here counts ties as ``sklearn.metrics.average_precision_score`` does, R(i, X) = #{j in X: s_qj >= s_qi}
(i included). That equals eq. 2 whenever there are no ties, and it scores collapsed features as chance,
the fraction of positives. The smoothed loss is unchanged: eq. 3's sigmoid gives a tie 1/2 either way.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["smooth_ap_loss", "average_precision", "nt_xent_loss", "swav_loss", "sinkhorn_knopp", "ranking_ap",
           "ranking_groups", "BatchGroups", "check_embeddings", "DEFAULT_MEMORY_BUDGET",
           "CUDA_MEMORY_BUDGET", "default_memory_budget"]

# Bytes of scratch memory the ranking may use at once; 3 float32 (chunk, K-1, N) tensors live at peak.
# On a CPU a chunk that stays in cache is fastest; on a GPU each chunk costs a dozen kernel launches, so
# the whole paper batch (N = 1,280: about 370 MB) goes in one chunk (measured: results/bench_loss.csv).
DEFAULT_MEMORY_BUDGET = 32 * 2**20
CUDA_MEMORY_BUDGET = 2**30


def default_memory_budget(device: torch.device) -> int:
    """The scratch bytes a ranking chunk may take on ``device`` when the caller names none."""
    return CUDA_MEMORY_BUDGET if device.type == "cuda" else DEFAULT_MEMORY_BUDGET


@dataclass(frozen=True)
class BatchGroups:
    """The retrieval structure of a batch, who is whose positive, built and validated once by :func:`ranking_groups`.

    Pass it in place of ``ids`` to :func:`smooth_ap_loss`, :func:`nt_xent_loss` or :func:`average_precision`:
    the structure of a training batch is fixed by the config, so checking it every step would only cost host
    syncs. Given a BatchGroups, the losses check shapes and devices only (no sync); the caller checks z for
    NaN, inf or all-zero rows itself with :func:`check_embeddings` (the training engine does, every
    ``log_every`` steps).
    """

    ids: torch.Tensor        # (N,) integers: the image of each view
    positives: torch.Tensor  # (N, K-1) long: the indices of each query's positives, in increasing order
    pos_mask: torch.Tensor   # (N, N) bool: j is a positive of query q (never q itself)
    neg_mask: torch.Tensor   # (N, N) bool: j is a negative of query q


def _check_ids(name: str, ids) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name}: ids must be a tensor of integers (or a BatchGroups from ranking_groups), "
                        f"got {type(ids).__name__}")
    if ids.dim() != 1:
        raise ValueError(f"{name}: ids must have shape (N,), one per view; got {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        raise ValueError(f"{name}: ids must be integers naming each view's image, got {ids.dtype}")
    return ids


def ranking_groups(ids: torch.Tensor, name: str = "ranking_groups") -> BatchGroups:
    """Validate a batch's ``ids`` and build its :class:`BatchGroups`: B >= 2 images, each with the same K >= 2 views.

    Costs a few host syncs; build it once per run when the batch structure is fixed, e.g.
    ``ranking_groups(torch.arange(B, device=device).repeat_interleave(K))``.
    """
    ids = _check_ids(name, ids)
    images, counts = torch.unique(ids, return_counts=True)
    if len(images) < 2:
        raise ValueError(f"{name} needs at least 2 images in a batch to have negatives; ids name {len(images)}")
    if counts.min() < 2:
        lone = images[counts.argmin()].item()
        raise ValueError(f"{name} needs at least 2 views per image; ids: image {lone} has 1")
    if (counts != counts[0]).any():
        raise ValueError(f"{name} needs the same number of views for every image; ids give counts from "
                         f"{counts.min().item()} to {counts.max().item()}")
    views_per_image = int(counts[0])
    # Group the view indices by image: row b holds the K views of the b-th image.
    groups = torch.argsort(ids, stable=True).view(len(images), views_per_image)
    # others[m] lists the members of a group other than member m.
    member = torch.arange(views_per_image, device=ids.device)
    others = member.expand(views_per_image, -1)[member[:, None] != member[None, :]]
    others = others.view(views_per_image, views_per_image - 1)
    positives = torch.empty(len(ids), views_per_image - 1, dtype=torch.long, device=ids.device)
    positives[groups.reshape(-1)] = groups[:, others].reshape(-1, views_per_image - 1)
    same = ids[:, None] == ids[None, :]
    eye = torch.eye(len(ids), dtype=torch.bool, device=ids.device)
    return BatchGroups(ids, positives, same & ~eye, ~same)


def _check_embeddings(name: str, z, views: int | None, device: torch.device | None, validate: bool) -> None:
    """z must be (N, D >= 1) floating point, one row per view, on the ids' device; with ``validate`` also
    finite and without an all-zero row (one host sync)."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name}: z must be a tensor (views, dim), got {type(z).__name__}")
    if z.dim() != 2:
        raise ValueError(f"{name}: z must be a 2-D tensor (views, dim), got shape {tuple(z.shape)}")
    if not z.dtype.is_floating_point:
        raise ValueError(f"{name}: z must be floating point, got {z.dtype}")
    if z.shape[1] == 0:
        raise ValueError(f"{name}: z has 0 columns; an embedding needs at least one dimension (check proj_dim)")
    if views is not None and z.shape[0] != views:
        raise ValueError(f"{name}: ids must have shape ({z.shape[0]},), one per row of z; got ({views},)")
    if device is not None and device != z.device:
        raise ValueError(f"{name}: z is on {z.device} but ids on {device}; move both to one device")
    if validate:
        scale = z.abs().amax(dim=1)
        bad = ~torch.isfinite(scale) | (scale == 0)
        if bad.any():
            row = int(bad.int().argmax())
            what = "is all zeros, so it has no direction" if scale[row] == 0 else "holds NaN or inf"
            raise ValueError(f"{name}: z row {row} {what}; check the encoder's output (learning rate, "
                             f"precision) before the loss")


def check_embeddings(z: torch.Tensor, name: str = "check_embeddings") -> None:
    """Raise a ValueError if the embeddings z (N, D) hold NaN or inf or an all-zero row (which has no direction).

    The value check a loss skips when it is given a :class:`BatchGroups`; it costs one host sync, so a
    training loop runs it now and then (every ``log_every`` steps), not every step. ``name`` starts the message.
    """
    _check_embeddings(name, z, None, None, validate=True)


def _check_tau(name: str, tau, allow_none: bool = False, argument: str = "tau") -> None:
    """A temperature must be a positive, finite Python number (eq. 3's tau); a tensor, bool or string is refused."""
    if tau is None and allow_none:
        return
    if isinstance(tau, torch.Tensor) or isinstance(tau, bool) or not isinstance(tau, numbers.Real):
        raise TypeError(f"{name}: {argument} must be a positive finite number"
                        f"{' or None (exact)' if allow_none else ''}, got {type(tau).__name__} {tau!r}; "
                        f"pass a Python float, e.g. {argument}=0.01")
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"{name}: {argument} must be a positive finite number ({argument} > 0, a temperature), "
                         f"got {tau}")


def _prepare(name: str, z, ids) -> tuple[BatchGroups | None, torch.Tensor]:
    """Check ``z`` against ``ids`` (validating both and z's values) or against a prebuilt BatchGroups (no sync)."""
    if isinstance(ids, BatchGroups):
        _check_embeddings(name, z, len(ids.ids), ids.ids.device, validate=False)
        return ids, ids.ids
    ids = _check_ids(name, ids)
    _check_embeddings(name, z, len(ids), ids.device, validate=True)
    return None, ids


def _cosine_similarity(z: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
    """s_uv of eq. 2 between views ``rows`` and all views, in float32 or float64 even under autocast: (Q, N).

    Each row is divided by its largest entry before it is normalised. Cosine similarity ignores scale, so
    this changes nothing in exact arithmetic; in floating point it keeps rows with norms near the ends
    of the float range (above 1e19 or below 1e-13 in float32, whose squares overflow or underflow)
    exact instead of turning them into 0 or a vector shorter than 1.
    """
    with torch.autocast(z.device.type, enabled=False):
        r = _unit_rows(z)
        return r[rows] @ r.T


def _unit_rows(z: torch.Tensor) -> torch.Tensor:
    """The rows of ``z`` scaled to length 1 (see :func:`_cosine_similarity`), in float32 or float64."""
    z = z if z.dtype == torch.float64 else z.float()
    with torch.autocast(z.device.type, enabled=False):
        scale = z.detach().abs().amax(dim=1, keepdim=True)
        return F.normalize(z / torch.where(scale > 0, scale, 1.0), dim=1)


def _chunk_size(n: int, per_query_bytes: int, budget: int) -> int:
    return max(1, min(n, budget // max(per_query_bytes, 1)))


def _rank_sums(sim: torch.Tensor, groups: BatchGroups, rows: slice, tau: float):
    """For queries ``rows``: the relaxed indicators g and the ranks of eq. 2 with eq. 3's sigmoid.

    g[q, p, j] = phi(s_qj - s_qi; tau) for the p-th positive i of query q. Returns g (Q, K-1, N), the rank
    among positives R(i, P) = 1 + sum_{j in P, j != i} g (Q, K-1), and the sum over the negatives
    sum_{j in N} g (Q, K-1). The query itself is in neither mask; j == i is removed below.
    """
    s = sim[rows]                                             # (Q, N)
    s_pos = torch.gather(s, 1, groups.positives[rows])        # (Q, K-1): s_qi
    g = (s[:, None, :] - s_pos[:, :, None]).div_(tau).sigmoid_()  # (Q, K-1, N): phi(s_qj - s_qi)
    masks = torch.stack([groups.pos_mask[rows], groups.neg_mask[rows]], dim=2).to(s.dtype)  # (Q, N, 2)
    sums = torch.bmm(g, masks)                                # (Q, K-1, 2)
    # j == i is among the positives but not in R(i, P): take its own term, phi(0) = 1/2, back out.
    return g, 0.5 + sums[..., 0], sums[..., 1]


class _SmoothAP(torch.autograd.Function):
    """Per-query smoothed AP (eqs. 1-3) from the similarity matrix, chunked over queries.

    Forward keeps only the (N, N) similarities; backward recomputes each chunk's (Q, K-1, N) terms, so
    peak memory is set by the chunk, not by N^2 (K-1), in both passes. Both passes run with autocast off,
    in the similarities' float32 (or float64): in bf16 the ranks, sums of up to N sigmoids, are not exact.
    """

    @staticmethod
    def forward(ctx, sim, groups, tau, chunk):
        n, positives = groups.positives.shape
        ap = sim.new_empty(n)
        with torch.autocast(sim.device.type, enabled=False):
            for start in range(0, n, chunk):
                rows = slice(start, start + chunk)
                _, rank_pos, rank_neg = _rank_sums(sim, groups, rows, tau)
                ap[rows] = (rank_pos / (rank_pos + rank_neg)).sum(1) / positives
        ctx.save_for_backward(sim)
        ctx.groups, ctx.tau, ctx.chunk = groups, tau, chunk
        return ap

    @staticmethod
    def backward(ctx, grad_ap):
        (sim,) = ctx.saved_tensors
        groups, tau, chunk = ctx.groups, ctx.tau, ctx.chunk
        n, positives = groups.positives.shape
        grad_sim = torch.zeros_like(sim)
        grad_ap = grad_ap.to(sim.dtype)
        with torch.autocast(sim.device.type, enabled=False):
            for start in range(0, n, chunk):
                rows = slice(start, start + chunk)
                g, rank_pos, rank_neg = _rank_sums(sim, groups, rows, tau)
                rank_all_sq = (rank_pos + rank_neg) ** 2
                # d AP_q / d g_qij: +rank_neg / R^2 for a positive j, -rank_pos / R^2 for a negative j,
                # each scaled by 1 / |P|; times d g / d s = g (1 - g) / tau, and the incoming gradient.
                scale = grad_ap[rows, None] / (positives * tau)                           # (Q, 1)
                coef = torch.stack([rank_neg, rank_pos], dim=2) / rank_all_sq[..., None]  # (Q, K-1, 2)
                coef *= scale[..., None]
                h = g.mul_(1 - g)                                                          # g (1 - g), in place
                pos = groups.pos_mask[rows].to(sim.dtype)
                neg = groups.neg_mask[rows].to(sim.dtype)
                # d s_qj: sum over the positives i of query q.
                by_j = torch.bmm(h.transpose(1, 2), coef)                                 # (Q, N, 2)
                grad_rows = pos * by_j[..., 0] - neg * by_j[..., 1]
                # d s_qi (the positive being ranked): minus the sum over j. The j == i term is added
                # above and subtracted here, so it cancels as it must (d = s_qi - s_qi is constant).
                masks = torch.stack([pos, neg], dim=2)
                by_i = torch.bmm(h, masks)                                                 # (Q, K-1, 2)
                grad_pos = coef[..., 0] * by_i[..., 0] - coef[..., 1] * by_i[..., 1]
                grad_rows.scatter_add_(1, groups.positives[rows], -grad_pos)
                grad_sim[rows] = grad_rows
        return grad_sim, None, None, None


def smooth_ap_loss(z: torch.Tensor, ids: torch.Tensor | BatchGroups, tau: float = 0.01,
                   memory_budget: int | None = None) -> torch.Tensor:
    """S2R2's objective: 1 - the mean smoothed AP over all N = B*K queries (eqs. 1-3).

    For query q with positives P (the other K - 1 views of its image) and retrieval set I = P + N
    (every other view), AP_q = 1/|P| sum_{i in P} R(i, P) / R(i, I) (eq. 1), with
    R(i, X) = 1 + sum_{j in X, j != i} phi(s_qj - s_qi; tau) (eq. 2 with eq. 3's sigmoid
    phi(d; tau) = 1 / (1 + exp(-d / tau))) and s the cosine similarity. The query is not its own
    positive (the official Smooth-AP code counts it; see the module docstring).

    Only positives are ranked, so the work is N x (K-1) x N, never N x N x N; it is done in chunks of
    queries that keep scratch memory under ``memory_budget`` bytes, and recomputed in backward. The
    ranking runs in float32 (float64 for float64 z) with autocast off, whatever the caller's autocast.

    Args:
        z: (N, D) embeddings, one row per view; need not be normalised, and any finite nonzero norm is
            ranked exactly (each row is scaled by its largest entry first); an all-zero row is refused.
        ids: (N,) integers naming each view's source image; or, in a training loop, the
            :class:`BatchGroups` of :func:`ranking_groups` built once, which skips the validation and
            its host syncs (z is then not checked for NaN, inf or all-zero rows).
        tau: sigmoid temperature of eq. 3 (a positive finite number); the paper's Smooth-AP default is 0.01.
        memory_budget: bytes of scratch memory per chunk of queries (None: :func:`default_memory_budget`).

    Returns:
        A scalar tensor in [0, 1]; 0 when every query ranks all its positives first (as tau -> 0).

    Example:
        >>> z = torch.randn(8 * 4, 16, requires_grad=True)
        >>> ids = torch.arange(8).repeat_interleave(4)
        >>> loss = smooth_ap_loss(z, ids)
        >>> loss.backward()
    """
    _check_tau("smooth_ap_loss", tau)
    groups, ids = _prepare("smooth_ap_loss", z, ids)
    groups = groups or ranking_groups(ids, "smooth_ap_loss")
    sim = _cosine_similarity(z)
    n, positives = groups.positives.shape
    budget = default_memory_budget(sim.device) if memory_budget is None else memory_budget
    chunk = _chunk_size(n, 3 * positives * n * sim.element_size(), budget)
    return 1.0 - _SmoothAP.apply(sim, groups, float(tau), chunk).mean()


def _exact_ap(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Exact AP of each ranked list, as ``sklearn.metrics.average_precision_score``: (..., M), (..., M) bool -> (...,).

    AP = 1/|P| sum_{i in P} R(i, P) / R(i, I) with R(i, X) = #{j in X: s_j >= s_i}, i itself included:
    an item tied with positive i counts as ranked at or above it. This is sklearn's step function over
    distinct score thresholds (all items tied at a score enter the list together), so a list of equal
    scores has AP = the fraction of positives. An item at -inf that is not relevant never ranks at or
    above a finite score: it is left out. A list holding NaN gets NaN. Sorting makes it O(M log M).
    """
    values, order = scores.sort(dim=-1)                              # ascending
    rel = relevant.gather(-1, order).long()
    index = torch.arange(scores.shape[-1], device=scores.device).expand_as(values)
    starts = torch.ones_like(rel)
    starts[..., 1:] = values[..., 1:] != values[..., :-1]           # the first item of each run of ties
    first = (index * starts).cummax(dim=-1).values                   # index of the first item tied with each
    rank_all = scores.shape[-1] - first                              # R(i, I): items at or above s_i
    below = rel.cumsum(-1) - rel                                     # positives before each index
    rank_pos = rel.sum(-1, keepdim=True) - below.gather(-1, first)   # R(i, P): positives at or above s_i
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    ap = (rel * rank_pos.to(dtype) / rank_all.to(dtype)).sum(-1) / rel.sum(-1).to(dtype)
    return ap.masked_fill(scores.isnan().any(-1), math.nan)


@torch.no_grad()
def average_precision(z: torch.Tensor, ids: torch.Tensor | BatchGroups, per_query: bool = False,
                      memory_budget: int | None = None) -> torch.Tensor:
    """The exact mean AP over all queries: eqs. 1-2 with the indicator, for evaluation.

    Same conventions as :func:`smooth_ap_loss`, except that images may have different numbers of
    views (each at least 2). Ties are handled as ``sklearn.metrics.average_precision_score`` handles
    them: R(i, X) = #{j in X: s_qj >= s_qi}, so a view tied with positive i ranks at or above it, and
    each query's AP equals sklearn's on its retrieval set (all other views). A collapsed encoder, every
    similarity equal, scores the fraction of positives among the retrieved, (K - 1) / (N - 1): chance.
    Chunks of queries keep scratch memory under ``memory_budget`` bytes.

    Args:
        z: (N, D) embeddings. ids: (N,) image of each view, or a :class:`BatchGroups` (no validation).

    Returns:
        The mean AP (a scalar), or the (N,) AP of every query when ``per_query`` is True.
    """
    groups, ids = _prepare("average_precision", z, ids)
    if groups is None:
        images, counts = torch.unique(ids, return_counts=True)
        if len(images) < 2:
            raise ValueError(f"average_precision needs at least 2 images in a batch; ids name {len(images)}")
        if counts.min() < 2:
            raise ValueError(f"average_precision needs at least 2 views per image (a query needs a positive); "
                             f"ids: image {images[counts.argmin()].item()} has 1")
    n = len(ids)
    budget = default_memory_budget(z.device) if memory_budget is None else memory_budget
    chunk = _chunk_size(n, 96 * n, budget)  # sorted scores, order, ranks: about 96 bytes an item
    ap = torch.empty(n, dtype=torch.float64 if z.dtype == torch.float64 else torch.float32, device=z.device)
    # Equal views must tie exactly, but a matrix product may round two equal columns differently (its kernels
    # sum a tile's edge in another order: seen in float64 on an AMD EPYC CPU, where a collapsed encoder then
    # scored above chance). So each distinct view's column is computed once and shared by its copies.
    r = _unit_rows(z.detach())
    distinct, copy = torch.unique(r, dim=0, return_inverse=True)
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        query = torch.arange(n, device=z.device)[rows, None]
        # The query is not in its own retrieval set: at -inf and not relevant, it ranks above nothing.
        with torch.autocast(z.device.type, enabled=False):
            s = (r[rows] @ distinct.T)[:, copy].scatter_(1, query, -math.inf)
        relevant = (ids[rows, None] == ids[None, :]).scatter_(1, query, False)
        ap[rows] = _exact_ap(s, relevant)
    return ap if per_query else ap.mean()


def nt_xent_loss(z: torch.Tensor, ids: torch.Tensor | BatchGroups, tau: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent (normalised temperature-scaled cross entropy), generalised to K views.

    Every ordered pair (q, p) of distinct views of one image is a classification of p among all other
    views of the batch:
        l(q, p) = -log( exp(s_qp / tau) / sum_{j != q} exp(s_qj / tau) ),
    averaged over all N (K - 1) pairs. The other positives of q stay in the denominator, as in SimCLR,
    so each pair is the local, pairwise objective the paper contrasts S2R2 with. For K = 2 this is
    exactly SimCLR's loss over 2B anchors (both directions averaged).

    Args:
        z: (N, D) embeddings; need not be normalised. ids: (N,) image of each view, or a
        :class:`BatchGroups` (no validation, as in :func:`smooth_ap_loss`). tau: temperature (positive, finite).

    Returns:
        A scalar tensor.
    """
    _check_tau("nt_xent_loss", tau)
    groups, ids = _prepare("nt_xent_loss", z, ids)
    groups = groups or ranking_groups(ids, "nt_xent_loss")
    logits = _cosine_similarity(z) / tau
    logits = logits.masked_fill(torch.eye(len(logits), dtype=torch.bool, device=logits.device), -math.inf)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -torch.gather(log_prob, 1, groups.positives).mean()


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's codes: soft assignments of B samples to P prototypes with equal shares (Caron et al., 2020).

    Finds Q = diag(u) exp(scores / epsilon) diag(v) whose rows each sum to 1 (one sample, one unit of
    mass) and whose columns each sum to B / P (every prototype used equally), by ``iterations`` rounds
    of alternate normalisation, ending on the rows.

    Args:
        scores: (B, P) prototype scores (cosine similarities) of B samples; the global batch, plus
            any queue, when training on several processes.
    Returns:
        (B, P) codes, each row a distribution over prototypes; no gradient.
    """
    if scores.dim() != 2:
        raise ValueError(f"sinkhorn_knopp needs scores of shape (samples, prototypes), got {tuple(scores.shape)}")
    # Subtracting the max keeps exp finite; a constant factor cancels in the normalisations.
    q = torch.exp((scores.float() - scores.float().max()) / epsilon).T   # (P, B)
    prototypes, samples = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * prototypes
        q /= q.sum(dim=0, keepdim=True) * samples
    return (q * samples).T


def swav_loss(scores, code_crops: int = 2, temperature: float = 0.1, epsilon: float = 0.05,
              sinkhorn_iterations: int = 3, queue_scores=None) -> torch.Tensor:
    """SwAV's swapped prediction loss over multi-crop views (Caron et al., 2020, eq. 1 and sec. 3.1).

    Each of the first ``code_crops`` crops (the large ones) gets codes from :func:`sinkhorn_knopp`;
    every other crop of the same image predicts those codes with a softmax over prototypes at
    ``temperature``. The loss averages the cross entropies over code crops and predicting crops:
        L = 1 / (code_crops (C - 1)) sum_{s < code_crops} sum_{t != s} mean_b H(q_s[b], softmax(scores_t[b] / T)).

    Args:
        scores: a sequence of C >= 2 tensors (B, P): prototype scores of crop c of each of B images,
            i.e. normalised projections times normalised prototypes.
        code_crops: how many leading crops give codes (SwAV: the 2 large crops).
        queue_scores: optional sequence of ``code_crops`` tensors (Q, P): scores of stored embeddings,
            put beside the batch in Sinkhorn (small batches), their codes then dropped.
    Returns:
        A scalar tensor; codes carry no gradient.
    """
    scores = list(scores)
    if len(scores) < 2:
        raise ValueError(f"swav_loss needs at least 2 crops per image, got {len(scores)}")
    if not 1 <= code_crops <= len(scores):
        raise ValueError(f"swav_loss: code_crops must be between 1 and the {len(scores)} crops, got {code_crops}")
    shape = scores[0].shape
    if len(shape) != 2 or shape[0] < 2 or any(s.shape != shape for s in scores):
        raise ValueError(f"swav_loss needs every crop's scores as one (images >= 2, prototypes) shape; "
                         f"got {[tuple(s.shape) for s in scores]}")
    _check_tau("swav_loss", temperature, argument="temperature")
    _check_tau("swav_loss", epsilon, argument="epsilon")
    if queue_scores is not None and len(queue_scores) != code_crops:
        raise ValueError(f"swav_loss: queue_scores needs one tensor per code crop ({code_crops}), "
                         f"got {len(queue_scores)}")
    log_probs = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]
    total = scores[0].new_zeros((), dtype=torch.float32)
    for s in range(code_crops):
        batch = scores[s].detach()
        if queue_scores is not None:
            batch = torch.cat([batch, queue_scores[s].detach()])
        codes = sinkhorn_knopp(batch, epsilon, sinkhorn_iterations)[: len(scores[s])]
        for t in range(len(scores)):
            if t != s:
                total = total - (codes * log_probs[t]).sum(dim=1).mean()
    return total / (code_crops * (len(scores) - 1))


def ranking_ap(scores: torch.Tensor, relevant: torch.Tensor, tau: float | None = None) -> torch.Tensor:
    """AP of one query's ranked list (eq. 1), exact (``tau`` None) or smoothed by eq. 3.

    The teaching form of the objective: ``scores`` (M,) are the similarities of the M retrieved items
    to the query (the query itself excluded), ``relevant`` (M,) bool marks the positives. Exact AP
    handles ties as ``sklearn.metrics.average_precision_score`` does: R(i, X) = #{j in X: s_j >= s_i},
    so M equal scores give the fraction of positives. Smoothed AP uses eq. 3's sigmoid, where a tie
    counts 1/2, and is differentiable in ``scores``.
    """
    if not isinstance(scores, torch.Tensor) or not scores.dtype.is_floating_point:
        scores = torch.as_tensor(scores, dtype=torch.get_default_dtype())
    relevant = torch.as_tensor(relevant, dtype=torch.bool, device=scores.device)
    if scores.dim() != 1 or scores.shape != relevant.shape:
        raise ValueError(f"ranking_ap needs scores and relevant of one shape (M,), got "
                         f"{tuple(scores.shape)} and {tuple(relevant.shape)}")
    if not relevant.any():
        raise ValueError("ranking_ap: relevant marks no item; AP needs at least one relevant item")
    if scores.isnan().any():
        raise ValueError(f"ranking_ap: scores hold NaN at positions {torch.nonzero(scores.isnan())[:, 0].tolist()}; "
                         f"a ranking needs comparable scores")
    _check_tau("ranking_ap", tau, allow_none=True)
    if tau is None:
        return _exact_ap(scores, relevant)
    g = torch.sigmoid((scores[None, :] - scores[relevant][:, None]) / tau)   # (|P|, M): phi(s_qj - s_qi)
    g = g.masked_fill(torch.arange(len(scores), device=scores.device)[None, :] == torch.nonzero(relevant)[:, :1], 0.0)
    rank_all = 1 + g.sum(1)
    rank_pos = 1 + g[:, relevant].sum(1)
    return (rank_pos / rank_all).mean()
