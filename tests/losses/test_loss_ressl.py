"""ReSSL's relational loss against a loop over the paper's equation (arXiv:2107.09282, eq. 3-4)."""

from __future__ import annotations

import math

import torch

from solo.losses import relation_entropy, ressl_loss


def unit(rows: list[list[float]]) -> list[list[float]]:
    return [[a / math.sqrt(sum(b * b for b in r)) for a in r] for r in rows]


def softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    return [e / sum(exps) for e in exps]


def reference(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tq: float, tk: float) -> float:
    """Per row: the key's and the query's similarity distributions over the queue (each row of
    which is a past key), and the cross-entropy -sum_j p_k(j) log p_q(j); the batch mean."""
    queries, keys, bank = unit(q.tolist()), unit(k.tolist()), queue.tolist()
    total = 0.0
    for query, key in zip(queries, keys):
        p_k = softmax([sum(a * b for a, b in zip(key, m)) / tk for m in bank])
        p_q = softmax([sum(a * b for a, b in zip(query, m)) / tq for m in bank])
        total += -sum(t * math.log(p) for t, p in zip(p_k, p_q))
    return total / len(queries)


def inputs(seed: int, batch: int = 5, dim: int = 4, size: int = 7):
    g = torch.Generator().manual_seed(seed)
    queue = torch.nn.functional.normalize(torch.randn(size, dim, generator=g), dim=-1)
    return torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g), queue


def test_matches_the_loop_reference() -> None:
    q, k, queue = inputs(0)
    for tq, tk in ((0.1, 0.04), (0.2, 0.5)):  # a teacher softer than the student is allowed
        assert abs(ressl_loss(q, k, queue, tq, tk).item() - reference(q, k, queue, tq, tk)) < 1e-5


def test_defaults_are_the_papers_temperatures() -> None:
    q, k, queue = inputs(1)
    assert abs(ressl_loss(q, k, queue).item() - reference(q, k, queue, 0.1, 0.04)) < 1e-5


def test_invariant_to_permuting_the_batch_or_the_queue_and_to_scale() -> None:
    q, k, queue = inputs(2)
    loss = ressl_loss(q, k, queue)
    batch_perm, queue_perm = torch.tensor([3, 0, 4, 1, 2]), torch.tensor([6, 2, 0, 5, 1, 4, 3])
    assert torch.allclose(ressl_loss(q[batch_perm], k[batch_perm], queue), loss, atol=1e-6)
    assert torch.allclose(ressl_loss(q, k, queue[queue_perm]), loss, atol=1e-6)
    assert torch.allclose(ressl_loss(3 * q, 0.5 * k, queue), loss, atol=1e-6)


def test_no_gradient_reaches_the_key_or_the_queue() -> None:
    q, k, queue = inputs(3)
    q.requires_grad_(True), k.requires_grad_(True), queue.requires_grad_(True)
    ressl_loss(q, k, queue).backward()
    assert k.grad is None and queue.grad is None
    assert q.grad is not None and (q.grad.norm(dim=1) > 0).all()


def test_the_floor_is_the_targets_entropy() -> None:
    q, k, queue = inputs(4)
    entropy = relation_entropy(k, queue, 0.04)
    rows = unit(k.tolist())
    expected = 0.0
    for key in rows:
        p = softmax([sum(a * b for a, b in zip(key, m)) / 0.04 for m in queue.tolist()])
        expected -= sum(x * math.log(x) for x in p) / len(rows)
    assert abs(entropy.item() - expected) < 1e-5
    # the cross-entropy is never below it, and reaches it when the query's relation is the key's
    assert ressl_loss(q, k, queue, 0.1, 0.04) >= entropy
    assert torch.allclose(ressl_loss(k, k, queue, 0.04, 0.04), entropy, atol=1e-6)


def test_half_precision_inputs_give_a_float32_loss() -> None:
    q, k, queue = inputs(5)
    loss = ressl_loss(q.bfloat16(), k.bfloat16(), queue.bfloat16())
    assert loss.dtype == torch.float32
    expected = reference(q.bfloat16().float(), k.bfloat16().float(), queue.bfloat16().float(),
                         0.1, 0.04)
    assert abs(loss.item() - expected) < 1e-4
