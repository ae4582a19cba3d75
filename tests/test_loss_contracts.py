"""What the losses promise beyond their values: the paper's default temperatures, errors that name the
function and the offending shape, the memory bound of the chunked ranking, and ranking_ap's and swav_loss's
edge cases. Written to kill the mutants of s2r2lib/losses.py that tests/test_losses.py let live
(`make mutation MODULES=losses`; mutation/equivalent.md lists the ones no test can kill)."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s2r2lib import losses
from s2r2lib.losses import DEFAULT_MEMORY_BUDGET, nt_xent_loss, ranking_ap, smooth_ap_loss, swav_loss


def batch(images=3, views=2, dim=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(images * views, dim, generator=gen), torch.arange(images).repeat_interleave(views)


def test_default_temperatures_are_the_papers():
    z, ids = batch()
    assert smooth_ap_loss(z, ids) == smooth_ap_loss(z, ids, tau=0.01)  # Smooth-AP's tau (eq. 3)
    assert nt_xent_loss(z, ids) == nt_xent_loss(z, ids, tau=0.1)  # SimCLR's


@pytest.mark.parametrize("fn", [smooth_ap_loss, nt_xent_loss, losses.average_precision])
def test_errors_name_the_function_and_the_offending_shape_or_type(fn):
    name = fn.__name__
    with pytest.raises(ValueError, match=rf"^{name}: z must be a 2-D tensor \(views, dim\), got shape \(6,\)$"):
        fn(torch.randn(6), torch.arange(3).repeat_interleave(2))
    with pytest.raises(TypeError, match=rf"^{name}: z must be a tensor \(views, dim\), got list$"):
        fn([[0.0, 1.0]] * 6, torch.arange(3).repeat_interleave(2))  # not a tensor at all
    with pytest.raises(ValueError, match=rf"^{name}: ids must have shape \(6,\), one per row of z; got \(5,\)$"):
        fn(torch.randn(6, 4), torch.arange(5))
    with pytest.raises(ValueError, match=rf"^{name}: z must be floating point, got torch.int64$"):
        fn(torch.ones(6, 4, dtype=torch.long), torch.arange(3).repeat_interleave(2))
    with pytest.raises(ValueError, match=rf"^{name}: ids must be integers"):
        fn(torch.randn(6, 4), torch.arange(3).repeat_interleave(2).to(torch.complex64))
    with pytest.raises(ValueError, match=rf"^{name} needs at least 2 images"):
        fn(torch.randn(4, 4), torch.zeros(4, dtype=torch.long))


def test_the_chunk_is_the_most_queries_whose_scratch_fits_the_budget():
    # 3 (chunk, K-1, N) tensors at peak: at the paper's setting (N = 1280, K = 20) in float32, 114 queries.
    n, positives, element = 1280, 19, 4
    per_query = 3 * positives * n * element
    chunk = losses._chunk_size(n, per_query, DEFAULT_MEMORY_BUDGET)
    assert chunk * per_query <= DEFAULT_MEMORY_BUDGET < (chunk + 1) * per_query and chunk == 114
    assert losses._chunk_size(n, 2 * per_query, 2 * per_query - 1) == 1  # float64 needs twice the bytes
    assert losses._chunk_size(n, per_query, 0) == 1  # never fewer than one query
    assert losses._chunk_size(10, per_query, 10**12) == 10  # never more than all of them
    # on a GPU the whole paper batch is one chunk (a chunk costs kernel launches, not cache misses)
    assert losses._chunk_size(n, per_query, losses.default_memory_budget(torch.device("cuda"))) == n
    assert losses.default_memory_budget(torch.device("cpu")) == DEFAULT_MEMORY_BUDGET


def test_ranking_ap_takes_relevance_as_zeros_and_ones():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    as_bool = ranking_ap(scores, torch.tensor([True, False, True, False, True]))
    assert ranking_ap(scores, [1, 0, 1, 0, 1]) == as_bool
    assert ranking_ap(scores.tolist(), [1, 0, 1, 0, 1], tau=0.01) == pytest.approx(as_bool.item(), abs=1e-3)


def test_ranking_ap_a_tie_ranks_at_or_above_a_positive_as_sklearn_has_it():
    # A negative tied with the positive enters the ranking with it: precision 1/2 (a collapsed encoder
    # scores chance, not a perfect AP).
    assert ranking_ap(torch.tensor([0.5, 0.5]), torch.tensor([True, False])).item() == 0.5


@pytest.mark.parametrize("scores,relevant,kwargs,message", [
    (torch.zeros(5), torch.zeros(4, dtype=torch.bool), {}, r"^ranking_ap needs scores and relevant of one shape "
                                                          r"\(M,\), got \(5,\) and \(4,\)$"),
    (torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool), {}, r"one shape \(M,\), got \(2, 2\) and \(2, 2\)$"),
    (torch.zeros(3), torch.zeros(3, dtype=torch.bool), {}, r"^ranking_ap: relevant marks no item; AP needs at "
                                                          r"least one relevant item$"),
    (torch.zeros(3), torch.ones(3, dtype=torch.bool), {"tau": 0.0}, r"^ranking_ap: tau must be a positive finite "
                                                                    r"number .*got 0.0$"),
])
def test_ranking_ap_refuses_bad_input_clearly(scores, relevant, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ranking_ap(scores, relevant, **kwargs)


def test_swav_loss_takes_two_images_and_refuses_a_zero_epsilon():
    gen = torch.Generator().manual_seed(0)
    scores = [F.normalize(torch.randn(2, 5, generator=gen), dim=1) for _ in range(2)]
    assert torch.isfinite(swav_loss(scores))
    with pytest.raises(ValueError, match="^swav_loss: .*epsilon > 0"):  # names the function called
        swav_loss(scores, epsilon=0.0)


def test_swav_loss_runs_the_sinkhorn_iterations_it_is_given():
    gen = torch.Generator().manual_seed(1)
    scores = [F.normalize(torch.randn(16, 6, generator=gen), dim=1) for _ in range(2)]
    for iterations in (1, 10):
        codes = [losses.sinkhorn_knopp(s.detach(), 0.05, iterations) for s in scores]
        expected = -sum((codes[s] * F.log_softmax(scores[1 - s] / 0.1, dim=1)).sum(1).mean() for s in (0, 1)) / 2
        torch.testing.assert_close(swav_loss(scores, sinkhorn_iterations=iterations), expected)


def test_an_unchecked_all_zero_row_has_similarity_zero_and_leaves_the_loss_finite():
    # Given a BatchGroups the losses skip the value check (a training loop runs check_embeddings now and then),
    # so a row that collapsed to zeros must not turn every query's ranking into NaN in between.
    z, ids = batch(images=3, views=2, seed=2)
    z[1] = 0.0
    groups = losses.ranking_groups(ids)
    z.requires_grad_(True)
    loss = smooth_ap_loss(z, groups)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert torch.isfinite(nt_xent_loss(z, groups))
    assert (losses._cosine_similarity(z.detach())[1] == 0).all()


def test_exact_ap_of_several_lists_gives_each_its_own_and_nan_only_to_a_list_holding_nan():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, float("nan"), 0.4, 0.6], [0.4, 0.3, 0.2, 0.1]])
    relevant = torch.tensor([[True, False, False, True], [True, True, False, False], [False, False, True, True]])
    ap = losses._exact_ap(scores, relevant)
    assert ap[1].isnan()
    for row in (0, 2):
        assert ap[row] == ranking_ap(scores[row], relevant[row])
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2) and ap[2] == pytest.approx((1 / 3 + 2 / 4) / 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ranking_ap_returns_the_scores_dtype_and_the_default_dtype_for_anything_else(dtype):
    scores, relevant = [0.9, 0.8, 0.7], [True, False, True]
    for tau in (None, 0.05):
        assert ranking_ap(torch.tensor(scores, dtype=dtype), relevant, tau=tau).dtype == dtype
        for given in (scores, np.array(scores), torch.tensor([3, 2, 1])):  # a list, float64 numpy, integers
            assert ranking_ap(given, relevant, tau=tau).dtype == torch.get_default_dtype(), (type(given), tau)


def test_swav_loss_warns_of_nothing():
    # PyTorch warns of an implicit softmax dimension; a warning in every training step would bury real ones.
    gen = torch.Generator().manual_seed(2)
    scores = [F.normalize(torch.randn(8, 5, generator=gen), dim=1) for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isfinite(swav_loss(scores))
