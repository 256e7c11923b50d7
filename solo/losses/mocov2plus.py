"""MoCo's InfoNCE: "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from solo.utils.precision import full_float32


def moco_loss(query: Tensor, key: Tensor, queue: Tensor, temperature: float = 0.1) -> Tensor:
    """InfoNCE with the key as the positive and the queue's columns as negatives.

    query (B, D) and key (B, D) are L2-normalized here and the key is detached (it comes from
    the momentum encoder); queue (D, K) holds already normalized negatives.
    """
    # float32: exp(logit / T) with small T overflows / loses precision in half precision
    q = F.normalize(query.float(), dim=-1)
    k = F.normalize(key.detach().float(), dim=-1)
    positive = (q * k).sum(dim=-1, keepdim=True)  # (B, 1)
    with full_float32(q.device.type):
        negatives = q @ queue.detach().float()  # (B, K)
    logits = torch.cat([positive, negatives], dim=1) / temperature
    target = torch.zeros(q.size(0), dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)
