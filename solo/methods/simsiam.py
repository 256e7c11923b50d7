"""SimSiam: Exploring Simple Siamese Representation Learning (Chen, He, arXiv:2011.10566).

One network, no negatives, no momentum encoder: each view's prediction regresses the other
view's projection through a stop-gradient. The predictor keeps a fixed lr (paper, section 4.2:
"works better"), the projector ends in an affine-free BN.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from solo.config import check_positive
from solo.losses import simsiam_loss
from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.registry import METHODS
from solo.nn import mlp
from solo.utils.monitoring import normalized_std
from solo.utils.optim import GroupOptions


@dataclass
class SimSiamConfig:
    proj_hidden_dim: int = 2048  # paper, section 3: 2048-d hidden layers
    proj_output_dim: int = 2048  # paper: 2048-d output
    pred_hidden_dim: int = 512  # paper: the predictor's bottleneck
    # read by nothing: solo-learn's simsiam.yaml sets it and solo-learn ignores it too
    temperature: float = 0.2

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "pred_hidden_dim")


@METHODS.register("simsiam")
class SimSiam(BaseMethod):
    Config = SimSiamConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.require_crops(large=2, small=0)
        # solo-learn's layout: no bias before the hidden BNs; the last Linear keeps a bias that
        # the affine-free BN after it cancels, frozen as solo-learn freezes it
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim,
                             num_layers=3, last_batch_norm=True, bias=False)
        self.projector[-2].bias.requires_grad_(False)
        self.predictor = mlp(k.proj_output_dim, k.pred_hidden_dim, k.proj_output_dim, bias=False)

    def param_group_options(self) -> dict[str, GroupOptions]:
        return {**super().param_group_options(), "predictor": GroupOptions(fixed_lr=True)}

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        z1, z2 = (self.projector(f) for f in batch.feats)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = (simsiam_loss(p1, z2) + simsiam_loss(p2, z1)) / 2
        return loss, {"z_std": (normalized_std(z1) + normalized_std(z2)) / 2}
