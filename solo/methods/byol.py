"""BYOL: Bootstrap Your Own Latent (Grill et al., arXiv:2006.07733).

An online network with a predictor regresses the projection of a momentum (EMA) network on the
other view; no negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from solo.config import check_positive
from solo.losses import byol_loss
from solo.methods.base import EncodedBatch
from solo.methods.momentum import MomentumMethod
from solo.methods.registry import METHODS
from solo.nn import mlp


@dataclass
class BYOLConfig:
    proj_hidden_dim: int = 4096  # paper, section 3.3
    proj_output_dim: int = 256  # paper
    pred_hidden_dim: int = 4096  # paper: the predictor mirrors the projector

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "pred_hidden_dim")


@METHODS.register("byol")
class BYOL(MomentumMethod):
    Config = BYOLConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim)
        self.momentum_projector = self.momentum_copy("projector")
        self.predictor = mlp(k.proj_output_dim, k.pred_hidden_dim, k.proj_output_dim)

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        predictions = [self.predictor(self.projector(f)) for f in batch.feats]
        targets = [self.momentum_projector(f) for f in batch.momentum_feats]
        # every crop predicts every large crop but its own; summed, as the paper's symmetrized loss
        loss = sum(byol_loss(p, z) for i, p in enumerate(predictions)
                   for j, z in enumerate(targets) if i != j)
        return loss, {}
