"""s2r2lib.losses against references written straight from the paper's equations."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from s2r2lib.bench.loss import naive_smooth_ap_loss
from s2r2lib.losses import (BatchGroups, average_precision, check_embeddings, nt_xent_loss, ranking_ap,
                            ranking_groups, sinkhorn_knopp, smooth_ap_loss, swav_loss)


def reference_ap(z, ids, tau=None, query_is_positive=False):
    """Per-query AP by loops over queries and positives, eqs. 1-3 as printed (float64).

    ``tau=None`` uses the indicator of eq. 2 with sklearn's ties (a tie ranks at or above i: >= 0),
    else the sigmoid of eq. 3. ``query_is_positive``
    follows the official Smooth-AP code instead: the query is in its own retrieval set as a positive.
    """
    r = F.normalize(z.double(), dim=1)
    s = torch.stack([(row * r).sum(dim=1) for row in r])  # each pair summed on its own: equal views tie exactly
    n = len(ids)
    phi = (lambda d: (d >= 0).double()) if tau is None else (lambda d: torch.sigmoid(d / tau))
    aps = []
    for q in range(n):
        retrieved = [j for j in range(n) if j != q or query_is_positive]
        positives = [i for i in retrieved if ids[i] == ids[q]]
        terms = []
        for i in positives:
            rank_pos = 1 + sum(phi(s[q, j] - s[q, i]) for j in positives if j != i)
            rank_all = 1 + sum(phi(s[q, j] - s[q, i]) for j in retrieved if j != i)
            terms.append(rank_pos / rank_all)
        aps.append(torch.stack(terms).mean())
    return torch.stack(aps)


def random_batch(images, views, dim, seed, shuffle=True, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.arange(images).repeat_interleave(views) * 7 - 3  # any integers, not 0..B-1
    if shuffle:
        ids = ids[torch.randperm(len(ids), generator=gen)]
    z = torch.randn(len(ids), dim, generator=gen, dtype=dtype).requires_grad_()
    return z, ids


CASES = [(b, k, d, tau, seed) for seed, (b, k, d, tau) in enumerate(itertools.product(
    (2, 3, 5), (2, 3, 4), (2, 8), (0.01, 0.1, 1.0)))]


@pytest.mark.parametrize("images,views,dim,tau,seed", CASES)
def test_smooth_ap_loss_matches_loop_reference_in_value_and_gradient(images, views, dim, tau, seed):
    z, ids = random_batch(images, views, dim, seed)
    ours = smooth_ap_loss(z, ids, tau)
    ref = 1 - reference_ap(z, ids, tau).mean()
    grad_ours, = torch.autograd.grad(ours, z)
    grad_ref, = torch.autograd.grad(ref, z)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=0, atol=1e-6)


def test_smooth_ap_loss_passes_gradcheck():
    z, ids = random_batch(3, 3, 4, seed=1)
    assert torch.autograd.gradcheck(lambda x: smooth_ap_loss(x, ids, tau=0.1), (z,))


@pytest.mark.parametrize("budget", [1, 5_000, 10**9])
def test_chunked_and_unchunked_paths_agree(budget):
    z, ids = random_batch(6, 5, 16, seed=2, dtype=torch.float32)
    whole = smooth_ap_loss(z, ids, 0.05, memory_budget=10**12)
    grad_whole, = torch.autograd.grad(whole, z)
    chunked = smooth_ap_loss(z, ids, 0.05, memory_budget=budget)
    grad_chunked, = torch.autograd.grad(chunked, z)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(grad_chunked, grad_whole)


def test_small_tau_converges_to_exact_average_precision():
    z, ids = random_batch(4, 5, 8, seed=3)
    exact = average_precision(z, ids)
    gaps = [abs(1 - smooth_ap_loss(z, ids, tau).item() - exact.item()) for tau in (1e-1, 1e-2, 1e-3, 1e-6)]
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-9
    assert gaps[0] > 1e-3  # the relaxation is visible at a large tau


def sklearn_per_query(z, ids):
    """sklearn's average_precision_score of every query over all other views, on float64 cosine similarities,
    each pair's summed on its own: equal views tie exactly (two equal columns of a matrix product need not)."""
    r = F.normalize(z.detach().double(), dim=1).numpy()
    same = (ids[:, None] == ids[None, :]).numpy()
    others = ~np.eye(len(ids), dtype=bool)
    return np.array([average_precision_score(same[q][others[q]], (r[q] * r).sum(axis=1)[others[q]])
                     for q in range(len(ids))])


