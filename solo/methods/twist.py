"""TWIST: Self-Supervised Learning by Estimating Twin Class Distributions (Wang, Kong, Zhang, Liu,
Li, arXiv:2110.07402).

A head ending in class logits (a batch norm before the softmax) gives each view a distribution
over ``proj_output_dim`` classes; the twin distributions of an image's views are made consistent,
each sharp, and their batch mean diverse. Options from the official code (bytedance/TWIST):
a momentum encoder whose large-crop predictions are the targets (its ViT recipes), and a final
self-labeling stage (SCAN's confidence-based cross-entropy) from epoch ``self_label_epoch`` on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from solo.config import check, check_positive
from solo.losses import self_label_loss, twist_loss
from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.momentum import MomentumMethod, OnlineTarget
from solo.methods.registry import METHODS
from solo.nn import LocalBatchNorm1d, mlp
from solo.utils.schedules import cosine_schedule

LAST_NORMS = ("bn", "syncbn", "none")


@dataclass
class TWISTConfig:
    # defaults: the official train.py's argparse defaults
    proj_hidden_dim: int = 4096  # --hid_dim
    proj_output_dim: int = 4096  # --dim, the number of classes; 32768 in the 800-epoch recipe
    lam1: float = 0.0  # --lam1: the mean entropy is weighted 1 + lam1 (DeiT-S recipe: -0.6)
    lam2: float = 1.0  # --lam2: weight of the entropy of the batch mean
    tau: float = 1.0  # --tau: temperature of the sharpened softmax of the entropy terms
    eps: float = 1e-5  # --EPS, inside every log
    # --lbn_type: the norm before the softmax. "bn": this process's batch statistics, never
    # synced (official "bn" with --bunch-size equal to --batch-size); "syncbn": synced across
    # processes when sync_batchnorm is on; "none": no norm
    last_norm: str = "bn"
    use_momentum_encoder: bool = False  # --use_momentum_encoder; tau from momentum.*
    # --mme_epochs: TWIST's loss for this many epochs, self-labeling after; None: never (the
    # official default is 800 of --epochs 850)
    self_label_epoch: Optional[int] = None
    quantile: float = 0.5  # --quantile: fraction of the batch above the self-labeling threshold
    quantile_end: float = 0.6  # --quantile_end, reached by a cosine at the end of training

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "tau", "eps")
        check(self.last_norm in LAST_NORMS, "last_norm",
              f"'{self.last_norm}' is not one of {LAST_NORMS}")
        check(self.lam2 >= 0, "lam2", f"must be >= 0, got {self.lam2}")
        check(self.self_label_epoch is None or self.self_label_epoch >= 0, "self_label_epoch",
              f"must be >= 0 or null, got {self.self_label_epoch}")
        for key in ("quantile", "quantile_end"):
            value = getattr(self, key)
            check(0 < value <= 1, key, f"must be in (0, 1], got {value}")


@METHODS.register("twist")
class TWIST(MomentumMethod):
    Config = TWISTConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.require_crops(large=2)
        # the official head: Linear-BN-ReLU twice, Linear to the classes, then the last norm
        head = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim, num_layers=3)
        if "resnet" not in self.cfg.backbone.name:  # the official ViT initialization
            for layer in head.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.trunc_normal_(layer.weight, std=0.02)
                    nn.init.zeros_(layer.bias)
        last_norm = {"bn": lambda: LocalBatchNorm1d(k.proj_output_dim),
                     "syncbn": lambda: nn.BatchNorm1d(k.proj_output_dim, affine=False),
                     "none": nn.Identity}[k.last_norm]()
        self.projector = nn.Sequential(*head, last_norm)  # class logits (B, proj_output_dim)
        self.momentum_projector = self.momentum_copy("projector")
        self.quantile = k.quantile

    def momentum_copy(self, name: str) -> nn.Module | OnlineTarget:
        if not self.kwargs.use_momentum_encoder:  # both views through the online network
            return OnlineTarget(getattr(self, name))
        return super().momentum_copy(name)

    def encode_batch(self, batch: tuple[Tensor, list[Tensor], Tensor]) -> EncodedBatch:
        if not self.kwargs.use_momentum_encoder:
            return BaseMethod.encode_batch(self, batch)
        return super().encode_batch(batch)

    @property
    def self_labeling(self) -> bool:
        """Whether this epoch trains with the self-labeling loss instead of TWIST's."""
        start = self.kwargs.self_label_epoch
        return start is not None and self._trainer is not None and self.trainer.current_epoch >= start

    def scheduled_values(self, step: int) -> dict[str, float]:
        k = self.kwargs
        if k.self_label_epoch is None:
            return {}
        start = k.self_label_epoch * self.steps_per_epoch  # the quantile's cosine spans the stage
        return {"quantile": cosine_schedule(step - start, self.total_steps - start, k.quantile,
                                            k.quantile_end)}

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        k = self.kwargs
        # one head call for all crops, as the official forward: its BNs see every view together
        logits = self.projector(torch.cat(batch.feats)).chunk(len(batch.feats))
        teacher = None
        if k.use_momentum_encoder:
            with torch.no_grad():
                teacher = self.momentum_projector(torch.cat(batch.momentum_feats)).chunk(2)
        agreement = (logits[0].argmax(1) == logits[1].argmax(1)).float().mean()
        if self.self_labeling:
            anchors = teacher if teacher is not None else logits[:2]
            loss, logs = self_label_loss(list(logits), list(anchors), self.quantile, k.tau)
            return loss, {**logs, "agreement": agreement}
        loss, logs = twist_loss(list(logits), k.lam1, k.lam2, k.tau, k.eps, self.num_large_crops,
                                list(teacher) if teacher is not None else None)
        return loss, {**logs, "agreement": agreement}
