"""NNCLR's loss against a loop over the paper's eq. 2, its invariances and gradients, the same loss
and gradients on 2 gloo processes as on one, and the nearest-neighbour lookup against a loop."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from solo.losses import nnclr_loss
from solo.nn import nearest_neighbours
from tests.multiprocess import run_processes


def reference(nn: torch.Tensor, p: torch.Tensor, temperature: float) -> torch.Tensor:
    """-1/B sum_i log( exp(cos(nn_i, p_i)/T) / sum_j exp(cos(nn_i, p_j)/T) ), by loops."""
    total = nn.new_zeros(())
    for i in range(len(nn)):
        logits = [F.cosine_similarity(nn[i], p[j], dim=0) / temperature for j in range(len(p))]
        total = total - (logits[i] - torch.logsumexp(torch.stack(logits), dim=0))
    return total / len(nn)


def data(batch: int = 6, dim: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=g, dtype=torch.float64), \
        torch.randn(batch, dim, generator=g, dtype=torch.float64)


def test_matches_the_papers_equation_and_its_gradients() -> None:
    nn, p = data()
    for t in (0.1, 0.2, 1.0):
        a, b = nn.clone().requires_grad_(True), p.clone().requires_grad_(True)
        ra, rb = nn.clone().requires_grad_(True), p.clone().requires_grad_(True)
        loss, expected = nnclr_loss(a, b, t), reference(ra, rb, t)
        torch.testing.assert_close(loss, expected.float())
        loss.backward(), expected.backward()
        torch.testing.assert_close(a.grad, ra.grad.float().double(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(b.grad, rb.grad.float().double(), rtol=1e-4, atol=1e-6)


def test_invariant_to_scale_and_to_a_shared_permutation() -> None:
    nn, p = data()
    loss = nnclr_loss(nn, p, 0.2)
    torch.testing.assert_close(nnclr_loss(nn * 3.0, p * 0.5, 0.2), loss)
    order = torch.randperm(len(nn), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(nnclr_loss(nn[order], p[order], 0.2), loss)
    # neighbours that are their own predictions, far from the others: the loss goes to 0
    eye = torch.eye(6)
    assert nnclr_loss(eye, eye, 0.01) < 1e-6


def test_nearest_neighbours_match_a_loop_over_the_support() -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(7, 4, generator=g) * 4  # unnormalized: the cosine decides, not the norm
    support = F.normalize(torch.randn(30, 4, generator=g), dim=-1)
    index, rows = nearest_neighbours(z, support, k=5)
    assert index.shape == (7, 5) and rows.shape == (7, 5, 4) and not rows.requires_grad
    for i, row in enumerate(z.tolist()):
        norm = math.sqrt(sum(x * x for x in row))
        cosines = [sum(a * b for a, b in zip(row, key)) / norm for key in support.tolist()]
        ranked = sorted(range(len(cosines)), key=cosines.__getitem__, reverse=True)
        assert index[i].tolist() == ranked[:5]  # most similar first
    assert torch.equal(rows, support[index])
    # a stored copy is its own nearest neighbour, and no gradient flows back into z
    z = (support[[3, 9]] * 7).requires_grad_(True)
    index, rows = nearest_neighbours(z, support)
    assert index[:, 0].tolist() == [3, 9] and not rows.requires_grad


# ----------------------------------------------------------------------------------------------
# 2 processes: each passes its half; DDP's averaged gradient is the 1-process one
# ----------------------------------------------------------------------------------------------
def _two_process_worker(rank: int, world: int) -> dict:
    import torch.distributed as dist

    nn, p = data(batch=8)
    # nn with gradient too: All4One's attention term contrasts two embeddings with gradient
    a = nn[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
    b = p[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
    loss = nnclr_loss(a, b, 0.2)
    loss.backward()
    grads = []
    # each rank's input gradients, gathered in rank order, over world (DDP's mean over processes)
    for g in (a.grad, b.grad):
        parts = [torch.empty_like(g) for _ in range(world)]
        dist.all_gather(parts, g.contiguous())
        grads.append(torch.cat(parts) / world)
    return {"loss": loss.detach(), "nn_grad": grads[0], "p_grad": grads[1]}


def test_two_processes_equal_one_process_on_the_global_batch() -> None:
    nn, p = data(batch=8)
    a, b = nn.clone().requires_grad_(True), p.clone().requires_grad_(True)
    loss = nnclr_loss(a, b, 0.2)
    loss.backward()
    results = run_processes(_two_process_worker)
    # the mean of the two local losses is the global one; each rank's rows get the global gradient
    torch.testing.assert_close((results[0]["loss"] + results[1]["loss"]) / 2, loss.detach())
    for result in results:
        torch.testing.assert_close(result["nn_grad"], a.grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(result["p_grad"], b.grad, rtol=1e-5, atol=1e-7)
