"""moco_loss as MoCo v1/v2 use it (one direction): the official InfoNCE, cross-entropy of the
(1 + K) logits [q.k+, q.queue] / T with the positive at index 0, at v1's T 0.07 and v2's 0.2."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from solo.losses import moco_loss


def official_infonce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> float:
    """-log p(positive), p the softmax over [l_pos, l_neg] / T, averaged over the batch; in float64
    loops, the query and key unit vectors, the queue (D, K) used as it is."""
    columns = queue.double().T.tolist()
    losses = []
    queries, keys = F.normalize(q.double(), dim=1).tolist(), F.normalize(k.double(), dim=1).tolist()
    for qi, ki in zip(queries, keys):
        logits = [sum(a * b for a, b in zip(qi, ki)) / t]
        logits += [sum(a * b for a, b in zip(qi, col)) / t for col in columns]
        top = max(logits)  # the softmax written out, shifted for float64 range
        denominator = sum(math.exp(x - top) for x in logits)
        losses.append(-math.log(math.exp(logits[0] - top) / denominator))
    return sum(losses) / len(losses)


def test_one_direction_loss_is_the_official_infonce() -> None:
    g = torch.Generator().manual_seed(0)
    query, key = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    key[:4] = query[:4] + 0.1 * torch.randn(4, 16, generator=g)  # some easy positives
    queue = F.normalize(torch.randn(16, 64, generator=g), dim=0)  # official (dim, K), unit columns
    for t in (0.07, 0.2):
        expected = official_infonce(query, key, queue, t)
        assert abs(moco_loss(query, key, queue, t).item() - expected) < 1e-4


def test_gradient_reaches_the_query_only() -> None:
    g = torch.Generator().manual_seed(1)
    query = torch.randn(4, 8, generator=g, requires_grad=True)
    key = torch.randn(4, 8, generator=g, requires_grad=True)
    queue = F.normalize(torch.randn(8, 16, generator=g), dim=0).requires_grad_(True)
    moco_loss(query, key, queue, 0.07).backward()
    assert query.grad.abs().sum() > 0 and key.grad is None and queue.grad is None
