"""MoCo v2+: Improved Baselines with Momentum Contrastive Learning (Chen et al., arXiv:2003.04297).

InfoNCE of each view's query against the other view's momentum key and a queue of past keys;
the "+" is solo-learn's recipe: symmetric loss and a tau rising 0.99 -> 0.999.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo.config import check_positive
from solo.losses import moco_loss
from solo.methods.base import EncodedBatch
from solo.methods.momentum import MomentumMethod
from solo.methods.registry import METHODS
from solo.nn import mlp


@dataclass
class MoCoV2PlusConfig:
    proj_hidden_dim: int = 2048
    proj_output_dim: int = 128  # paper
    temperature: float = 0.2  # paper
    queue_size: int = 65536  # paper

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "temperature", "queue_size")


@METHODS.register("mocov2plus")
class MoCoV2Plus(MomentumMethod):
    Config = MoCoV2PlusConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.require_crops(large=2)
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim, batch_norm=False)
        self.momentum_projector = self.momentum_copy("projector")
        # one queue of keys per view, (2, D, K) as solo-learn's
        self.key_queue = self.add_queue(k.queue_size, k.proj_output_dim, copies=2, keys_last=True)

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        q1, q2 = (F.normalize(self.projector(f), dim=-1) for f in batch.feats[:2])
        k1, k2 = (F.normalize(self.momentum_projector(f), dim=-1) for f in batch.momentum_feats)
        queue = self.key_queue.keys.clone()  # (2, D, K), before this step's keys join it
        temperature = self.kwargs.temperature
        loss = (moco_loss(q1, k2, queue[1], temperature) + moco_loss(q2, k1, queue[0], temperature)) / 2
        self.key_queue.push(torch.stack((k1, k2)))
        return loss, {}
