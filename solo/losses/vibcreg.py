"""VIbCReg: "VIbCReg: Variance-Invariance-better-Covariance Regularization for Self-Supervised
Learning on Time Series" (Lee and Aune), arXiv:2109.00783.

VICReg's invariance and variance terms, and a covariance term on feature-normalized embeddings
(a correlation matrix, so its weight does not depend on the features' scale), over the batch
gathered from every process, as solo-learn.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from solo.losses.vicreg import off_diagonal, vicreg_loss


def normalized_covariance_loss(z: Tensor) -> Tensor:
    """Mean over all D x D entries (the diagonal counted as 0) of the squared correlation matrix
    of z (B, D): each centred feature scaled to unit L2 norm over the batch."""
    d = z.size(1)
    z = F.normalize(z - z.mean(dim=0), dim=0)
    return off_diagonal(z.T @ z).pow(2).sum() / (d * d)


def vibcreg_loss(z1: Tensor, z2: Tensor, sim_loss_weight: float = 25.0,
                 var_loss_weight: float = 25.0, cov_loss_weight: float = 200.0) -> Tensor:
    """VICReg's loss with the normalized covariance (invariance on this process's batch; variance
    and covariance over every process's, summed over both views). Every process must pass the
    same B."""
    return vicreg_loss(z1, z2, sim_loss_weight, var_loss_weight, cov_loss_weight,
                       covariance=normalized_covariance_loss)
