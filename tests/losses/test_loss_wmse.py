"""W-MSE (arXiv:2007.06346): Cholesky whitening against a loop-by-loop Cholesky factorization and
forward substitution, the loss against a reading of the paper's equation over sub-batches and
view pairs, solo-learn's gradient (through the first view of each pair only) and clear errors."""

from __future__ import annotations

import pytest
import torch

from solo.losses import wmse_loss
from solo.losses.wmse import whiten


def reference_whiten(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """x centred, then L^-1 x_b for every row, L the Cholesky factor of the shrunk unbiased
    covariance, by the textbook recurrences."""
    n, d = x.shape
    xc = x - x.mean(0)
    cov = [[(1 - eps) * sum(xc[b, i] * xc[b, j] for b in range(n)) / (n - 1)
            + (eps if i == j else 0) for j in range(d)] for i in range(d)]
    L = [[torch.tensor(0.0)] * d for _ in range(d)]
    for i in range(d):
        for j in range(i + 1):
            s = cov[i][j] - sum(L[i][k] * L[j][k] for k in range(j))
            L[i][j] = torch.sqrt(s) if i == j else s / L[j][j]
    rows = []
    for b in range(n):
        y = []
        for i in range(d):  # forward substitution: L y = xc_b
            y.append((xc[b, i] - sum(L[i][k] * y[k] for k in range(i))) / L[i][i])
        rows.append(torch.stack(y))
    return torch.stack(rows)


def reference_loss(views: list[torch.Tensor], size: int, perm: torch.Tensor) -> torch.Tensor:
    total, count = 0.0, 0
    for rows in perm.view(-1, size):
        w = [reference_whiten(v[rows]) for v in views]
        for i in range(len(views)):
            for j in range(i + 1, len(views)):
                for b in range(size):
                    a, c = w[i][b] / w[i][b].norm(), w[j][b] / w[j][b].norm()
                    total = total + ((a - c) ** 2).sum()
                    count += 1
    return total / count


def _views(n: int = 12, d: int = 3, k: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, d, generator=g)
    return [base + 0.5 * torch.randn(n, d, generator=g) for _ in range(k)]


def test_whitening_matches_the_loops_and_gives_identity_covariance() -> None:
    mix = torch.tensor([[2.0, 0, 0, 0], [1, 1, 0, 0], [0, 3, 1, 0], [1, 0, 0, 0.5]])
    x = _views(n=10, d=4)[0] @ mix
    w = whiten(x)
    torch.testing.assert_close(w, reference_whiten(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(w.T @ w / (len(w) - 1), torch.eye(4), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(whiten(x, 0.3), reference_whiten(x, 0.3), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [12, 6])
def test_loss_matches_the_equation_over_sub_batches_and_pairs(size: int) -> None:
    views = _views()
    torch.manual_seed(3)
    ours = wmse_loss(views, whitening_size=size)
    torch.manual_seed(3)
    perm = torch.randperm(12)
    torch.testing.assert_close(ours, reference_loss(views, size, perm), rtol=1e-4, atol=1e-5)
    if size == 12:  # one sub-batch: the permutation cannot matter
        torch.testing.assert_close(wmse_loss(views, 12, whitening_iters=3), ours)


def test_gradient_flows_through_the_first_view_of_each_pair_only() -> None:
    z1, z2 = (v.requires_grad_() for v in _views(k=2))
    wmse_loss([z1, z2], whitening_size=12).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad is None  # z2 only enters detached


def test_errors_name_the_cause() -> None:
    views = _views()
    with pytest.raises(ValueError, match="not a multiple of method_kwargs.whitening_size=5"):
        wmse_loss(views, whitening_size=5)
    with pytest.raises(ValueError, match="singular; whitening_size must exceed the width"):
        wmse_loss([v.repeat(1, 2) for v in views], whitening_size=3)  # 3 rows, 6 columns
    # unchecked (the method's steps after the first, which would wait for the device): no error,
    # and a value that means nothing
    unchecked = wmse_loss([v.repeat(1, 2) for v in views], whitening_size=3, check_singular=False)
    assert unchecked.shape == ()
