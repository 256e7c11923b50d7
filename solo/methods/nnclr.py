"""NNCLR: With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual
Representations (Dwibedi et al., arXiv:2104.14548).

SimCLR's contrastive loss, but each view's positive is the nearest neighbour of its projection in
a support queue of past normalized projections (of the first view), matched to the other view's
prediction; the queue keeps their labels to log how often the neighbour shares the class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from solo.config import check_positive
from solo.losses import nnclr_loss
from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.registry import METHODS
from solo.nn import mlp, nearest_neighbours


@dataclass
class NNCLRConfig:
    proj_hidden_dim: int = 2048  # paper, section 4.1 (and solo-learn's recipes)
    proj_output_dim: int = 256  # paper
    pred_hidden_dim: int = 4096  # paper
    temperature: float = 0.2  # solo-learn's recipes (the paper: 0.1)
    queue_size: int = 65536  # solo-learn's recipes and default (the paper: 98304)

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "pred_hidden_dim",
                       "temperature", "queue_size")


def nn_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """solo-learn's NNCLR / All4One projector: 3 Linear-BN layers, ReLU between, and a last BN
    with affine weights (keys projector.0 ... projector.7)."""
    return mlp(in_dim, hidden_dim, out_dim, num_layers=3).append(nn.BatchNorm1d(out_dim))


@METHODS.register("nnclr")
class NNCLR(BaseMethod):
    Config = NNCLRConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.require_crops(large=2, small=0)
        self.projector = nn_projector(self.num_features, k.proj_hidden_dim, k.proj_output_dim)
        self.predictor = mlp(k.proj_output_dim, k.pred_hidden_dim, k.proj_output_dim)
        # (K, D) normalized projections and their labels: solo-learn's queue, queue_y, queue_ptr
        self.support = self.add_queue(k.queue_size, k.proj_output_dim, labels=True)

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        z1, z2 = (self.projector(f) for f in batch.feats)
        p1, p2 = self.predictor(z1), self.predictor(z2)  # from the projections before the norm
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
        support = self.support.rows()  # before this step's projections join it
        (index1, nn1), (_, nn2) = (nearest_neighbours(z, support) for z in (z1, z2))
        t = self.kwargs.temperature
        loss = (nnclr_loss(nn1[:, 0], p2, t) + nnclr_loss(nn2[:, 0], p1, t)) / 2
        nn_acc = self.support.label_accuracy(index1[:, 0], batch.targets)
        self.support.push(z1.detach(), batch.targets)
        return loss, {"nn_acc": nn_acc}
