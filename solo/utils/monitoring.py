"""Values logged to watch a run's representations, computed without gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def normalized_std(z: Tensor) -> Tensor:
    """The mean per-dimension std of the L2-normalized rows of z (B, D): 0 when the embeddings
    collapse to one point, about 1/sqrt(D) when they spread over the sphere (SimSiam, figure 2;
    solo-learn logs it as ``z_std``)."""
    return F.normalize(z.detach().float(), dim=-1).std(dim=0).mean()
