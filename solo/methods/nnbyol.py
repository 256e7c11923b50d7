"""NNBYOL: BYOL (arXiv:2006.07733) with NNCLR's nearest neighbours ("With a Little Help from My
Friends", Dwibedi et al., arXiv:2104.14548), solo-learn's combination.

Each view's prediction regresses the nearest neighbour of the other view's momentum projection in
a support queue of past normalized momentum projections (of the first view), instead of the
momentum projection itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from solo.config import check_positive
from solo.losses import byol_loss
from solo.methods.base import EncodedBatch
from solo.methods.momentum import MomentumMethod
from solo.methods.registry import METHODS
from solo.nn import mlp, nearest_neighbours
from solo.utils.monitoring import normalized_std


@dataclass
class NNBYOLConfig:
    proj_hidden_dim: int = 4096  # solo-learn's cifar/nnbyol.yaml (BYOL's heads, section 3.3)
    proj_output_dim: int = 256  # BYOL
    pred_hidden_dim: int = 4096  # solo-learn's cifar/nnbyol.yaml
    queue_size: int = 65536  # solo-learn's default and recipe

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "pred_hidden_dim", "queue_size")


@METHODS.register("nnbyol")
class NNBYOL(MomentumMethod):
    Config = NNBYOLConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.require_crops(large=2, small=0)
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim)
        self.momentum_projector = self.momentum_copy("projector")
        self.predictor = mlp(k.proj_output_dim, k.pred_hidden_dim, k.proj_output_dim)
        # (K, D) normalized momentum projections and their labels: queue, queue_y, queue_ptr
        self.support = self.add_queue(k.queue_size, k.proj_output_dim, labels=True)

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        z1, z2 = (self.projector(f) for f in batch.feats)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        t1, t2 = (F.normalize(self.momentum_projector(f), dim=-1) for f in batch.momentum_feats)
        support = self.support.rows()  # before this step's projections join it
        (index1, nn1), (_, nn2) = (nearest_neighbours(t, support) for t in (t1, t2))
        # summed over the two directions, as solo-learn's nnbyol.py (and BYOL's symmetric loss)
        loss = byol_loss(p1, nn2[:, 0]) + byol_loss(p2, nn1[:, 0])
        nn_acc = self.support.label_accuracy(index1[:, 0], batch.targets)
        self.support.push(t1.detach(), batch.targets)
        z_std = (normalized_std(z1) + normalized_std(z2)) / 2
        return loss, {"nn_acc": nn_acc, "z_std": z_std}
