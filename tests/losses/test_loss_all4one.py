"""All4One's redundancy term against loops over its definition, its invariances, its minimum and
its gradients (none into the momentum targets). It reduces nothing across processes (solo-learn
computes it per process), so it has no 2-process test; its other terms are NNCLR's loss."""

from __future__ import annotations

import math

import torch

from solo.losses import redundancy_loss


def reference(t1: torch.Tensor, t2: torch.Tensor, o1: torch.Tensor, o2: torch.Tensor) -> float:
    """10 * (sqrt(on) + sqrt(off)) / 2 with the column cosines written as sums."""
    def column_cosines(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
        n, d = len(a), len(a[0])
        norm_a = [math.sqrt(sum(a[i][c] ** 2 for i in range(n))) for c in range(d)]
        norm_b = [math.sqrt(sum(b[i][c] ** 2 for i in range(n))) for c in range(d)]
        return [[sum(a[i][c] * b[i][e] for i in range(n)) / (norm_a[c] * norm_b[e])
                 for e in range(d)] for c in range(d)]

    on, off = [], []
    for target, online in ((t1, o2), (t2, o1)):
        c = column_cosines(target.tolist(), online.tolist())
        d = len(c)
        on.append(sum((c[i][i] - 1) ** 2 for i in range(d)) / d)
        off.append(sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / (d * d - d))
    return 10 * (math.sqrt(sum(on) / 2) + math.sqrt(sum(off) / 2)) / 2


def data(batch: int = 9, dim: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=g, dtype=torch.float64) for _ in range(4)]


def test_matches_a_loop_over_its_definition() -> None:
    for seed in range(3):
        t1, t2, o1, o2 = data(seed=seed)
        assert math.isclose(float(redundancy_loss(t1, t2, o1, o2)), reference(t1, t2, o1, o2),
                            rel_tol=1e-5)


def test_invariances_and_minimum() -> None:
    t1, t2, o1, o2 = data()
    loss = redundancy_loss(t1, t2, o1, o2)
    order = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(redundancy_loss(t1[order], t2[order], o1[order], o2[order]), loss)
    # a positive scale per feature column (each is normalized over the batch) changes nothing
    scale = torch.tensor([0.5, 2.0, 3.0, 7.0], dtype=torch.float64)
    torch.testing.assert_close(redundancy_loss(t1 * scale, t2, o1, o2 * scale), loss)
    # orthonormal columns, the same for target and online: C = I, the loss is 0
    q, _ = torch.linalg.qr(torch.randn(9, 4, dtype=torch.float64))
    assert float(redundancy_loss(q, q, q, q)) < 1e-3  # sqrt of a float32 rounding


def test_gradients_reach_the_online_projections_only() -> None:
    t1, t2, o1, o2 = (x.clone().requires_grad_(True) for x in data())
    redundancy_loss(t1, t2, o1, o2).backward()
    assert t1.grad is None and t2.grad is None
    assert o1.grad.abs().sum() > 0 and o2.grad.abs().sum() > 0
