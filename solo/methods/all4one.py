"""All4One: Symbiotic Neighbour Contrastive Learning via Self-Attention and Redundancy Reduction
(Estepa et al., arXiv:2303.15860).

Three terms on a support queue of past momentum projections: NNCLR's loss on each view's
nearest neighbour; the same contrast between two transformer summaries of a view's 5 nearest
neighbours, one of them "shifted" so that the other view's second prediction takes the first
place; and a redundancy reduction between the feature dimensions of online and momentum
projections. solo-learn's all4one.py is followed module for module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo.config import check, check_positive
from solo.losses import nnclr_loss, redundancy_loss
from solo.methods.base import EncodedBatch
from solo.methods.momentum import MomentumMethod
from solo.methods.nnclr import nn_projector
from solo.methods.registry import METHODS
from solo.nn import mlp, nearest_neighbours
from solo.nn.positional import PositionalEncodingSum
from solo.utils.monitoring import normalized_std
from solo.utils.optim import GroupOptions

HEADS, LAYERS, DROPOUT = 8, 3, 0.1  # solo-learn's all4one.py: the transformer's fixed shape


@dataclass
class All4OneConfig:
    proj_hidden_dim: int = 2048  # solo-learn's cifar/all4one.yaml (NNCLR's heads)
    proj_output_dim: int = 256  # the yaml; also the transformer's width (8 heads divide it)
    pred_hidden_dim: int = 4096  # the yaml
    temperature: float = 0.2  # the yaml: the NNCLR term's
    attention_temperature: float = 0.1  # solo-learn's all4one.py: nnclr_loss_func's default
    queue_size: int = 65536  # solo-learn's default (its cifar/all4one.yaml: 98304)
    num_neighbours: int = 5  # paper and solo-learn: the transformer's sequence length
    nnclr_weight: float = 0.5  # solo-learn's all4one.py: 0.5 for each of the three terms
    attention_weight: float = 0.5
    redundancy_weight: float = 0.5
    transformer_lr: float = 0.1  # solo-learn: the transformer's group lr, not batch-scaled
    transformer_fixed_lr: bool = False  # True: no schedule for it (solo-learn schedules it)

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "pred_hidden_dim",
                       "temperature", "attention_temperature", "queue_size", "transformer_lr")
        check(self.num_neighbours >= 2, "num_neighbours",
              f"must be >= 2 (the shifted sequence keeps num_neighbours - 1), got "
              f"{self.num_neighbours}")
        check(self.proj_output_dim % HEADS == 0, "proj_output_dim",
              f"must be a multiple of the transformer's {HEADS} heads, got {self.proj_output_dim}")
        for key in ("nnclr_weight", "attention_weight", "redundancy_weight"):
            check(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")


@METHODS.register("all4one")
class All4One(MomentumMethod):
    Config = All4OneConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.require_crops(large=2, small=0)
        dim = k.proj_output_dim
        self.projector = nn_projector(self.num_features, k.proj_hidden_dim, dim)
        self.momentum_projector = self.momentum_copy("projector")
        self.predictor = mlp(dim, k.pred_hidden_dim, dim)
        self.predictor2 = mlp(dim, k.pred_hidden_dim, dim)  # feeds the shifted sequences
        layer = nn.TransformerEncoderLayer(dim, HEADS, dim_feedforward=2 * dim, dropout=DROPOUT,
                                           batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.pos_enc = PositionalEncodingSum(k.num_neighbours)
        # normalized momentum projections with labels and dataset indexes, as solo-learn's
        # queue, queue_y, queue_ptr and queue_index (written, read by no loss)
        self.support = self.add_queue(k.queue_size, dim, labels=True, indexes=True)

    def param_group_options(self) -> dict[str, GroupOptions]:
        k = self.kwargs
        return {**super().param_group_options(), "transformer_encoder": GroupOptions(
            lr=k.transformer_lr, scaled=False, fixed_lr=k.transformer_fixed_lr)}

    def summarize(self, sequence: Tensor) -> Tensor:
        """The transformer's output (B, D) at the first place of a (B, k, D) sequence."""
        return self.transformer_encoder(self.pos_enc(sequence))[:, 0]

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        k = self.kwargs
        z1, z2 = (self.projector(f) for f in batch.feats)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        q1, q2 = self.predictor2(z1), self.predictor2(z2)
        t1, t2 = (F.normalize(self.momentum_projector(f), dim=-1) for f in batch.momentum_feats)
        support = self.support.rows()  # before this step's projections join it
        # (B, k) indices and (B, k, D) neighbours of each view's momentum projection
        (index1, nn1), (_, nn2) = (nearest_neighbours(t, support, k.num_neighbours)
                                   for t in (t1, t2))
        rich1, rich2 = self.summarize(nn1), self.summarize(nn2)
        # the shift: the view's second prediction first, then its k - 1 nearest neighbours
        shifted1, shifted2 = (self.summarize(torch.cat((q[:, None], nn[:, :-1]), dim=1))
                              for q, nn in ((q1, nn1), (q2, nn2)))
        attention = (nnclr_loss(rich1, shifted2, k.attention_temperature)
                     + nnclr_loss(rich2, shifted1, k.attention_temperature)) / 2
        contrast = (nnclr_loss(nn1[:, 0], p2, k.temperature)
                    + nnclr_loss(nn2[:, 0], p1, k.temperature)) / 2
        redundancy = redundancy_loss(t1, t2, z1, z2)
        loss = (k.nnclr_weight * contrast + k.attention_weight * attention
                + k.redundancy_weight * redundancy)

        nn_acc = self.support.label_accuracy(index1[:, 0], batch.targets)
        self.support.push(t1.detach(), batch.targets, batch.indexes)
        z_std = (normalized_std(z1) + normalized_std(z2)) / 2
        return loss, {"nnclr_loss": contrast.detach(), "att_nnclr_loss": attention.detach(),
                      "feature_loss": redundancy.detach(), "nn_acc": nn_acc, "z_std": z_std}
