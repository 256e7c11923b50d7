"""DINO: Emerging Properties in Self-Supervised Vision Transformers (Caron et al.,
arXiv:2104.14294).

Self-distillation without labels: the student (backbone + DINO head, on every crop) learns to
predict the teacher's sharpened, centered distribution over prototypes (momentum backbone +
momentum head, on the large crops only). The teacher temperature warms up per epoch, the last
layer stays frozen for the first epochs, and each gradient tensor may be clipped on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from solo.config import check, check_positive
from solo.losses.dino import DINOLoss
from solo.methods.base import EncodedBatch
from solo.methods.momentum import MomentumMethod
from solo.methods.registry import METHODS
from solo.nn import DINOHead
from solo.utils.schedules import linear_warmup


@dataclass
class DINOConfig:
    # solo-learn's keys; its YAMLs set the head sizes (it has no defaults for them)
    proj_hidden_dim: int = 2048  # DINO's head: 2048-d hidden layers
    proj_output_dim: int = 256  # DINO's bottleneck
    num_prototypes: int = 4096  # solo-learn's ResNet recipes; DINO's ViTs use 65536
    use_bn_in_head: bool = False  # solo-learn's and DINO's default
    norm_last_layer: bool = True  # solo-learn's and DINO's default (DINO's ViT-S: False)
    clip_grad: float = 0.0  # solo-learn's default, off (DINO's: 3.0); per-parameter L2 norm
    freeze_last_layer: int = 1  # epochs with the last layer frozen: solo-learn's and DINO's 1
    student_temperature: float = 0.1  # paper and both codes
    teacher_temperature: float = 0.07  # solo-learn's default (DINO's: 0.04)
    warmup_teacher_temperature: float = 0.04  # paper and both codes
    warmup_teacher_temperature_epochs: int = 0  # solo-learn's and DINO's default (paper: 30)
    center_momentum: float = 0.9  # not a solo-learn key: the fixed value of both codes

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "num_prototypes",
                       "student_temperature", "teacher_temperature", "warmup_teacher_temperature")
        for key in ("clip_grad", "freeze_last_layer", "warmup_teacher_temperature_epochs"):
            check(getattr(self, key) >= 0, key, f"must be >= 0 (0 turns it off), got "
                                                f"{getattr(self, key)}")
        check(0 <= self.center_momentum <= 1, "center_momentum",
              f"must be in [0, 1], got {self.center_momentum}")


def teacher_temperature(epoch: int, warmup_epochs: int, start: float, end: float) -> float:
    """The teacher temperature of ``epoch``: ``np.linspace(start, end, warmup_epochs)[epoch]``
    during the warmup, ``end`` after it (the per-epoch table of DINO and solo-learn, which reaches
    ``end`` at epoch warmup_epochs - 1, and gives ``start`` for a one-epoch warmup)."""
    if epoch >= warmup_epochs:
        return end
    if warmup_epochs == 1:
        return start
    return linear_warmup(epoch, warmup_epochs - 1, start, end)


@METHODS.register("dino")
class DINO(MomentumMethod):
    Config = DINOConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.require_crops(large=2, at_least=True)  # each large crop teaches the others
        self.head = DINOHead(self.num_features, k.num_prototypes, use_bn=k.use_bn_in_head,
                             norm_last_layer=k.norm_last_layer, hidden_dim=k.proj_hidden_dim,
                             bottleneck_dim=k.proj_output_dim)
        self.momentum_head = self.momentum_copy("head")
        # solo-learn's module name, so its checkpoints (dino_loss_func.center) load whole
        self.dino_loss_func = DINOLoss(k.num_prototypes, k.student_temperature, k.center_momentum)
        self.freeze_for_epochs(self.head.last_layer, k.freeze_last_layer)
        self.clip_grad_per_parameter = k.clip_grad
        self.teacher_temperature = self.scheduled_values(0)["teacher_temperature"]

    def scheduled_values(self, step: int) -> dict[str, float]:
        # per epoch, as DINO and solo-learn index their table; the epoch of a resumed run is
        # restored with it
        k = self.kwargs
        return {"teacher_temperature": teacher_temperature(
            self.current_epoch, k.warmup_teacher_temperature_epochs,
            k.warmup_teacher_temperature, k.teacher_temperature)}

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        student = [self.head(f) for f in batch.feats]  # every crop
        with torch.no_grad():
            teacher = [self.momentum_head(f) for f in batch.momentum_feats]  # large crops
        loss, entropy = self.dino_loss_func(student, teacher, self.teacher_temperature)
        # loss - target_entropy is the KL divergence, what the student can lower; the entropy
        # rises as the center catches up (the paper's figure 7 follows both)
        return loss, {"target_entropy": entropy}