def test_average_precision_matches_loop_reference_and_sklearn():
    z, ids = random_batch(4, 4, 8, seed=4)
    per_query = average_precision(z, ids, per_query=True)
    torch.testing.assert_close(per_query, reference_ap(z, ids, tau=None))
    np.testing.assert_allclose(per_query.numpy(), sklearn_per_query(z, ids), rtol=0, atol=1e-12)


def tied_batch(images, views, seed, tied_share):
    """A batch whose rows are, with probability ``tied_share``, drawn from the 16 vectors of {-1, 1}^4 (their
    cosine similarities are exact multiples of 1/4, so many tie exactly), else Gaussian (no ties)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.arange(images).repeat_interleave(views)[torch.randperm(images * views, generator=gen)]
    signs = torch.randint(0, 2, (len(ids), 4), generator=gen).double() * 2 - 1
    scale = 2.0 ** torch.randint(-3, 4, (len(ids), 1), generator=gen)  # powers of 2 keep the ties exact
    gaussian = torch.randn(len(ids), 4, generator=gen, dtype=torch.float64)
    tied = torch.rand(len(ids), 1, generator=gen) < tied_share
    return torch.where(tied, signs * scale, gaussian), ids


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("tied_share", [0.0, 0.5, 1.0])
def test_average_precision_handles_ties_as_sklearn_per_query(seed, tied_share):
    gen = torch.Generator().manual_seed(100 + seed)
    images, views = (int(torch.randint(2, 7, (1,), generator=gen)), int(torch.randint(2, 6, (1,), generator=gen)))
    z, ids = tied_batch(images, views, seed, tied_share)
    per_query = average_precision(z, ids, per_query=True)
    np.testing.assert_allclose(per_query.numpy(), sklearn_per_query(z, ids), rtol=0, atol=1e-12)
    torch.testing.assert_close(per_query, reference_ap(z, ids, tau=None))
    one_per_chunk = average_precision(z, ids, per_query=True, memory_budget=1)
    torch.testing.assert_close(one_per_chunk, per_query, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("images,views,dim", [(4, 5, 8), (32, 20, 128), (13, 3, 7)])
def test_a_collapsed_encoder_scores_chance_not_one(images, views, dim, dtype):
    ids = torch.arange(images).repeat_interleave(views)
    z = torch.randn(1, dim, dtype=dtype).expand(len(ids), dim) * 3
    chance = (views - 1) / (len(ids) - 1)  # the fraction of positives among the other views
    assert average_precision(z, ids).item() == pytest.approx(chance, rel=1e-6)
    assert average_precision(z, ids).item() == pytest.approx(sklearn_per_query(z, ids).mean(), rel=1e-6)


def test_average_precision_takes_images_with_different_numbers_of_views():
    z, _ = random_batch(3, 4, 6, seed=20)
    ids = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3])
    per_query = average_precision(z, ids, per_query=True)
    np.testing.assert_allclose(per_query.numpy(), sklearn_per_query(z, ids), rtol=0, atol=1e-12)


def test_ranking_ap_handles_ties_as_sklearn():
    gen = torch.Generator().manual_seed(21)
    for trial in range(60):
        m = int(torch.randint(1, 30, (1,), generator=gen))
        levels = [m, max(1, m // 3), 1][trial % 3]  # untied, partly tied, all equal
        scores = torch.randint(0, levels, (m,), generator=gen).double() / levels if levels < m \
            else torch.randn(m, generator=gen, dtype=torch.float64)
        relevant = torch.rand(m, generator=gen) < 0.4
        relevant[int(torch.randint(0, m, (1,), generator=gen))] = True
        expected = average_precision_score(relevant.numpy(), scores.numpy())
        assert ranking_ap(scores, relevant).item() == pytest.approx(expected, abs=1e-12)
    assert ranking_ap(torch.zeros(8), torch.tensor([True, False, False, True] * 2)).item() == 0.5


@pytest.mark.parametrize("fn", [lambda s, r: ranking_ap(s, r), lambda s, r: ranking_ap(s, r, tau=0.1)])
def test_nan_scores_are_refused(fn):
    with pytest.raises(ValueError, match="scores hold NaN at positions \\[1\\]"):
        fn(torch.tensor([0.3, float("nan"), 0.1]), torch.tensor([True, False, True]))


def test_loss_is_invariant_to_permuting_views_and_to_scaling_z():
    z, ids = random_batch(5, 4, 8, seed=5)
    base = smooth_ap_loss(z, ids)
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(smooth_ap_loss(z[perm], ids[perm]), base)
    scales = torch.rand(len(ids), 1, dtype=z.dtype) * 10 + 0.1  # per-row scaling: cosine ignores it
    torch.testing.assert_close(smooth_ap_loss(z * scales, ids), base)


def test_perfectly_separated_groups_give_ap_one():
    images, views = 4, 5
    ids = torch.arange(images).repeat_interleave(views)
    centres = torch.eye(images, 8, dtype=torch.float64)
    z = centres[ids] + 1e-3 * torch.randn(len(ids), 8, dtype=torch.float64)
    assert average_precision(z, ids).item() == 1.0
    assert smooth_ap_loss(z, ids, tau=1e-3).item() < 1e-12


def test_query_counted_as_positive_gives_a_different_value():
    """The official Smooth-AP convention (query = own positive at rank 1) inflates AP; ours does not."""
    z, ids = random_batch(3, 3, 4, seed=6)
    ours = 1 - smooth_ap_loss(z, ids, tau=0.01)
    official = reference_ap(z, ids, tau=0.01, query_is_positive=True).mean()
    torch.testing.assert_close(ours, reference_ap(z, ids, tau=0.01).mean())
    assert official.item() > ours.item() + 0.05


def test_naive_benchmark_form_computes_the_same_loss():
    z, ids = random_batch(4, 3, 8, seed=7, dtype=torch.float32)
    torch.testing.assert_close(naive_smooth_ap_loss(z, ids, 0.05), smooth_ap_loss(z, ids, 0.05))


def test_pytorch_metric_learning_smooth_ap_counts_query_and_groups_by_batch_size():
    """PML 2.9's SmoothAPLoss: query as own positive, positives in contiguous blocks of B (not K)."""
    from pytorch_metric_learning import losses  # the [test] extra installs it: missing, this fails, not skips
    images, views = 4, 2  # B != K
    z, _ = random_batch(images, views, 8, seed=8, shuffle=False, dtype=torch.float32)
    ids = torch.arange(images).repeat_interleave(views)
    pml = losses.SmoothAPLoss(temperature=0.01)(z, ids)
    blocks_of_b = torch.arange(len(ids)) // images  # what PML actually groups together
    assert pml.item() == pytest.approx(
        1 - reference_ap(z, blocks_of_b, 0.01, query_is_positive=True).mean().item(), abs=1e-5)
    assert abs(pml.item() - smooth_ap_loss(z, ids, 0.01).item()) > 0.05


