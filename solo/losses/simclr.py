"""SimCLR's NT-Xent: "A Simple Framework for Contrastive Learning", arXiv:2002.05709.

Generalized to any number of crops: every other crop of the same image is a positive, and
negatives come from all processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from solo.utils.distributed import gather_no_grad, gather_with_grad, rank


def nt_xent_loss(z: Tensor, indexes: Tensor, temperature: float = 0.1) -> Tensor:
    """NT-Xent over all crops, with candidates gathered from every process.

    z (N, D) are this process's projections (crops concatenated crop by crop) and indexes (N,)
    the sample id of each row: rows with the same id are positives. Each local row is an
    anchor scored against every gathered row but itself; its loss is the mean negative
    log-probability of its positives. Returns the mean over local anchors. Every process
    must pass the same N.
    """
    # float32: logits of 1/T ~ 10 in half precision make logsumexp inaccurate
    z = F.normalize(z.float(), dim=-1)
    all_z = gather_with_grad(z)  # (world * N, D)
    all_indexes = gather_no_grad(indexes)  # (world * N,)

    n = z.size(0)
    logits = z @ all_z.T / temperature  # (N, world * N)
    # this process's rows sit at [rank * n, (rank + 1) * n) of the gathered tensor
    self_column = torch.arange(n, device=z.device) + rank() * n
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(n, device=z.device), self_column] = True
    is_positive = (indexes[:, None] == all_indexes[None, :]) & ~is_self

    num_positives = is_positive.sum(dim=1)
    # checked on CPU tensors only: on a GPU the test would stall every step on a host sync, and
    # SimCLR refuses configs with fewer than two crops when it is built
    if not z.is_cuda and bool((num_positives == 0).any()):
        missing = indexes[num_positives == 0].tolist()
        raise ValueError(
            f"nt_xent_loss: sample ids {missing} have no positive (another crop with the same "
            "index); each image needs at least two crops across all processes"
        )

    logits = logits.masked_fill(is_self, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    # where, not multiply: the self entry is -inf and -inf * 0 is nan
    positive_log_prob = torch.where(is_positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(positive_log_prob / num_positives).mean()
