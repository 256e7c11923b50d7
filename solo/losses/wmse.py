"""W-MSE: "Whitening for Self-Supervised Representation Learning" (Ermolov et al.),
arXiv:2007.06346.

The views' embeddings are whitened (Cholesky) in random sub-batches, which scatters them
without negatives; then every pair of views is pulled together by the MSE of the L2-normalized
whitened embeddings, 2 - 2 cos. Per process, as the paper and solo-learn.
"""

from __future__ import annotations

import torch
from torch import Tensor

from solo.losses.byol import byol_loss


def whiten(x: Tensor, eps: float = 0.0, check_singular: bool = True) -> Tensor:
    """x (N, D) centred and multiplied by L^-T, L the Cholesky factor of its unbiased covariance
    shrunk towards the identity, (1 - eps) cov + eps I: the result has that covariance's inverse
    applied, so its own covariance is I when eps is 0. In float32 whatever x's dtype.

    ``check_singular``: raise a ValueError when the covariance is singular (unchecked, the
    result means nothing: NaN or a partial factor's). The check reads the factorization's
    status back from the device (a host sync), so the method makes it on its first step only."""
    x = x.float()
    with torch.autocast(x.device.type, enabled=False):
        x = x - x.mean(dim=0)
        eye = torch.eye(x.size(1), device=x.device)
        cov = (1 - eps) * (x.T @ x) / (x.size(0) - 1) + eps * eye
        factor, info = torch.linalg.cholesky_ex(cov)  # no host sync unless checked
        if check_singular and bool(info):
            raise ValueError(f"whiten: the covariance of {x.size(0)} embeddings of width "
                             f"{x.size(1)} is singular; whitening_size must exceed the width, or "
                             "set whitening_eps > 0")
        return torch.linalg.solve_triangular(factor, x.T, upper=False).T


def wmse_loss(views: list[Tensor], whitening_size: int, whitening_iters: int = 1,
              whitening_eps: float = 0.0, check_singular: bool = True) -> Tensor:
    """W-MSE over every pair (i < j) of ``views`` (each (B, D), rows aligned by image).

    ``whitening_iters`` times, the B rows are split by a random permutation into sub-batches of
    ``whitening_size``; each view's rows of a sub-batch are whitened together, and the loss is
    the mean over iterations, sub-batches and pairs of the normalized MSE of the whitened rows,
    ``byol_loss`` (2 - 2 cos, the second view detached: solo-learn's default ``simplified``
    loss sends the gradient through the first view only), equal to solo-learn's mean over
    iterations and pairs of the whole-batch loss. B must be a multiple of ``whitening_size``.
    ``check_singular``: as in ``whiten``.
    """
    batch = views[0].size(0)
    if batch % whitening_size:
        raise ValueError(f"wmse: the batch of {batch} per process is not a multiple of "
                         f"method_kwargs.whitening_size={whitening_size}")
    total, count = views[0].new_zeros(()).float(), 0
    for _ in range(whitening_iters):
        for rows in torch.randperm(batch, device=views[0].device).view(-1, whitening_size):
            whitened = [whiten(v[rows], whitening_eps, check_singular) for v in views]
            for i in range(len(views)):
                for j in range(i + 1, len(views)):
                    total = total + byol_loss(whitened[i], whitened[j])
                    count += 1
    return total / count
