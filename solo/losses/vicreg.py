"""VICReg: "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
arXiv:2105.04906.

Invariance (MSE between the views' projections, on this process's batch), variance (a hinge
keeping every feature's standard deviation above 1) and covariance (off-diagonal covariances to
0), the last two over the batch gathered from every process, as the official code and solo-learn.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from solo.utils.distributed import gather_with_grad


def invariance_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """Mean squared error over every element of z1 and z2 (B, D)."""
    return F.mse_loss(z1, z2)


def variance_loss(z: Tensor, eps: float = 1e-4) -> Tensor:
    """Mean over features of max(0, 1 - sqrt(Var + eps)), the variance unbiased, over dim 0."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1 - std).mean()


def off_diagonal(m: Tensor) -> Tensor:
    """The off-diagonal entries of a square matrix, flattened."""
    n = m.size(0)
    return m.flatten()[1:].view(n - 1, n + 1)[:, :-1].flatten()


def covariance_loss(z: Tensor) -> Tensor:
    """Sum of the squared off-diagonal entries of z's (B, D) unbiased covariance, divided by D."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = z.T @ z / (n - 1)
    return off_diagonal(cov).pow(2).sum() / d


def vicreg_loss(z1: Tensor, z2: Tensor, sim_loss_weight: float = 25.0,
                var_loss_weight: float = 25.0, cov_loss_weight: float = 1.0,
                covariance: Callable[[Tensor], Tensor] = covariance_loss) -> Tensor:
    """The weighted sum of the three terms, variance and ``covariance`` summed over both views
    (VIbCReg passes its normalized covariance). Every process must pass the same B (the gather
    needs equal shapes)."""
    z1, z2 = z1.float(), z2.float()
    sim = invariance_loss(z1, z2)
    z1, z2 = gather_with_grad(z1), gather_with_grad(z2)  # (world * B, D)
    var = variance_loss(z1) + variance_loss(z2)
    cov = covariance(z1) + covariance(z2)
    return sim_loss_weight * sim + var_loss_weight * var + cov_loss_weight * cov