@pytest.mark.parametrize("views", [2, 4])
def test_nt_xent_matches_simclr_for_two_views_and_pairs_in_general(views):
    z, ids = random_batch(5, views, 8, seed=9)
    tau = 0.2
    r = F.normalize(z, dim=1)
    logits = (r @ r.T / tau).masked_fill(torch.eye(len(ids), dtype=torch.bool), float("-inf"))
    pairs = [(q, p) for q in range(len(ids)) for p in range(len(ids)) if p != q and ids[p] == ids[q]]
    expected = torch.stack([F.cross_entropy(logits[q], torch.tensor(p)) for q, p in pairs]).mean()
    torch.testing.assert_close(nt_xent_loss(z, ids, tau), expected)
    if views == 2:  # SimCLR's own layout: rows [x_1..x_B, x'_1..x'_B], label of i is i +- B
        images = 5
        order = torch.cat([torch.nonzero(ids == i)[:, 0] for i in ids.unique()]).view(images, 2).T.reshape(-1)
        rr = r[order]
        lg = (rr @ rr.T / tau).masked_fill(torch.eye(2 * images, dtype=torch.bool), float("-inf"))
        labels = torch.cat([torch.arange(images) + images, torch.arange(images)])
        torch.testing.assert_close(nt_xent_loss(z, ids, tau), F.cross_entropy(lg, labels))


