"""SwAV: Unsupervised Learning of Visual Features by Contrasting Cluster Assignments (Caron et al.,
arXiv:2006.09882).

Online clustering instead of pairs: each large crop's projections get soft codes over learnable
prototypes from a few Sinkhorn-Knopp iterations (equal-sized clusters over the global batch, plus a
queue of past projections for small batches), and every other crop, small ones included, predicts
those codes from its own prototype scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo.config import check, check_positive
from solo.losses import local_share, sinkhorn_codes, swav_loss
from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.registry import METHODS
from solo.nn import FeatureQueue, Prototypes, mlp
from solo.utils.precision import full_float32


@dataclass
class SwAVConfig:
    proj_hidden_dim: int = 2048  # paper, appendix: 2048-d hidden layer
    proj_output_dim: int = 128  # paper: 128-d projections
    num_prototypes: int = 3000  # paper and solo-learn: 3000 prototypes
    sk_iters: int = 3  # paper, section 4: 3 Sinkhorn iterations
    sk_epsilon: float = 0.05  # paper: epsilon 0.05
    temperature: float = 0.1  # paper: tau 0.1
    # past projections per large crop, all processes together (0: no queue); solo-learn's default
    # (its YAMLs set 3840, the paper's queue for batches of 256)
    queue_size: int = 65536
    epoch_queue_starts: int = 15  # solo-learn and the official code: the queue joins at epoch 15
    freeze_prototypes_epochs: int = 1  # solo-learn and the paper: prototypes fixed in epoch 0

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "num_prototypes", "sk_iters",
                       "sk_epsilon", "temperature")
        for key in ("queue_size", "epoch_queue_starts", "freeze_prototypes_epochs"):
            value = getattr(self, key)
            check(value >= 0, key, f"must be >= 0, got {value}")


@METHODS.register("swav")
class SwAV(BaseMethod):
    Config = SwAVConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.require_crops(large=2, at_least=True)
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim)
        self.prototypes = Prototypes(k.proj_output_dim, k.num_prototypes)
        self.freeze_for_epochs(self.prototypes, k.freeze_prototypes_epochs)
        self.projection_queue: Optional[FeatureQueue] = None
        if k.queue_size > 0:
            # normalized projections of each large crop, (crops, size, D), solo-learn's "queue";
            # zeros until written, as solo-learn's
            self.projection_queue = self.add_queue(k.queue_size, k.proj_output_dim,
                                                   copies=self.num_large_crops)
            self.projection_queue.keys.zero_()

    @torch.no_grad()
    def cluster_codes(self, projections: list[Tensor]) -> list[Tensor]:
        """The Sinkhorn codes (B, K) of each large crop's normalized projections (B, D); from
        epoch ``epoch_queue_starts`` on, that crop's queue joins the Sinkhorn input and only the
        batch's own codes are kept."""
        k = self.kwargs
        queue = None
        if self.projection_queue is not None and self.current_epoch >= k.epoch_queue_starts:
            # every process holds the whole queue; each adds its share to the Sinkhorn input
            queue = [local_share(rows) for rows in self.projection_queue.rows()]
        prototypes = self.prototypes.weight.detach().float()
        codes = []
        for crop, z in enumerate(projections):
            rows = z.detach().float() if queue is None else torch.cat([z.detach(), queue[crop]])
            with full_float32(z.device.type):  # exp(score / 0.05) amplifies rounding 20-fold
                scores = rows.float() @ prototypes.T
            codes.append(sinkhorn_codes(scores, k.sk_iters, k.sk_epsilon)[: len(z)])
        return codes

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        z = [F.normalize(self.projector(f), dim=-1) for f in batch.feats]  # one (B, D) per crop
        large = z[: self.num_large_crops]
        codes = self.cluster_codes(large)  # before this step's projections join the queue
        loss = swav_loss([self.prototypes(zi) for zi in z], codes, self.kwargs.temperature)
        if self.projection_queue is not None:
            self.projection_queue.push(torch.stack(large).detach())
        return loss, {}

    def after_optimizer_step(self, step: int) -> None:
        super().after_optimizer_step(step)
        if self.current_epoch >= self.kwargs.freeze_prototypes_epochs:  # frozen: unchanged
            self.prototypes.normalize_()
