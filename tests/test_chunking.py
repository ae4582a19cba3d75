"""Chunked ranking equals unchunked ranking for every memory budget, remainders included.

The losses rank queries in chunks whose size follows from ``memory_budget``; a loop that mishandles the
last, partial chunk would go unseen if every chunk divided N. At the paper's setting (B = 64, K = 20) the
default budget leaves a remainder: 1,280 queries in chunks of 114, the last one of 26.
"""

import pytest
import torch

from s2r2lib import losses
from s2r2lib.losses import DEFAULT_MEMORY_BUDGET, average_precision, smooth_ap_loss


def batch(images, views, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(images * views, dim, generator=gen, dtype=torch.float64)
    ids = torch.arange(images).repeat_interleave(views)[torch.randperm(images * views, generator=gen)]
    return z, ids


def budget_for_chunk(chunk, views, n, element_bytes=8):
    """The memory budget that makes the losses rank ``chunk`` queries at a time (3 float (Q, K-1, N) tensors)."""
    return chunk * 3 * (views - 1) * n * element_bytes


def loss_and_grad(z, ids, budget):
    z = z.clone().requires_grad_(True)
    loss = smooth_ap_loss(z, ids, tau=0.05, memory_budget=budget)
    loss.backward()
    return loss.detach(), z.grad


@pytest.mark.parametrize("images,views", [(3, 2), (5, 3), (7, 4), (4, 5)])
def test_every_chunk_size_gives_the_unchunked_loss_gradient_and_ap(images, views):
    z, ids = batch(images, views, 6, seed=images * 10 + views)
    n = images * views
    whole_loss, whole_grad = loss_and_grad(z, ids, budget_for_chunk(n, views, n))
    whole_ap = average_precision(z, ids, per_query=True, memory_budget=budget_for_chunk(n, views, n))
    for chunk in range(1, n):  # every size, most leaving a partial last chunk
        budget = budget_for_chunk(chunk, views, n)
        loss, grad = loss_and_grad(z, ids, budget)
        torch.testing.assert_close(loss, whole_loss, msg=f"loss, chunk {chunk} of N = {n}")
        torch.testing.assert_close(grad, whole_grad, msg=f"gradient, chunk {chunk} of N = {n}")
        ap = average_precision(z, ids, per_query=True, memory_budget=budget)
        torch.testing.assert_close(ap, whole_ap, msg=f"per-query AP, chunk {chunk} of N = {n}")


@pytest.mark.parametrize("budget", [0, 1, 1000, 10**4 + 7, 10**5 + 3, 10**9])
def test_any_budget_gives_the_same_loss_even_below_one_query(budget):
    z, ids = batch(6, 3, 5, seed=1)
    reference, reference_grad = loss_and_grad(z, ids, 10**12)
    loss, grad = loss_and_grad(z, ids, budget)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad, reference_grad)


def test_the_papers_setting_with_the_default_budget_ranks_the_last_partial_chunk():
    images, views = 64, 20  # 1280 queries; float32 chunks of 114 at the default budget, the last of 26
    z, ids = batch(images, views, 16, seed=2)
    z = z.float()
    n = images * views
    default_chunk = DEFAULT_MEMORY_BUDGET // (3 * (views - 1) * n * 4)
    assert n % default_chunk == 26  # the case this test is about
    ap = average_precision(z, ids, per_query=True)
    divides = average_precision(z, ids, per_query=True, memory_budget=budget_for_chunk(128, views, n, 4))
    torch.testing.assert_close(ap, divides)
    loss, grad = loss_and_grad(z, ids, DEFAULT_MEMORY_BUDGET)
    loss_128, grad_128 = loss_and_grad(z, ids, budget_for_chunk(128, views, n, 4))
    torch.testing.assert_close(loss, loss_128)
    torch.testing.assert_close(grad, grad_128)
    assert grad[-26:].abs().sum() > 0


def test_each_pass_ranks_every_query_once_and_no_more_at_a_time_than_the_budget_allows(spy):
    """The point of chunking is the memory bound: values alone cannot show a chunk that overlaps or overruns."""
    images, views, chunk = 5, 3, 4
    z, ids = batch(images, views, 6, seed=3)
    n = images * views
    calls = spy(losses, "_rank_sums")
    loss = smooth_ap_loss(z.requires_grad_(True), ids, tau=0.05, memory_budget=budget_for_chunk(chunk, views, n))
    forward = [range(n)[call["rows"]] for call in calls]
    calls.clear()
    loss.backward()
    expected = [range(0, 4), range(4, 8), range(8, 12), range(12, 15)]
    assert forward == expected, "forward"
    assert [range(n)[call["rows"]] for call in calls] == expected, "backward"
