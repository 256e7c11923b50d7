"""SupCon: Supervised Contrastive Learning (Khosla et al., arXiv:2004.11362).

SimCLR's contrastive loss with positives from labels: every crop of every image of the same
class, gathered from every process with gradient, is a positive. Needs labelled data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from solo.config import ConfigError, check_positive
from solo.losses import supcon_loss
from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.registry import METHODS
from solo.nn import mlp


@dataclass
class SupConConfig:
    proj_hidden_dim: int = 2048  # paper, section 4: one hidden layer of 2048
    proj_output_dim: int = 128  # paper (solo-learn's YAMLs: 256 on CIFAR, 512 on ImageNet-100)
    temperature: float = 0.1  # paper, section 4 (solo-learn's YAMLs: 0.2)

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "temperature")


@METHODS.register("supcon")
class SupCon(BaseMethod):
    Config = SupConConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        if self.cfg.data.no_labels:
            raise ConfigError("data.no_labels: supcon learns from labels (its positives are the "
                              "images of the same class), and this data (or solo.Learner, which "
                              "sees no labels) has none; use a self-supervised method such as "
                              "simclr")
        num_crops = self.cfg.num_large_crops + self.cfg.num_small_crops
        if num_crops < 2:
            raise ValueError(f"supcon needs at least 2 crops per image (augmentations[*].num_crops), "
                             f"got {num_crops}")
        k = self.kwargs
        # Linear-ReLU-Linear without batch norm, solo-learn's layout
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim, batch_norm=False)

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        z = self.projector(torch.cat(batch.feats))  # (num_crops * B, D)
        crops = len(batch.feats)
        labels, indexes = batch.targets.repeat(crops), batch.indexes.repeat(crops)
        loss = supcon_loss(z, labels, indexes, self.kwargs.temperature,
                           check_positives=self.checks_inputs)
        return loss, {}
