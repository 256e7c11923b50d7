"""DeepClusterV2's loss: "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments" (Caron et al., arXiv:2006.09882), section 4 and appendix."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

UNASSIGNED = -1  # an index no clustering has seen yet (the first epoch): no target


def assignments_of(table: Tensor, indexes: Tensor) -> Tensor:
    """(heads, B) the cluster of each image in every head, from a (heads, N) table by dataset
    index; -1 for indexes beyond the table (none before the first clustering)."""
    if table.shape[1] == 0:
        return torch.full((len(table), len(indexes)), UNASSIGNED, dtype=torch.long,
                          device=indexes.device)
    known = indexes < table.shape[1]
    looked_up = table[:, indexes.clamp_max(table.shape[1] - 1)]
    return torch.where(known, looked_up, torch.full_like(looked_up, UNASSIGNED))


def deepclusterv2_loss(scores: Sequence[Tensor], assignments: Tensor,
                       temperature: float = 0.1) -> Tensor:
    """Cross-entropy of each crop's prototype scores / T against its image's cluster, averaged
    over the heads.

    ``scores[h]`` (crops, B, K_h): the dot products of head h's prototypes (the centroids) with
    the unit projections of every crop; ``assignments`` (heads, B): each image's cluster in each
    head, -1 where unknown. Per head the mean runs over the (crop, image) pairs with a target, as
    solo-learn's and the official ``ignore_index``; a head with no target at all contributes 0
    (solo-learn's cross-entropy gives NaN there, with zero gradients), so the first epoch,
    before any clustering, trains nothing and logs 0.
    """
    total = scores[0].new_zeros(())
    for head_scores, targets in zip(scores, assignments):
        crops, _, num_clusters = head_scores.shape
        logits = head_scores.float().reshape(-1, num_clusters) / temperature  # (crops * B, K)
        targets = targets.repeat(crops)  # crop-major, as the logits
        valid = targets != UNASSIGNED
        # summed and divided by the count rather than a mean with ignore_index: no NaN when
        # every target is missing, and no host sync to find out
        per_pair = F.cross_entropy(logits, targets.clamp_min(0), reduction="none")
        total = total + (per_pair * valid).sum() / valid.sum().clamp_min(1)
    return total / len(assignments)
