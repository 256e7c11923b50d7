"""Barlow Twins' redundancy reduction: "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", arXiv:2103.03230.

The cross-correlation of the two views' batch-normalized projections is pulled to the identity:
its diagonal to 1 (invariance), its off-diagonal, weighted by ``lamb``, to 0 (redundancy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from solo.utils.distributed import sum_with_grad, world_size
from solo.utils.precision import full_float32


def standardize(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Each feature of z (B, D) to zero mean and unit (biased) variance over this process's batch:
    an affine-free BatchNorm1d in training mode, created afresh (no running statistics)."""
    return F.batch_norm(z, None, None, training=True, eps=eps)


def barlow_loss(z1: Tensor, z2: Tensor, lamb: float = 0.0051, scale_loss: float = 0.024) -> Tensor:
    """``scale_loss * (sum_i (1 - C_ii)^2 + lamb * sum_{i != j} C_ij^2)``, where C (D, D) is the
    cross-correlation of the standardized z1 and z2 (B, D) over the global batch: the per-process
    sums z1^T z2 are added over all processes (with gradient) and divided by the global batch.

    Each process standardizes its own batch, as solo-learn does (its loss builds a fresh
    BatchNorm1d, which sync_batchnorm never converts). Every process must pass the same B.
    """
    z1, z2 = standardize(z1.float()), standardize(z2.float())
    with full_float32(z1.device.type):
        corr = sum_with_grad(z1.T @ z2) / (z1.size(0) * world_size())  # (D, D)
    diag = torch.diagonal(corr)
    on_diag = (diag - 1).pow(2).sum()
    off_diag = corr.pow(2).sum() - diag.pow(2).sum()
    return scale_loss * (on_diag + lamb * off_diag)
