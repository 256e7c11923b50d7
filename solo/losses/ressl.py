"""ReSSL's relational loss: "ReSSL: Relational Self-Supervised Learning with Weak Augmentation",
arXiv:2107.09282."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from solo.utils.precision import full_float32


@torch.no_grad()
def key_relation(key: Tensor, queue: Tensor, temperature_k: float = 0.04) -> Tensor:
    """ReSSL's target: log softmax(k queue^T / T_k) (B, K) of the L2-normalized key (B, D), from
    the momentum network on the weak view, over the queue (K, D) of past normalized keys; in
    float32 (similarities over T = 0.04 overflow and lose digits in half precision)."""
    k = F.normalize(key.float(), dim=-1)
    with full_float32(k.device.type):
        return (k @ queue.float().T / temperature_k).log_softmax(dim=1)


def relation_cross_entropy(query: Tensor, queue: Tensor, log_target: Tensor,
                           temperature_q: float = 0.1) -> Tensor:
    """-sum_j p_k[j] log p_q[j] averaged over the batch, p_k = exp(``log_target``) and
    p_q = softmax(q queue^T / T_q) of the L2-normalized query (B, D) from the online network on
    the strong view."""
    q = F.normalize(query.float(), dim=-1)
    with full_float32(q.device.type):
        logits_q = q @ queue.detach().float().T / temperature_q  # (B, K)
    return -(log_target.exp() * logits_q.log_softmax(dim=1)).sum(dim=1).mean()


def relation_entropy_of(log_target: Tensor) -> Tensor:
    """The mean entropy of a target relation given as log-probabilities (B, K)."""
    return -(log_target.exp() * log_target).sum(dim=1).mean()


def ressl_loss(query: Tensor, key: Tensor, queue: Tensor, temperature_q: float = 0.1,
               temperature_k: float = 0.04) -> Tensor:
    """Cross-entropy between the key's relation to the queue (the target) and the query's.

    query (B, D) comes from the online network on the strong view, key (B, D) from the momentum
    network on the weak view; both are L2-normalized here and the key gets no gradient. queue
    (K, D) holds past keys, already normalized, one per row. With p_k = softmax(k queue^T / T_k)
    and p_q = softmax(q queue^T / T_q), the loss is -sum_j p_k[j] log p_q[j], averaged over the
    batch; T_k < T_q sharpens the target.
    """
    return relation_cross_entropy(query, queue, key_relation(key, queue, temperature_k),
                                  temperature_q)


@torch.no_grad()
def relation_entropy(key: Tensor, queue: Tensor, temperature_k: float = 0.04) -> Tensor:
    """The mean entropy of the key's relation to the queue (ReSSL's target): the floor of
    ``ressl_loss``, which exceeds it by the KL divergence from the target to the prediction."""
    return relation_entropy_of(key_relation(key, queue, temperature_k))
