"""BYOL's loss: "Bootstrap your own latent", arXiv:2006.07733."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """Normalized MSE ``2 - 2 cos(p, z)`` between predictions p (B, D) and targets z (B, D).

    z comes from the momentum network and is detached: only the online branch learns.
    Averaged over the batch; ranges from 0 (same direction) to 4 (opposite).
    """
    # float32: cosine of half-precision inputs loses too many digits near 1
    cos = F.cosine_similarity(p.float(), z.detach().float(), dim=-1)
    return (2 - 2 * cos).mean()
