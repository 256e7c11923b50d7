"""All4One's redundancy-reduction term: "All4One: Symbiotic Neighbour Contrastive Learning via
Self-Attention and Redundancy Reduction", arXiv:2303.15860 (its "feature" objective).

Its other two terms are NNCLR's loss (solo/losses/nnclr.py): on the neighbours, and on the
transformer's neighbour-context embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from solo.utils.precision import full_float32


def _feature_correlation(target: Tensor, online: Tensor) -> Tensor:
    """(D, D) cosine between the feature columns of two (B, D) batches."""
    with full_float32(target.device.type):
        return F.normalize(target.float(), dim=0).T @ F.normalize(online.float(), dim=0)


def redundancy_loss(target1: Tensor, target2: Tensor, online1: Tensor, online2: Tensor,
                    scale: float = 10.0) -> Tensor:
    """Barlow-Twins-like decorrelation of the feature dimensions, as solo-learn's all4one.py.

    For each pairing (target of view 1, online projection of view 2) and (target 2, online 1),
    all (B, D), C is the cosine between each target feature column and each online column over
    the batch. The loss is ``scale * (sqrt(on) + sqrt(off)) / 2``, ``on`` the mean of (C_dd - 1)^2
    over the diagonals of both C, ``off`` the mean of C_de^2 over their off-diagonals. The targets
    (momentum projections) get no gradient. Computed on this process's batch only, as solo-learn
    does (no gather): with several processes it is the mean of per-process terms.
    """
    c1 = _feature_correlation(target1.detach(), online2)
    c2 = _feature_correlation(target2.detach(), online1)
    d = c1.shape[0]
    diagonal = torch.eye(d, dtype=torch.bool, device=c1.device)

    def off_diagonal_mean_square(c: Tensor) -> Tensor:
        # zeroing the diagonal, not selecting c[~diagonal]: a boolean selection's size is read
        # back from the device, a host sync every step
        return c.masked_fill(diagonal, 0).square().sum() / (d * d - d)

    on_diag = (((c1.diagonal() - 1) ** 2).mean() + ((c2.diagonal() - 1) ** 2).mean()) / 2
    off_diag = (off_diagonal_mean_square(c1) + off_diagonal_mean_square(c2)) / 2
    return scale * (on_diag.sqrt() + off_diag.sqrt()) / 2