def test_ranking_ap_on_a_hand_computed_list():
    # Ranked: pos, neg, pos, neg, pos -> precisions at the positives 1/1, 2/3, 3/5.
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    relevant = torch.tensor([True, False, True, False, True])
    assert ranking_ap(scores, relevant).item() == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert ranking_ap(scores, relevant, tau=1e-4).item() == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-6)
    assert ranking_ap(scores, relevant, tau=1.0).item() != pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-2)


def test_bf16_autocast_input_is_ranked_in_float32():
    z, ids = random_batch(4, 3, 8, seed=10, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = smooth_ap_loss(z.to(torch.bfloat16), ids)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("fn", [smooth_ap_loss, nt_xent_loss])
def test_the_loss_under_bf16_autocast_equals_the_float32_loss(fn):
    """Autocast must not reach the rank sums: in bf16, sums of hundreds of sigmoids lose whole ranks."""
    z, ids = random_batch(16, 20, 32, seed=22, dtype=torch.float32)
    plain = fn(z, ids, 0.05)
    grad_plain, = torch.autograd.grad(plain, z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = fn(z, ids, 0.05)
    grad_autocast, = torch.autograd.grad(autocast, z)  # backward outside autocast, as torch recommends
    torch.testing.assert_close(autocast, plain, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad_autocast, grad_plain, rtol=1e-5, atol=1e-9)


def test_each_querys_positives_are_the_other_views_of_its_image_in_index_order():
    # a fixed order fixes the order of the loss's sums, so a batch gives the same bits whatever the sort does
    ids = torch.arange(64).repeat_interleave(20)[torch.randperm(1280, generator=torch.Generator().manual_seed(0))]
    positives = ranking_groups(ids).positives
    expected = [[j for j in torch.nonzero(ids == ids[q]).flatten().tolist() if j != q] for q in range(len(ids))]
    assert positives.tolist() == expected


def test_prebuilt_batch_groups_give_the_same_numbers_without_a_host_sync():
    z, ids = random_batch(6, 4, 8, seed=23, dtype=torch.float32)
    groups = ranking_groups(ids)
    assert isinstance(groups, BatchGroups)
    with torch.profiler.profile() as prof:
        with_groups = [smooth_ap_loss(z, groups), nt_xent_loss(z, groups, 0.2), average_precision(z, groups)]
        with_groups[0].backward()
    syncs = {"aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::unique", "aten::_unique2",
             "aten::is_nonzero"}
    assert not [event.key for event in prof.key_averages() if event.key in syncs]
    plain = [smooth_ap_loss(z, ids), nt_xent_loss(z, ids, 0.2), average_precision(z, ids)]
    for a, b in zip(with_groups, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with torch.profiler.profile() as prof:
        smooth_ap_loss(z, ids)  # the plain call validates, and a validation needs the host
    assert {event.key for event in prof.key_averages()} & syncs
    check_embeddings(z)  # what a loop with groups runs now and then instead
    with pytest.raises(ValueError, match="row 2 holds NaN"):
        check_embeddings(z.detach().index_fill(0, torch.tensor([2]), float("nan")))


def test_rows_of_any_float32_norm_give_the_loss_of_unit_rows():
    z, ids = random_batch(4, 3, 8, seed=24, dtype=torch.float32)
    base = smooth_ap_loss(z, ids)
    scales = torch.tensor([1e30, 1e19, 1e-13, 1e-30] * 3)[:, None]  # squared norms over- or underflow
    torch.testing.assert_close(smooth_ap_loss(z * scales, ids), base)
    torch.testing.assert_close(nt_xent_loss(z * scales, ids), nt_xent_loss(z, ids))
    torch.testing.assert_close(average_precision(z * scales, ids), average_precision(z, ids))


@pytest.mark.parametrize("fn", [smooth_ap_loss, average_precision, nt_xent_loss])
@pytest.mark.parametrize("z,ids,message", [
    (torch.randn(4, 3), torch.tensor([0, 0, 0, 0]), "at least 2 images"),
    (torch.randn(5, 3), torch.tensor([0, 0, 1, 1, 2]), "image 2 has 1"),
    (torch.tensor([[0.0, 1.0], [float("nan"), 1.0], [1.0, 0.0], [1.0, 1.0]]), torch.tensor([0, 0, 1, 1]), "NaN or inf"),
    (torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]), torch.tensor([0, 0, 1, 1]), "row 1 is all zeros"),
    (torch.randn(4, 3), torch.tensor([0, 0, 1]), "ids must have shape"),
    (torch.randn(4), torch.tensor([0, 0, 1, 1]), "2-D tensor"),
    (torch.randn(4, 0), torch.tensor([0, 0, 1, 1]), "0 columns"),
    (torch.randn(4, 3), torch.tensor([0.0, 0.0, 1.0, 1.0]), "integers"),
])
def test_bad_input_raises_a_clear_error(fn, z, ids, message):
    with pytest.raises(ValueError, match=message):
        fn(z, ids)


@pytest.mark.parametrize("fn", [smooth_ap_loss, nt_xent_loss, ranking_groups])
def test_the_ranking_losses_need_equal_views_per_image(fn):
    args = (torch.randn(5, 3), torch.tensor([0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match="same number of views"):
        fn(*args[fn is ranking_groups:])


@pytest.mark.parametrize("fn", [smooth_ap_loss, nt_xent_loss])
@pytest.mark.parametrize("tau", [0.0, -0.1, float("inf"), float("nan")])
def test_non_positive_or_infinite_tau_is_refused(fn, tau):
    z, ids = random_batch(2, 2, 3, seed=0)
    with pytest.raises(ValueError, match="tau must be a positive finite number"):
        fn(z, ids, tau=tau)


def test_mismatched_devices_are_refused():
    with pytest.raises(ValueError, match="one device"):
        smooth_ap_loss(torch.randn(4, 3), torch.tensor([0, 0, 1, 1], device="meta"))


def test_sinkhorn_codes_are_distributions_with_equal_prototype_shares():
    gen = torch.Generator().manual_seed(11)
    scores = F.normalize(torch.randn(64, 8, generator=gen), dim=1)
    codes = sinkhorn_knopp(scores, epsilon=0.05, iterations=50)
    torch.testing.assert_close(codes.sum(1), torch.ones(64))
    torch.testing.assert_close(codes.sum(0), torch.full((8,), 64 / 8), rtol=1e-3, atol=1e-3)
    # Few iterations: rows exact, columns only roughly balanced; still far from the plain softmax.
    rough = sinkhorn_knopp(scores, epsilon=0.05, iterations=3)
    torch.testing.assert_close(rough.sum(1), torch.ones(64))
    softmax_shares = torch.softmax(scores / 0.05, dim=1).sum(0)
    assert (rough.sum(0) - 8).abs().max() < (softmax_shares - 8).abs().max()


def test_sinkhorn_codes_follow_the_scores_when_shares_are_already_equal():
    scores = torch.eye(4).repeat(2, 1)  # 8 samples, each sure of one of 4 prototypes, 2 per prototype
    codes = sinkhorn_knopp(scores, epsilon=0.05, iterations=3)
    assert torch.equal(codes.argmax(1), torch.arange(4).repeat(2))


def swav_reference(scores, code_crops, temperature, epsilon, iterations):
    """SwAV's published pseudo-code, written out loop by loop."""
    loss = 0.0
    for s in range(code_crops):
        q = torch.exp(scores[s].detach().double() / epsilon).T
        q /= q.sum()
        prototypes, batch = q.shape
        for _ in range(iterations):
            q /= q.sum(dim=1, keepdim=True)
            q /= prototypes
            q /= q.sum(dim=0, keepdim=True)
            q /= batch
        q = (q * batch).T
        sub = 0.0
        for t in range(len(scores)):
            if t != s:
                p = torch.softmax(scores[t].double() / temperature, dim=1)
                sub -= torch.mean(torch.sum(q * torch.log(p), dim=1))
        loss += sub / (len(scores) - 1)
    return loss / code_crops


@pytest.mark.parametrize("crops,code_crops", [(2, 2), (4, 2), (6, 1)])
def test_swav_loss_matches_the_published_pseudo_code(crops, code_crops):
    gen = torch.Generator().manual_seed(crops)
    scores = [F.normalize(torch.randn(16, 10, generator=gen), dim=1) for _ in range(crops)]
    ours = swav_loss(scores, code_crops=code_crops)
    torch.testing.assert_close(ours.double(), swav_reference(scores, code_crops, 0.1, 0.05, 3), rtol=1e-5, atol=1e-5)


def test_swav_loss_sums_bf16_scores_in_float32():
    # under autocast the prototype scores come in bf16; the loss's running sum must not round to bf16 with them
    gen = torch.Generator().manual_seed(14)
    scores = [F.normalize(torch.randn(16, 10, generator=gen), dim=1) for _ in range(4)]
    low = swav_loss([s.bfloat16() for s in scores])
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, swav_loss([s.bfloat16().float() for s in scores]), rtol=0, atol=0)


def test_swav_loss_gradient_flows_through_predictions_only():
    gen = torch.Generator().manual_seed(12)
    code = torch.randn(8, 5, generator=gen, requires_grad=True)
    other = torch.randn(8, 5, generator=gen, requires_grad=True)
    swav_loss([code, other], code_crops=1).backward()
    assert code.grad is None and other.grad.abs().sum() > 0


def test_swav_loss_is_lower_when_crops_agree():
    gen = torch.Generator().manual_seed(13)
    scores = F.normalize(torch.randn(32, 8, generator=gen), dim=1)
    agree = swav_loss([scores, scores.clone()])
    disagree = swav_loss([scores, scores[torch.randperm(32, generator=gen)]])
    assert agree < disagree


def test_swav_queue_joins_sinkhorn_but_not_the_loss():
    gen = torch.Generator().manual_seed(14)
    scores = [torch.randn(4, 6, generator=gen) for _ in range(3)]
    queue = [torch.randn(32, 6, generator=gen) for _ in range(2)]
    with_queue = swav_loss(scores, queue_scores=queue)
    expected = torch.zeros((), dtype=torch.float32)
    for s in range(2):  # each code crop's codes: Sinkhorn over the batch and its queue, then the batch's 4 rows
        codes = sinkhorn_knopp(torch.cat([scores[s], queue[s]]), 0.05, 3)[:4]
        for t in (t for t in range(3) if t != s):
            expected -= (codes * F.log_softmax(scores[t] / 0.1, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(with_queue, expected / (2 * 2))  # 2 code crops x 2 crops predicting each
    assert with_queue != swav_loss(scores)
    with pytest.raises(ValueError, match="one tensor per code crop"):
        swav_loss(scores, queue_scores=queue[:1])


@pytest.mark.parametrize("scores,kwargs,message", [
    ([torch.randn(4, 3)], {}, "at least 2 crops"),
    ([torch.randn(4, 3), torch.randn(5, 3)], {}, "one \\(images >= 2, prototypes\\) shape"),
    ([torch.randn(1, 3), torch.randn(1, 3)], {}, "images >= 2"),
    ([torch.randn(4, 3), torch.randn(4, 3)], {"code_crops": 3}, "code_crops"),
    ([torch.randn(4, 3), torch.randn(4, 3)], {"temperature": 0}, "temperature > 0"),
    ([torch.randn(4, 3), torch.randn(4, 3)], {"epsilon": float("inf")}, "epsilon must be a positive finite"),
])
def test_swav_bad_input_raises_a_clear_error(scores, kwargs, message):
    with pytest.raises(ValueError, match=message):
        swav_loss(scores, **kwargs)
