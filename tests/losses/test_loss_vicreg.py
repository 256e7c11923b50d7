"""VICReg's loss (arXiv:2105.04906, section 3) and VIbCReg's (arXiv:2109.00783) against
loop-by-loop references, their symmetry in the views, and both on 2 gloo processes: variance and
covariance over the gathered batch, so the mean loss and the averaged gradients equal one
process's on the global batch."""

from __future__ import annotations

import math

import torch

from solo.losses import vibcreg_loss, vicreg_loss
from tests.multiprocess import average_gradients, run_processes

B, D, WIDTH = 5, 4, 3  # per-process batch, embedding width, input width


def _column(z: torch.Tensor, i: int) -> list:
    return [z[b, i] for b in range(z.size(0))]


def _centred(z: torch.Tensor, i: int) -> list:
    col = _column(z, i)
    mean = sum(col) / len(col)
    return [v - mean for v in col]


def reference(z1: torch.Tensor, z2: torch.Tensor, weights: tuple[float, float, float],
              normalized: bool) -> torch.Tensor:
    n, d = z1.shape
    sim = sum((z1[b, i] - z2[b, i]) ** 2 for b in range(n) for i in range(d)) / (n * d)
    var = cov = 0.0
    for z in (z1, z2):
        for i in range(d):
            c = _centred(z, i)
            std = torch.sqrt(sum(v * v for v in c) / (n - 1) + 1e-4)
            var = var + torch.relu(1 - std) / d
        for i in range(d):
            for j in range(d):
                if i == j:
                    continue
                ci, cj = _centred(z, i), _centred(z, j)
                dot = sum(a * b for a, b in zip(ci, cj))
                if normalized:  # VIbCReg: the correlation, each centred column of unit norm
                    norm_i = torch.sqrt(sum(a * a for a in ci))
                    norm_j = torch.sqrt(sum(b * b for b in cj))
                    cov = cov + (dot / (norm_i * norm_j)) ** 2 / (d * d)
                else:
                    cov = cov + (dot / (n - 1)) ** 2 / d
    return weights[0] * sim + weights[1] * var + weights[2] * cov


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(2 * B, WIDTH, generator=g), torch.randn(2 * B, WIDTH, generator=g)
    return x1, x2, 0.3 * torch.randn(WIDTH, D, generator=g)  # std below 1: the hinge is active


LOSSES = {"vicreg": (vicreg_loss, (25.0, 25.0, 1.0), False),
          "vibcreg": (vibcreg_loss, (25.0, 25.0, 200.0), True)}


def test_values_and_gradients_match_the_equations() -> None:
    x1, x2, w = _inputs()
    for name, (loss_fn, weights, normalized) in LOSSES.items():
        w1, w2 = w.clone().requires_grad_(), w.clone().requires_grad_()
        ours = loss_fn(x1 @ w1, x2 @ w1, *weights)
        expected = reference(x1 @ w2, x2 @ w2, weights, normalized)
        torch.testing.assert_close(ours, expected, msg=name)
        ours.backward(), expected.backward()
        torch.testing.assert_close(w1.grad, w2.grad, msg=name)


def test_symmetric_in_the_views_and_zero_for_ideal_embeddings() -> None:
    x1, x2, w = _inputs()
    for loss_fn, weights, _ in LOSSES.values():
        torch.testing.assert_close(loss_fn(x1 @ w, x2 @ w, *weights),
                                   loss_fn(x2 @ w, x1 @ w, *weights))
    # equal views with orthogonal centred columns of std 2: no invariance, variance or covariance
    a = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    z, _ = torch.linalg.qr(a - a.mean(0))  # orthogonal columns, still centred
    z = z / z.std(0) * 2
    assert float(vicreg_loss(z, z)) < 1e-6 and float(vibcreg_loss(z, z)) < 1e-6


def _worker(rank: int, world: int) -> dict:
    x1, x2, w = _inputs()
    rows = slice(rank * B, (rank + 1) * B)
    out = {}
    for name, (loss_fn, weights, _) in LOSSES.items():
        w_ = w.clone().requires_grad_()
        loss = loss_fn(x1[rows] @ w_, x2[rows] @ w_, *weights)
        loss.backward()
        out[name] = (loss.detach(), average_gradients([w_])[0])
    return out


def test_two_processes_equal_one_process_on_the_global_batch() -> None:
    x1, x2, w = _inputs()
    results = run_processes(_worker)
    for name, (loss_fn, weights, _) in LOSSES.items():
        w_ = w.clone().requires_grad_()
        expected = loss_fn(x1 @ w_, x2 @ w_, *weights)
        expected.backward()
        # each process's invariance term is its own half's; their mean is the whole batch's
        mean_loss = sum(r[name][0] for r in results) / len(results)
        torch.testing.assert_close(mean_loss, expected.detach(), msg=name)
        for r in results:
            torch.testing.assert_close(r[name][1], w_.grad, msg=name)
    assert math.isfinite(float(mean_loss))
