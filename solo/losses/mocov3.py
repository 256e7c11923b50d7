"""MoCo v3's contrastive loss: "An Empirical Study of Training Self-Supervised Vision
Transformers", arXiv:2104.02057."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from solo.utils.distributed import gather_no_grad, gathered_rows
from solo.utils.precision import full_float32


def mocov3_loss(query: Tensor, key: Tensor, temperature: float = 0.2) -> Tensor:
    """InfoNCE of each query against the keys of the whole global batch, scaled by 2T.

    query (B, D) comes from the online network (projector and predictor), key (B, D) from the
    momentum network on the other view; both are L2-normalized here and the key is detached.
    The keys of every process are gathered (no queue): query i of this process has its positive
    at column ``rank * B + i`` and every other image of the global batch as a negative. The
    cross-entropy, averaged over this process's queries, is multiplied by ``2 * temperature``
    as in the paper's pseudocode, which makes the gradient's scale independent of T. Every
    process must pass the same B.
    """
    # float32: exp(logit / T) with small T overflows / loses precision in half precision
    q = F.normalize(query.float(), dim=-1)
    k = gather_no_grad(F.normalize(key.detach().float(), dim=-1))  # (world * B, D)
    with full_float32(q.device.type):
        logits = q @ k.T / temperature  # (B, world * B)
    positives = gathered_rows(q.size(0), q.device)
    return F.cross_entropy(logits, positives) * (2 * temperature)
