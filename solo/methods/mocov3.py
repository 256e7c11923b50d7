"""MoCo v3: An Empirical Study of Training Self-Supervised Vision Transformers (Chen, Xie, He,
arXiv:2104.02057).

No queue: each view's query (online projector + predictor) is contrasted with the other view's
momentum keys of the whole global batch, the loss scaled by 2T. Heads without biases, the
projector ending in an affine-free BN; ViTs get a 3-layer projector and a BN after the
predictor too (the paper's and solo-learn's heads), and MoCo v3's ViT variant (backbones/vit.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from solo.config import check_positive
from solo.losses import mocov3_loss
from solo.methods.base import EncodedBatch
from solo.methods.momentum import MomentumMethod
from solo.methods.registry import METHODS
from solo.nn import mlp


@dataclass
class MoCoV3Config:
    proj_hidden_dim: int = 4096  # paper, implementation details: 4096-d hidden layers
    proj_output_dim: int = 256  # paper: 256-d output
    pred_hidden_dim: int = 4096  # paper: the predictor's hidden layer is 4096-d too
    temperature: float = 0.2  # paper's ViT value; solo-learn's default for every backbone

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "pred_hidden_dim", "temperature")


@METHODS.register("mocov3")
class MoCoV3(MomentumMethod):
    Config = MoCoV3Config

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.require_crops(large=2, small=0)
        # solo-learn's rule: a ResNet gets 2-layer heads, any other backbone (ViT) the paper's
        # 3-layer projector and a predictor ending in BN as well
        convnet = "resnet" in self.cfg.backbone.name
        heads = {"batch_norm": True, "bias": False, "last_bias": False}
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim,
                             num_layers=2 if convnet else 3, last_batch_norm=True, **heads)
        self.momentum_projector = self.momentum_copy("projector")
        self.predictor = mlp(k.proj_output_dim, k.pred_hidden_dim, k.proj_output_dim,
                             last_batch_norm=not convnet, **heads)

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        q1, q2 = (self.predictor(self.projector(f)) for f in batch.feats)
        k1, k2 = (self.momentum_projector(f) for f in batch.momentum_feats)
        temperature = self.kwargs.temperature
        # summed, not averaged, as the paper's pseudocode and solo-learn
        return mocov3_loss(q1, k2, temperature) + mocov3_loss(q2, k1, temperature), {}
