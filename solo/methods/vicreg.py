"""VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning (Bardes et
al., arXiv:2105.04906).

Two views' projections are pulled together (MSE) while each view's features are kept from
collapsing (standard deviation above 1) and decorrelated (off-diagonal covariance to 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from solo.config import check, check_positive
from solo.losses import vicreg_loss
from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.registry import METHODS
from solo.nn import mlp


@dataclass
class VICRegConfig:
    proj_hidden_dim: int = 2048  # solo-learn's CIFAR and ImageNet-100 recipes (paper: 8192)
    proj_output_dim: int = 2048  # solo-learn's recipes (paper: 8192)
    sim_loss_weight: float = 25.0  # paper, section 4.2 (lambda)
    var_loss_weight: float = 25.0  # paper (mu)
    cov_loss_weight: float = 1.0  # paper (nu)

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim")
        for key in ("sim_loss_weight", "var_loss_weight", "cov_loss_weight"):
            check(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")


@METHODS.register("vicreg")
class VICReg(BaseMethod):
    Config = VICRegConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        self.require_crops(large=2)
        k = self.kwargs
        # Linear-BN-ReLU-Linear-BN-ReLU-Linear, solo-learn's projector.0 ... projector.6
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim, num_layers=3)

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        z1, z2 = (self.projector(f) for f in batch.feats[:2])
        k = self.kwargs
        return vicreg_loss(z1, z2, k.sim_loss_weight, k.var_loss_weight, k.cov_loss_weight), {}
