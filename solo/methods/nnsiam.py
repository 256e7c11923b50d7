"""NNSiam: SimSiam (arXiv:2011.10566) with NNCLR's nearest neighbours ("With a Little Help from
My Friends", Dwibedi et al., arXiv:2104.14548), solo-learn's combination.

Each view's prediction regresses the nearest neighbour of the other view's projection in a
support queue of past normalized projections (of the first view), instead of the projection
itself; the queue keeps their labels to log how often the neighbour shares the class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from solo.config import check_positive
from solo.losses import simsiam_loss
from solo.methods.base import EncodedBatch
from solo.methods.registry import METHODS
from solo.methods.simsiam import SimSiam, SimSiamConfig
from solo.nn import nearest_neighbours
from solo.utils.monitoring import normalized_std


@dataclass
class NNSiamConfig(SimSiamConfig):
    pred_hidden_dim: int = 4096  # solo-learn's cifar/nnsiam.yaml
    queue_size: int = 65536  # solo-learn's default (NNCLR's paper: 98304)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "queue_size")


@METHODS.register("nnsiam")
class NNSiam(SimSiam):
    Config = NNSiamConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        # (K, D) normalized projections and their labels, solo-learn's queue / queue_y
        self.support = self.add_queue(self.kwargs.queue_size, self.kwargs.proj_output_dim,
                                      labels=True)

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        z1, z2 = (self.projector(f) for f in batch.feats)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        queue = self.support.rows()  # before this step's projections join it
        (index1, nn1), (_, nn2) = (nearest_neighbours(z, queue) for z in (z1, z2))
        loss = (simsiam_loss(p1, nn2[:, 0]) + simsiam_loss(p2, nn1[:, 0])) / 2
        nn_acc = self.support.label_accuracy(index1[:, 0], batch.targets)
        self.support.push(F.normalize(z1.detach(), dim=-1), batch.targets)
        return loss, {"z_std": (normalized_std(z1) + normalized_std(z2)) / 2, "nn_acc": nn_acc}
