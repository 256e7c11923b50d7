"""Spherical k-means over the rows of every process: DeepClusterV2's clustering of its memory bank
(Caron et al., arXiv:2006.09882), with solo-learn's and the official code's steps.

Each process holds its own rows (the projections it computed this epoch). The centroids start
as random rows of rank 0, broadcast; each iteration assigns every row to its most similar
centroid (dot product of unit vectors), sums the rows and counts per cluster over all processes
(one all-reduce each) and moves every non-empty cluster's centroid to its normalized mean; an
empty cluster keeps its centroid. After ``iters`` updates a last assignment step gives the
result. Every process ends with the same centroids, and, through ``gather_assignments``, the
cluster of every dataset index any process holds.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from solo.utils.distributed import gather_padded, rank, world_size
from solo.utils.precision import full_float32


def _all_reduce(x: Tensor) -> Tensor:
    if world_size() > 1:
        dist.all_reduce(x)
    return x


@torch.no_grad()
def initial_centroids(rows: Tensor, num_clusters: int, generator: torch.Generator) -> Tensor:
    """(K, D) distinct random rows of rank 0's ``rows`` (N, D), the same on every process.
    Only rank 0 draws from ``generator``."""
    centroids = rows.new_empty(num_clusters, rows.shape[1])
    held = torch.tensor([len(rows)], device=rows.device)
    if world_size() > 1:  # every process raises, or none: one alone would leave the rest waiting
        dist.broadcast(held, src=0)
    if int(held) < num_clusters:
        raise ValueError(f"method_kwargs.num_prototypes: {num_clusters} clusters need at least "
                         f"as many rows in rank 0's memory bank, which holds {int(held)}; "
                         "use fewer prototypes or more images per process")
    if rank() == 0:
        picks = torch.randperm(len(rows), generator=generator)[:num_clusters].to(rows.device)
        centroids.copy_(rows[picks])
    if world_size() > 1:
        dist.broadcast(centroids, src=0)
    return centroids


def nearest_centroids(rows: Tensor, centroids: Tensor, chunk_size: int = 65536) -> Tensor:
    """(N,) the most similar centroid (largest dot product) of each row, in row chunks: the
    (N, K) similarities of a whole ImageNet bank would take gigabytes."""
    with full_float32(rows.device.type):  # TF32 would flip near ties between centroids
        parts = [(chunk @ centroids.T).argmax(dim=1) for chunk in rows.split(chunk_size)]
    return torch.cat(parts) if parts else rows.new_zeros(0, dtype=torch.long)


@torch.no_grad()
def spherical_kmeans(rows: Tensor, centroids: Tensor, iters: int) -> tuple[Tensor, Tensor]:
    """k-means of unit ``rows`` (N, D) of this process, jointly with the other processes' rows,
    from ``centroids`` (K, D) (the same on every process): the final unit centroids (K, D) and
    the cluster of each local row (N,). N may differ between processes (0 included)."""
    rows = rows.float()
    centroids = centroids.float().clone()
    num_clusters = len(centroids)
    for step in range(iters + 1):
        assignments = nearest_centroids(rows, centroids)
        if step == iters:
            break
        sums = torch.zeros_like(centroids).index_add_(0, assignments, rows)
        counts = torch.bincount(assignments, minlength=num_clusters)
        _all_reduce(sums), _all_reduce(counts)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
        centroids = F.normalize(centroids, dim=1)
    return centroids, assignments


@torch.no_grad()
def gather_assignments(indexes: Tensor, assignments: Tensor, dataset_size: int) -> Tensor:
    """The cluster of every dataset index that some process assigned (-1 for the others), the
    same on every process: ``indexes`` and ``assignments`` (N,) are this process's rows. The
    table is ``dataset_size`` long, or longer when an index is larger. An index held twice keeps
    one of its assignments (the last process's, in rank order)."""
    pairs = torch.stack([indexes.long(), assignments.long()], dim=1)  # (N, 2)
    pairs = gather_padded(pairs, fill=-1)  # (world * max N, 2), padded rows -1
    pairs = pairs[pairs[:, 0] >= 0]
    size = max(dataset_size, int(pairs[:, 0].max()) + 1 if len(pairs) else 0)  # once an epoch
    table = torch.full((size,), -1, dtype=torch.long, device=indexes.device)
    table[pairs[:, 0]] = pairs[:, 1]
    return table


@torch.no_grad()
def cluster_memory(indexes: Tensor, embeddings: Tensor, num_prototypes: Sequence[int],
                   iters: int, dataset_size: int, generator: torch.Generator
                   ) -> tuple[Tensor, list[Tensor]]:
    """DeepClusterV2's clustering: one spherical k-means per head, head h on the memory bank of
    large crop ``h % crops``. ``indexes`` (N,) are the dataset indexes of this process's bank rows
    and ``embeddings`` (crops, N, D) their unit projections. Returns the assignments
    (heads, >= dataset_size) by dataset index, -1 where no process holds the index, and each
    head's (K_h, D) centroids, all the same on every process."""
    tables, centroids_per_head = [], []
    for head, num_clusters in enumerate(num_prototypes):
        rows = embeddings[head % len(embeddings)]
        start = initial_centroids(rows, num_clusters, generator)
        centroids, assignments = spherical_kmeans(rows, start, iters)
        tables.append(gather_assignments(indexes, assignments, dataset_size))
        centroids_per_head.append(centroids)
    return torch.stack(tables), centroids_per_head
