"""VIbCReg: Variance-Invariance-better-Covariance Regularization for Self-Supervised Learning on
Time Series (Lee and Aune, arXiv:2109.00783).

VICReg with a covariance term on feature-normalized embeddings (weight 200) and an IterNorm
whitening layer (64 groups, 5 Newton steps) after the projector, whose activations are GELUs.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from solo.losses import vibcreg_loss
from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.registry import METHODS
from solo.methods.vicreg import VICRegConfig
from solo.nn import mlp
from solo.nn.iternorm import IterNorm


@dataclass
class VIbCRegConfig(VICRegConfig):
    cov_loss_weight: float = 200.0  # paper, section 3 (nu)
    iternorm: bool = False  # solo-learn's default; the paper and solo-learn's recipes turn it on


@METHODS.register("vibcreg")
class VIbCReg(BaseMethod):
    Config = VIbCRegConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        self.require_crops(large=2)
        k = self.kwargs
        # solo-learn's projector.0 ... projector.6, then IterNorm as projector.7 (or an Identity)
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim,
                             num_layers=3, activation=nn.GELU)
        self.projector.append(IterNorm(k.proj_output_dim, num_groups=64, T=5, dim=2)
                              if k.iternorm else nn.Identity())

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        z1, z2 = (self.projector(f) for f in batch.feats[:2])
        k = self.kwargs
        return vibcreg_loss(z1, z2, k.sim_loss_weight, k.var_loss_weight, k.cov_loss_weight), {}
