"""SimSiam's loss: "Exploring Simple Siamese Representation Learning", arXiv:2011.10566."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def simsiam_loss(p: Tensor, z: Tensor) -> Tensor:
    """Negative cosine similarity ``-cos(p, stopgrad(z))`` between predictions p (B, D) and
    projections z (B, D) of the other view, averaged over the batch; from -1 (same direction)
    to 1. z is detached: the stop-gradient that keeps SimSiam from collapsing."""
    # float32: cosine of half-precision inputs loses too many digits near 1
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1).mean()
