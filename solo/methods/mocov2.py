"""MoCo v2: Improved Baselines with Momentum Contrastive Learning (Chen et al., arXiv:2003.04297),
as the official code (facebookresearch/moco, ``--mlp --aug-plus --cos``) runs it.

MoCo v1 (one direction, Shuffle BN, constant momentum) with a 2-layer MLP head and T 0.2; the
blur augmentation and the cosine schedule are in the recipes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from solo.config import check_positive
from solo.methods.mocov1 import MoCoV1, MoCoV1Config
from solo.methods.registry import METHODS
from solo.nn import mlp


@dataclass
class MoCoV2Config(MoCoV1Config):
    # official builder: Linear(C, C)-ReLU-Linear(C, 128), C the ResNet-50's 2048 features
    proj_hidden_dim: int = 2048
    temperature: float = 0.2  # paper, table 1 / official README

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "proj_hidden_dim")


@METHODS.register("mocov2")
class MoCoV2(MoCoV1):
    Config = MoCoV2Config

    def build_projector(self) -> nn.Module:
        k = self.kwargs  # keys projector.0 / projector.2, as the official fc.0 / fc.2
        return mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim, batch_norm=False)
