"""Barlow Twins' loss against a loop-by-loop reading of the paper's equation (arXiv:2103.03230,
section 2), its invariance to the order of the batch, and the gathered version on 2 gloo
processes: the cross-correlation is summed over processes, the batch norm is per process (as
solo-learn's loss, whose BatchNorm1d is made inside it and so never synchronized)."""

from __future__ import annotations

import torch

from solo.losses import barlow_loss
from tests.multiprocess import average_gradients, run_processes

B, D, WIDTH = 6, 5, 4  # per-process batch, embedding width, input width


def reference(z1: torch.Tensor, z2: torch.Tensor, lamb: float, scale: float,
              groups: int = 1) -> torch.Tensor:
    """Each of ``groups`` equal slices of the batch standardized on its own (one per process),
    then C_ij = sum_b z1_bi z2_bj / N over the whole batch, and the paper's sum."""
    n = z1.size(0)
    size = n // groups

    def standardize(z: torch.Tensor) -> torch.Tensor:
        rows = []
        for g in range(groups):
            part = z[g * size:(g + 1) * size]
            cols = []
            for i in range(z.size(1)):
                x = part[:, i]
                mean = sum(x) / size
                var = sum((v - mean) ** 2 for v in x) / size  # biased, as batch norm
                cols.append((x - mean) / torch.sqrt(var + 1e-5))
            rows.append(torch.stack(cols, dim=1))
        return torch.cat(rows)

    a, b = standardize(z1), standardize(z2)
    loss = 0.0
    for i in range(z1.size(1)):
        for j in range(z1.size(1)):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss = loss + ((1 - c) ** 2 if i == j else lamb * c ** 2)
    return scale * loss


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(2 * B, WIDTH, generator=g), torch.randn(2 * B, WIDTH, generator=g)
    return x1, x2, torch.randn(WIDTH, D, generator=g)


def test_value_and_gradient_match_the_equation() -> None:
    x1, x2, w = _inputs()
    w1, w2 = w.clone().requires_grad_(), w.clone().requires_grad_()
    ours = barlow_loss(x1[:B] @ w1, x2[:B] @ w1, lamb=0.3, scale_loss=0.5)
    expected = reference(x1[:B] @ w2, x2[:B] @ w2, 0.3, 0.5)
    torch.testing.assert_close(ours, expected)
    ours.backward(), expected.backward()
    torch.testing.assert_close(w1.grad, w2.grad)


def test_permuting_the_batch_and_perfect_views() -> None:
    x1, x2, w = _inputs()
    z1, z2 = x1 @ w, x2 @ w
    perm = torch.randperm(len(z1), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(barlow_loss(z1[perm], z2[perm]), barlow_loss(z1, z2))
    # identical, decorrelated views (orthogonal standardized columns): C = I, loss 0
    a = torch.randn(64, 4, generator=torch.Generator().manual_seed(2))
    z, _ = torch.linalg.qr(a - a.mean(0))  # orthogonal columns, still centred
    assert float(barlow_loss(z, z)) < 1e-4


def _worker(rank: int, world: int) -> dict:
    x1, x2, w = _inputs()
    w.requires_grad_(True)
    rows = slice(rank * B, (rank + 1) * B)
    loss = barlow_loss(x1[rows] @ w, x2[rows] @ w, lamb=0.3, scale_loss=0.5)
    loss.backward()
    return {"loss": loss.detach(), "grad": average_gradients([w])[0]}


def test_two_processes_equal_one_process_with_per_process_batch_norm() -> None:
    x1, x2, w = _inputs()
    w.requires_grad_(True)
    expected = reference(x1 @ w, x2 @ w, 0.3, 0.5, groups=2)
    expected.backward()
    for result in run_processes(_worker):
        torch.testing.assert_close(result["loss"], expected.detach())
        torch.testing.assert_close(result["grad"], w.grad)
