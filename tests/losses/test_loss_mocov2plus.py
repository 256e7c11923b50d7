import math

import torch
import torch.nn.functional as F

from solo.losses import moco_loss


def reference_moco(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, t: float) -> float:
    def unit(v: list[float]) -> list[float]:
        n = math.sqrt(sum(a * a for a in v))
        return [a / n for a in v]

    negatives = queue.T.tolist()  # K columns of length D
    total = 0.0
    for q, k in zip(query.tolist(), key.tolist()):
        q, k = unit(q), unit(k)
        pos = sum(a * b for a, b in zip(q, k)) / t
        negs = [sum(a * b for a, b in zip(q, n)) / t for n in negatives]
        total += -pos + math.log(math.exp(pos) + sum(math.exp(x) for x in negs))
    return total / len(query)


def random_inputs(seed: int, b: int = 6, d: int = 5, k: int = 10):
    g = torch.Generator().manual_seed(seed)
    query, key = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    queue = F.normalize(torch.randn(d, k, generator=g), dim=0)
    return query, key, queue


def test_hand_computed_case() -> None:
    t = 0.2
    query = torch.tensor([[2.0, 0.0]])
    key = torch.tensor([[3.0, 4.0]])  # unit (0.6, 0.8)
    queue = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # columns (0, 1) and (-1, 0)
    expected = -0.6 / t + math.log(math.exp(0.6 / t) + math.exp(0.0) + math.exp(-1.0 / t))
    assert abs(moco_loss(query, key, queue, t).item() - expected) < 1e-5


def test_matches_loop_reference() -> None:
    query, key, queue = random_inputs(0)
    for t in (0.1, 0.5):
        loss = moco_loss(query, key, queue, t).item()
        assert abs(loss - reference_moco(query, key, queue, t)) < 1e-4


def test_invariant_to_batch_permutation_and_scale() -> None:
    query, key, queue = random_inputs(1)
    loss = moco_loss(query, key, queue)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert torch.allclose(moco_loss(query[perm], key[perm], queue), loss, atol=1e-6)
    assert torch.allclose(moco_loss(7.0 * query, 0.01 * key, queue), loss, atol=1e-5)


def test_gradient_into_query_only() -> None:
    query, key, queue = random_inputs(2)
    query.requires_grad_(True)
    key.requires_grad_(True)
    queue.requires_grad_(True)
    moco_loss(query, key, queue).backward()
    assert query.grad is not None and query.grad.abs().sum() > 0
    assert key.grad is None and queue.grad is None


def test_half_precision_inputs_give_float32_loss() -> None:
    query, key, queue = random_inputs(3)
    loss = moco_loss(query.bfloat16(), key.bfloat16(), queue.bfloat16())
    assert loss.dtype == torch.float32
    q, k, n = (x.bfloat16().float() for x in (query, key, queue))
    ref = reference_moco(q, k, n, 0.1)
    assert abs(loss.item() - ref) < 1e-4
