"""Barlow Twins: Self-Supervised Learning via Redundancy Reduction (Zbontar et al.,
arXiv:2103.03230).

No negatives, no momentum network, no predictor: the cross-correlation of the two views'
batch-normalized projections, over the global batch, is pulled to the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from solo.config import check, check_positive
from solo.losses import barlow_loss
from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.registry import METHODS
from solo.nn import mlp


@dataclass
class BarlowTwinsConfig:
    proj_hidden_dim: int = 2048  # solo-learn's CIFAR and ImageNet-100 recipes (paper: 8192)
    proj_output_dim: int = 2048  # solo-learn's recipes (paper: 8192)
    lamb: float = 0.0051  # paper, section 2 (lambda); solo-learn's default
    scale_loss: float = 0.024  # solo-learn's default (its CIFAR recipe: 0.1)

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "scale_loss")
        check(self.lamb >= 0, "lamb", f"must be >= 0, got {self.lamb}")


@METHODS.register("barlow_twins")
class BarlowTwins(BaseMethod):
    Config = BarlowTwinsConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        self.require_crops(large=2)
        k = self.kwargs
        # Linear-BN-ReLU-Linear-BN-ReLU-Linear, solo-learn's projector.0 ... projector.6
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim, num_layers=3)

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        # the large crops only: solo-learn projects no small crop
        z1, z2 = (self.projector(f) for f in batch.feats[:2])
        return barlow_loss(z1, z2, self.kwargs.lamb, self.kwargs.scale_loss), {}
