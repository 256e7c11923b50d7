"""TWIST's losses: "Self-Supervised Learning by Estimating Twin Class Distributions" (Wang et al.,
arXiv:2110.07402), as its official code (bytedance/TWIST, objective.py and engine.py) weights them.

Each view's head output is a vector of class logits. With p = softmax(logits) and the sharpened
s = softmax(logits / tau), the loss of two views a, b is

    KL_sym(p_a, p_b) + (1 + lam1) * mean-entropy(s) - lam2 * entropy(batch-mean of s)

consistency, sharpness and diversity, each term symmetrized over a and b. The batch-mean
distribution is that of the global batch (every process's rows). All logs get ``eps`` inside,
as the official code does (1e-5).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from solo.utils.distributed import sum_with_grad, world_size


def kl_divergence(p: Tensor, q: Tensor, eps: float = 1e-5) -> Tensor:
    """Mean over the rows of KL(p || q), both (B, K) distributions."""
    return (p * (p + eps).log() - p * (q + eps).log()).sum(dim=1).mean()


def mean_entropy(probs: Tensor, eps: float = 1e-5) -> Tensor:
    """Sharpness: the mean over this process's rows of each row's entropy. DDP's averaging of the
    parameter gradients makes its gradient that of the global batch's mean."""
    return -(probs * (probs + eps).log()).sum(dim=1).mean()


def batch_mean_entropy(probs: Tensor, eps: float = 1e-5) -> Tensor:
    """Diversity: the entropy of the mean distribution of the global batch (all processes, each
    passing the same number of rows), with gradients to every process's rows."""
    mean = sum_with_grad(probs.mean(dim=0)) / world_size()  # (K,)
    return -(mean * (mean + eps).log()).sum()


def _terms(a: Tensor, b: Tensor, tau: float, eps: float) -> dict[str, Tensor]:
    """The official ``EntLoss`` of one pair of views' logits (B, K)."""
    p_a, p_b = F.softmax(a, dim=-1), F.softmax(b, dim=-1)
    s_a, s_b = F.softmax(a / tau, dim=-1), F.softmax(b / tau, dim=-1)
    return {"kl": 0.5 * (kl_divergence(p_a, p_b, eps) + kl_divergence(p_b, p_a, eps)),
            "eh": 0.5 * (mean_entropy(s_a, eps) + mean_entropy(s_b, eps)),
            "he": 0.5 * (batch_mean_entropy(s_a, eps) + batch_mean_entropy(s_b, eps))}


def twist_loss(logits: list[Tensor], lam1: float = 0.0, lam2: float = 1.0, tau: float = 1.0,
               eps: float = 1e-5, num_large: int = 2,
               teacher_logits: Optional[list[Tensor]] = None) -> tuple[Tensor, dict[str, Tensor]]:
    """TWIST's loss on every view's class logits (one (B, K) tensor per crop, large crops first).

    Without ``teacher_logits`` (no momentum encoder): the mean of the pairwise loss over the pairs
    (large crop i, any later crop j), i.e. the two large crops with each other and each with every
    small crop, never two small crops together; the KL is symmetric and nothing is detached.

    With ``teacher_logits`` (the momentum network on the large crops): KL(teacher_i || student_j)
    for every student view j other than i, averaged, plus the sharpness and diversity of every
    student view, averaged; the teacher's predictions are the targets (no gradient).

    Returns the loss and its ``kl``, ``eh`` (mean entropy) and ``he`` (entropy of the mean)
    terms. Computed in float32.
    """
    views = [x.float() for x in logits]
    if teacher_logits is None:
        pairs = [_terms(views[i], views[j], tau, eps)
                 for i in range(min(num_large, len(views))) for j in range(i + 1, len(views))]
        terms = {k: sum(pair[k] for pair in pairs) / len(pairs) for k in ("kl", "eh", "he")}
    else:
        teachers = [F.softmax(t.detach().float() / tau, dim=-1) for t in teacher_logits]
        students = [F.softmax(x / tau, dim=-1) for x in views]
        kls = [kl_divergence(t, s, eps) for i, t in enumerate(teachers)
               for j, s in enumerate(students) if i != j]
        terms = {"kl": sum(kls) / len(kls),
                 "eh": sum(mean_entropy(s, eps) for s in students) / len(students),
                 "he": sum(batch_mean_entropy(s, eps) for s in students) / len(students)}
    loss = terms["kl"] + (1 + lam1) * terms["eh"] - lam2 * terms["he"]
    return loss, {k: v.detach() for k, v in terms.items()}


def confidence_threshold(confidence: Tensor, quantile: float) -> Tensor:
    """The official self-labeling threshold: the confidence ranked ``int(quantile * B)`` (0-based)
    in this process's batch sorted from most to least confident."""
    ranked = confidence.sort(descending=True).values
    return ranked[min(int(quantile * len(ranked)), len(ranked) - 1)]


def self_label_loss(logits: list[Tensor], anchor_logits: list[Tensor], quantile: float,
                    tau: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """TWIST's self-labeling stage (SCAN's confidence-based cross-entropy, as engine.py runs it).

    ``anchor_logits``: the two large crops' logits from the momentum network, or the student's
    own. Per image, the more confident large crop (higher max of softmax(logits / tau)) is the
    weak anchor: its argmax is the pseudo-label of the other large crop and of every small crop.
    Only images whose anchor confidence (max of softmax(anchor)) exceeds the threshold (see
    ``confidence_threshold``) count; the cross-entropies are averaged over the n - 1 views.
    """
    views = [x.float() for x in logits]
    a0, a1 = (a.detach().float() for a in anchor_logits[:2])
    conf0 = F.softmax(a0 / tau, dim=-1).amax(dim=1)
    conf1 = F.softmax(a1 / tau, dim=-1).amax(dim=1)
    threshold = confidence_threshold(torch.maximum(conf0, conf1), quantile)
    first = (conf0 > conf1).unsqueeze(1)  # (B, 1): the first large crop is the weak anchor
    weak = torch.where(first, a0, a1)
    strong = torch.where(first, views[1], views[0])
    confidence, pseudo_labels = F.softmax(weak, dim=-1).max(dim=1)
    mask = confidence > threshold

    confident = mask.float()
    count = confident.sum().clamp(min=1)  # no confident image: a loss of 0 with zero gradients

    def masked_ce(x: Tensor) -> Tensor:
        # the mean over the confident images as a weighted sum, not x[mask]: a boolean
        # selection's size is read back from the device, a host sync every step
        return (F.cross_entropy(x, pseudo_labels, reduction="none") * confident).sum() / count

    loss = (masked_ce(strong) + sum(masked_ce(x) for x in views[2:])) / (len(views) - 1)
    return loss, {"threshold": threshold.detach(), "confident_fraction": confident.mean()}
