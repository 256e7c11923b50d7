"""SimCLR: A Simple Framework for Contrastive Learning (Chen et al., arXiv:2002.05709).

NT-Xent over all crops; negatives are gathered from every process, with gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from solo.config import check_positive
from solo.losses import nt_xent_loss
from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.registry import METHODS
from solo.nn import mlp


@dataclass
class SimCLRConfig:
    proj_hidden_dim: int = 2048
    proj_output_dim: int = 128  # paper, appendix B.9
    temperature: float = 0.1  # paper's best for large batches (table 5)

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "temperature")


@METHODS.register("simclr")
class SimCLR(BaseMethod):
    Config = SimCLRConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        num_crops = self.cfg.num_large_crops + self.cfg.num_small_crops
        if num_crops < 2:
            raise ValueError(f"simclr needs at least 2 crops per image (augmentations[*].num_crops), "
                             f"got {num_crops}")
        # no batch norm in the head: solo-learn's recipe, whose CIFAR accuracies we match
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim, batch_norm=False)

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        z = self.projector(torch.cat(batch.feats))  # (num_crops * B, D)
        indexes = batch.indexes.repeat(len(batch.feats))
        loss = nt_xent_loss(z, indexes, self.kwargs.temperature,
                            check_positives=self.checks_inputs)
        return loss, {}
