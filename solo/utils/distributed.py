"""Cross-process gathers and reductions that fall back to the identity in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.nn.functional import all_gather, all_reduce


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank, 0 when torch.distributed is not initialized."""
    return dist.get_rank() if _is_distributed() else 0


def world_size() -> int:
    """Number of processes, 1 when torch.distributed is not initialized."""
    return dist.get_world_size() if _is_distributed() else 1


def gathered_rows(n: int, device: torch.device) -> Tensor:
    """(n,) positions of this process's n rows in a tensor gathered along dim 0 from every
    process in rank order (every process passing n rows): its own images' columns in a
    similarity to gathered candidates, or its images' ids in the global batch."""
    return torch.arange(n, device=device) + rank() * n


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every process along dim 0, in rank order, keeping gradients.

    The backward pass sums the incoming gradients across processes, so each process's input
    receives the gradient of every process's loss term that used it. All processes must pass
    tensors of the same shape.
    """
    if world_size() == 1:
        return x
    return torch.cat(all_gather(x), dim=0)


def sum_with_grad(x: Tensor) -> Tensor:
    """The sum of ``x`` over every process, keeping gradients (Barlow Twins' cross-correlation,
    VICReg's statistics).

    The backward pass sums the incoming gradients across processes too. Every process computes
    the same loss from the sum, so each input gets world_size times its share of the gradient,
    and DDP's averaging of the parameter gradients gives exactly the gradient that one process
    would compute on the global batch.
    """
    if world_size() == 1:
        return x
    return all_reduce(x, op=dist.ReduceOp.SUM)


@torch.no_grad()
def mean_no_grad(x: Tensor) -> Tensor:
    """The mean of ``x`` over every process, without gradients (logged values, statistics)."""
    if world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / world_size()


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every process along dim 0, in rank order, without gradients."""
    if world_size() == 1:
        return x
    # contiguous: the collective writes into and reads from flat buffers
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


@torch.no_grad()
def gather_padded(x: Tensor, fill: float) -> Tensor:
    """``gather_no_grad`` for tensors whose first dimension differs between processes (a sharded
    loader's last batches, DALI's shards): each is padded to the longest with ``fill`` rows before
    the gather, which needs equal shapes. The caller tells padded rows by ``fill``."""
    if world_size() == 1:
        return x
    length = torch.tensor([len(x)], device=x.device)
    lengths = gather_no_grad(length)  # one small gather, so once per validation, not per step
    padding = int(lengths.max()) - len(x)
    if padding:
        x = torch.cat([x, x.new_full((padding, *x.shape[1:]), fill)])
    return gather_no_grad(x)


@torch.no_grad()
def batch_shuffle(x: Tensor) -> tuple[Tensor, Tensor]:
    """MoCo's Shuffle BN (arXiv:1911.05722, section 3.3): this process's share of the global batch
    after a random permutation drawn on rank 0, and the index that undoes it (for
    ``batch_unshuffle``). On one process a local permutation (it matters only with split BN).
    Every process must pass a batch of the same size."""
    gathered = gather_no_grad(x)
    permutation = torch.randperm(len(gathered), device=x.device)
    if world_size() > 1:
        dist.broadcast(permutation, src=0)
    mine = permutation.view(world_size(), -1)[rank()]
    return gathered[mine], torch.argsort(permutation)


@torch.no_grad()
def batch_unshuffle(x: Tensor, unshuffle: Tensor) -> Tensor:
    """The rows of ``batch_shuffle``'s output (or of anything computed row by row from it) back
    on the process, and at the position, where their inputs started."""
    gathered = gather_no_grad(x)
    return gathered[unshuffle.view(world_size(), -1)[rank()]]
