"""DINO's self-distillation loss: "Emerging Properties in Self-Supervised Vision Transformers",
arXiv:2104.14294 (equation 3 and algorithm 1), with its centering of the teacher."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo.utils.distributed import mean_no_grad


@torch.no_grad()
def teacher_targets(teacher: Sequence[Tensor], center: Tensor,
                    teacher_temperature: float) -> list[Tensor]:
    """softmax((t - center) / teacher_temperature) of each teacher crop's (B, P) logits, in
    float32 and without gradient: DINO's centering and sharpening."""
    # float32: a softmax at T = 0.04 over 65536 logits is far off in half precision
    return [F.softmax((t.float() - center) / teacher_temperature, dim=-1) for t in teacher]


def dino_cross_entropy(student: Sequence[Tensor], targets: Sequence[Tensor],
                       student_temperature: float = 0.1) -> Tensor:
    """The mean over crop pairs (teacher crop i, student crop j != i) of the cross-entropy from
    target i to log-softmax(student j / student_temperature), each averaged over the B images."""
    if not 1 <= len(targets) <= len(student):
        raise ValueError(f"need 1 <= teacher crops <= student crops, got {len(targets)} and "
                         f"{len(student)}")
    log_predictions = [F.log_softmax(s.float() / student_temperature, dim=-1) for s in student]
    total, terms = 0.0, 0
    for i, target in enumerate(targets):
        for j, log_prediction in enumerate(log_predictions):
            if i == j:  # a crop is not its own target
                continue
            total = total + torch.sum(-target * log_prediction, dim=-1).mean()
            terms += 1
    if terms == 0:
        raise ValueError("one teacher crop and one student crop make no pair of different views")
    return total / terms


def dino_loss(student: Sequence[Tensor], teacher: Sequence[Tensor], center: Tensor,
              student_temperature: float = 0.1, teacher_temperature: float = 0.04) -> Tensor:
    """DINO's loss: cross-entropy from the sharpened, centered teacher to the student.

    ``student`` holds one (B, P) logit tensor per crop, the large crops first; ``teacher`` one
    per large crop (same order), from the momentum network; ``center`` is (1, P). The teacher's
    targets are softmax((t - center) / teacher_temperature), without gradient; the student's
    predictions log-softmax(s / student_temperature). Every (teacher crop i, student crop j) pair
    with j != i contributes its cross-entropy averaged over the B images; the result is the mean
    over those pairs (DINO's and solo-learn's ``n_loss_terms``).
    """
    return dino_cross_entropy(student, teacher_targets(teacher, center, teacher_temperature),
                              student_temperature)


def target_entropy(targets: Sequence[Tensor]) -> Tensor:
    """The teachers' mean entropy: the floor of ``dino_cross_entropy`` (which exceeds it by the
    mean KL divergence, as every teacher crop is the target of as many pairs)."""
    return torch.stack([torch.special.entr(t).sum(dim=-1).mean() for t in targets]).mean()


@torch.no_grad()
def updated_center(center: Tensor, teacher: Tensor, momentum: float = 0.9) -> Tensor:
    """center * momentum + (1 - momentum) * the mean teacher logits (N, P) of the global batch:
    this process's rows averaged, then the means of all processes averaged (an all-reduce; every
    process must pass as many rows, as DINO's own all-reduced sum divided by world x N assumes)."""
    batch_center = mean_no_grad(teacher.detach().float().mean(dim=0, keepdim=True))  # (1, P)
    return center * momentum + batch_center * (1 - momentum)


class DINOLoss(nn.Module):
    """``dino_loss`` with its center as a buffer (saved in checkpoints, ``center`` (1, P) as in
    solo-learn and DINO), updated by ``updated_center`` after each loss, from the raw teacher
    logits of the step. The teacher temperature is passed per call: it follows a schedule."""

    def __init__(self, num_prototypes: int, student_temperature: float = 0.1,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temperature = student_temperature
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, num_prototypes))

    def forward(self, student: Sequence[Tensor], teacher: Sequence[Tensor],
                teacher_temperature: float) -> tuple[Tensor, Tensor]:
        """The loss and the teachers' mean entropy (its floor, for logging); then the center
        moves."""
        targets = teacher_targets(teacher, self.center, teacher_temperature)
        loss = dino_cross_entropy(student, targets, self.student_temperature)
        self.center.copy_(updated_center(self.center, torch.cat(list(teacher)),
                                         self.center_momentum))
        return loss, target_entropy(targets)
