"""SimCLR's NT-Xent: "A Simple Framework for Contrastive Learning", arXiv:2002.05709.

Generalized to any number of crops as solo-learn does: every other crop of the same image is a
positive, the positives share one numerator, and negatives come from all processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from solo.utils.distributed import gather_no_grad, gather_with_grad, gathered_rows
from solo.utils.precision import full_float32


def nt_xent_loss(z: Tensor, indexes: Tensor, temperature: float = 0.1,
                 check_positives: bool = True) -> Tensor:
    """NT-Xent over all crops, with candidates gathered from every process.

    z (N, D) are this process's projections (crops concatenated crop by crop) and indexes (N,)
    the sample id of each row: rows with the same id are positives. Each local row i is an
    anchor scored against every gathered row but itself, and its loss is

        -log( sum over positives j of exp(s_ij / T) / sum over all j != i of exp(s_ij / T) )

    (solo-learn's objective; with two crops, one positive, it is SimCLR's cross-entropy). Returns
    the mean over local anchors. Every process must pass the same N.

    ``check_positives``: raise a ValueError naming the ids that have no positive. The check reads
    a result back from the device (a host sync), so the methods make it on their first step only.
    """
    # float32: logits of 1/T ~ 10 in half precision make logsumexp inaccurate
    z = F.normalize(z.float(), dim=-1)
    all_z = gather_with_grad(z)  # (world * N, D)
    all_indexes = gather_no_grad(indexes)  # (world * N,)

    n = z.size(0)
    with full_float32(z.device.type):
        logits = z @ all_z.T / temperature  # (N, world * N)
    # this process's rows sit at [rank * n, (rank + 1) * n) of the gathered tensor
    self_column = gathered_rows(n, z.device)
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(n, device=z.device), self_column] = True
    is_positive = (indexes[:, None] == all_indexes[None, :]) & ~is_self

    if check_positives:
        missing = indexes[is_positive.sum(dim=1) == 0].tolist()
        if missing:
            raise ValueError(
                f"nt_xent_loss: sample ids {missing} have no positive (another crop with the same "
                "index); each image needs at least two crops across all processes"
            )

    logits = logits.masked_fill(is_self, float("-inf"))
    log_all = torch.logsumexp(logits, dim=1)  # (N,) every candidate but the anchor itself
    log_positives = torch.logsumexp(logits.masked_fill(~is_positive, float("-inf")), dim=1)
    return (log_all - log_positives).mean()
