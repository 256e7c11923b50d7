"""ReSSL: Relational Self-Supervised Learning with Weak Augmentation (Zheng et al.,
arXiv:2107.09282).

No positives or negatives: the online network's relation (similarity distribution) of a strong
view to a queue of past keys learns the momentum network's sharper relation of a weak view (crop
and flip only). Asymmetric, as solo-learn: queries from the first view, keys from the second.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from solo.config import check_positive
from solo.losses.ressl import key_relation, relation_cross_entropy, relation_entropy_of
from solo.methods.base import EncodedBatch
from solo.methods.momentum import MomentumMethod
from solo.methods.registry import METHODS
from solo.nn import mlp


@dataclass
class ReSSLConfig:
    proj_hidden_dim: int = 4096  # solo-learn's scripts/pretrain/cifar/ressl.yaml
    proj_output_dim: int = 256  # solo-learn's recipe
    temperature_q: float = 0.1  # paper: the student's (online) temperature
    # paper: the teacher's, below temperature_q to sharpen the target (a larger one is allowed,
    # as in the paper's ablation, but the target then is flatter than the prediction)
    temperature_k: float = 0.04
    queue_size: int = 65536  # paper and solo-learn's default

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "temperature_q",
                       "temperature_k", "queue_size")


@METHODS.register("ressl")
class ReSSL(MomentumMethod):
    Config = ReSSLConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.require_crops(large=2)  # a strong view, then a weak one
        # Linear-ReLU-Linear without batch norm, solo-learn's layout
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim,
                             batch_norm=False)
        self.momentum_projector = self.momentum_copy("projector")
        # solo-learn's buffers: queue (K, D) and queue_ptr
        self.key_queue = self.add_queue(k.queue_size, k.proj_output_dim)

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        query = self.projector(batch.feats[0])  # the strong view
        key = F.normalize(self.momentum_projector(batch.momentum_feats[1]), dim=-1)  # the weak one
        queue = self.key_queue.rows()  # (K, D), before this step's keys join it
        k = self.kwargs
        log_target = key_relation(key, queue, k.temperature_k)  # once, for the loss and the log
        loss = relation_cross_entropy(query, queue, log_target, k.temperature_q)
        # the loss's floor: how sharp the target is (logged; near log K means uniform)
        target_entropy = relation_entropy_of(log_target)
        self.key_queue.push(key)
        return loss, {"target_entropy": target_entropy}
