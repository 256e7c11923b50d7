"""MoCo v3's loss against a loop over the paper's equation; keys get no gradient; on two gloo
processes the loss and gradients equal those of one process on the global batch."""

from __future__ import annotations

import math

import torch

from solo.losses import mocov3_loss
from tests.multiprocess import average_gradients, run_processes


def reference(q: torch.Tensor, k: torch.Tensor, t: float) -> float:
    """2T x mean over i of -log( exp(cos(q_i, k_i) / T) / sum_j exp(cos(q_i, k_j) / T) )."""
    def cos(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b))
        return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    qs, ks = q.tolist(), k.tolist()
    total = 0.0
    for i, qi in enumerate(qs):
        logits = [cos(qi, kj) / t for kj in ks]
        total += -logits[i] + math.log(sum(math.exp(x) for x in logits))
    return 2 * t * total / len(qs)


def data(seed: int, batch: int = 6, dim: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)


def test_matches_the_loop_reference() -> None:
    q, k = data(0)
    for t in (0.2, 1.0):
        assert abs(mocov3_loss(q, k, t).item() - reference(q, k, t)) < 1e-5


def test_invariant_to_scale_and_to_permuting_the_pairs() -> None:
    q, k = data(1)
    loss = mocov3_loss(q, k)
    perm = torch.randperm(len(q), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(mocov3_loss(q[perm], k[perm]), loss)
    torch.testing.assert_close(mocov3_loss(3.0 * q, 0.5 * k), loss)


def test_gradient_reaches_the_queries_only_and_half_inputs_give_float32() -> None:
    q, k = data(3)
    q.requires_grad_(True), k.requires_grad_(True)
    loss = mocov3_loss(q.bfloat16(), k.bfloat16())
    assert loss.dtype == torch.float32
    loss.backward()
    assert k.grad is None and (q.grad.norm(dim=1) > 0).all()


def _two_processes(rank: int, world: int, q: torch.Tensor, k: torch.Tensor) -> dict:
    weight = torch.eye(q.shape[1]).requires_grad_(True)  # the queries' "network"
    rows = slice(rank * len(q) // world, (rank + 1) * len(q) // world)
    loss = mocov3_loss(q[rows] @ weight, k[rows], 0.2)
    loss.backward()
    return {"loss": loss.detach(), "grad": average_gradients([weight])[0]}


def test_two_processes_equal_one_on_the_global_batch() -> None:
    q, k = data(4, batch=8)
    weight = torch.eye(q.shape[1]).requires_grad_(True)
    loss = mocov3_loss(q @ weight, k, 0.2)
    loss.backward()
    results = run_processes(_two_processes, q, k)
    # each process averages over its own queries, DDP averages the gradients: both the mean
    torch.testing.assert_close(sum(r["loss"] for r in results) / 2, loss.detach())
    for r in results:
        torch.testing.assert_close(r["grad"], weight.grad)
    assert not torch.allclose(results[0]["loss"], results[1]["loss"])  # a real split
