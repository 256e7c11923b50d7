"""The online linear probe: a classifier trained on detached features beside the SSL loss."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def accuracy_at_k(logits: Tensor, targets: Tensor, top_k: tuple[int, ...] = (1, 5),
                  weights: Tensor | None = None) -> list[Tensor]:
    """Share of rows whose target is among the k highest logits, for each k (stays on device).

    ``weights`` (B,) of 0/1 leaves rows out without indexing, which would sync with the host.
    """
    k_max = min(max(top_k), logits.shape[1])
    hits = logits.topk(k_max, dim=1).indices.eq(targets.unsqueeze(1)).float()  # (B, k_max)
    weights = hits.new_ones(len(hits)) if weights is None else weights
    total = weights.sum().clamp(min=1)
    return [(hits[:, : min(k, k_max)].amax(dim=1) * weights).sum() / total for k in top_k]


class OnlineProbe(nn.Linear):
    """A linear classifier on features it never back-propagates into.

    A ``Linear`` itself, so its weights sit where solo-learn keeps its online classifier's
    (``classifier.weight``, ``classifier.bias``) and checkpoints load both ways."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__(num_features, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return super().forward(features.detach())

    def loss(self, features: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy and acc@1/acc@5; rows with a negative target (unlabelled) are ignored."""
        logits = self(features).float()
        labelled = (targets >= 0).float()
        per_row = F.cross_entropy(logits, targets.clamp(min=0), reduction="none")
        loss = (per_row * labelled).sum() / labelled.sum().clamp(min=1)
        acc1, acc5 = accuracy_at_k(logits, targets, weights=labelled)
        return loss, {"loss": loss.detach(), "acc1": acc1, "acc5": acc5}
