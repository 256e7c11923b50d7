"""Learnable prototypes (cluster centres) on the unit sphere: SwAV's and DeepCluster v2's last
layer, whose output is the cosine of a normalized embedding with every prototype."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Prototypes(nn.Linear):
    """A bias-free Linear (dim -> num_prototypes) whose weight rows are the prototypes, kept unit
    length by ``normalize_``: called after every optimizer step (SwAV's official code normalizes
    them before every forward, the same thing one step earlier), so that for a normalized input
    each output is a cosine similarity in [-1, 1]. Built already normalized; its single
    parameter is ``weight`` (num_prototypes, dim), the official SwAV checkpoints' key."""

    def __init__(self, dim: int, num_prototypes: int) -> None:
        super().__init__(dim, num_prototypes, bias=False)
        self.normalize_()

    @property
    def num_prototypes(self) -> int:
        return self.out_features

    @torch.no_grad()
    def normalize_(self) -> None:
        """Every prototype (weight row) scaled to unit L2 norm, in place."""
        self.weight.copy_(F.normalize(self.weight, dim=1))
