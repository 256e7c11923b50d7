"""SwAV's codes and swapped prediction loss: "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", arXiv:2006.09882."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from solo.utils.distributed import rank, sum_with_grad, world_size


def _sum_over_processes(x: Tensor) -> Tensor:
    # called under no_grad: the all-reduce's backward never runs
    return sum_with_grad(x)


@torch.no_grad()
def sinkhorn_codes(scores: Tensor, iters: int = 3, epsilon: float = 0.05) -> Tensor:
    """Soft assignments (N, K) of N samples to K prototypes, from their scores (N, K) (cosine
    similarities), by ``iters`` Sinkhorn-Knopp iterations on exp(scores / epsilon) (the paper's
    section 3.1 and algorithm 1). Each iteration scales every prototype's total weight to 1/K,
    then every sample's to 1/N; the result is multiplied by N, so every row sums to 1 (a code)
    and, as the iterations converge, every prototype gets N/K samples. Without gradient, in
    float32. N counts the samples of every process: the totals over samples (the whole sum, each
    prototype's sum) are all-reduced, so P processes with n rows each get the rows that one
    process would on their N = P * n rows (every process must pass the same n).
    """
    q = torch.exp(scores.float() / epsilon).T  # (K, n): prototypes x this process's samples
    num_prototypes, num_samples = q.shape[0], q.shape[1] * world_size()
    q /= _sum_over_processes(q.sum())
    for _ in range(iters):
        q /= _sum_over_processes(q.sum(dim=1, keepdim=True))  # each prototype: 1 ...
        q /= num_prototypes  # ... then 1/K
        q /= q.sum(dim=0, keepdim=True)  # each sample: 1 ...
        q /= num_samples  # ... then 1/N
    return (q * num_samples).T


def local_share(rows: Tensor) -> Tensor:
    """This process's 1/world slice of rows (N, ...) that every process holds alike (a queue
    written with the projections of every process): the slices of all processes are the rows
    once, so Sinkhorn on [this process's batch; its slice] sees, over all processes, the global
    batch and the whole queue, as one process would."""
    return rows.chunk(world_size())[rank()]


def swav_loss(scores: list[Tensor], codes: list[Tensor], temperature: float = 0.1) -> Tensor:
    """The swapped prediction loss: the cross-entropy from the code of each large crop i
    (``codes[i]``, (B, K), no gradient) to softmax(scores / T) of every other crop j, small crops
    included (``scores``, one (B, K) per crop, the large ones first), averaged over the batch,
    then over the len(codes) x (len(scores) - 1) pairs (i, j), as the paper's code and
    solo-learn do."""
    log_probs = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]
    terms = [-(code.detach() * log_probs[j]).sum(dim=1).mean()
             for i, code in enumerate(codes) for j in range(len(scores)) if j != i]
    return torch.stack(terms).mean()
