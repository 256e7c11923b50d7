"""DeepClusterV2's spherical k-means against a reference loop, and on 2 gloo processes equal to
1 process on the same rows; the memory bank's checkpoint form (every process's rows, shared out
again)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from solo.nn.memory_bank import MemoryBank
from solo.utils.kmeans import (cluster_memory, gather_assignments, initial_centroids,
                               spherical_kmeans)
from tests.multiprocess import run_processes


# ----------------------------------------------------------------------------------------------
def reference_kmeans(rows: torch.Tensor, centroids: torch.Tensor, iters: int):
    """Row by row: the most similar centroid; each non-empty cluster's normalized mean."""
    centroids = centroids.clone()
    for step in range(iters + 1):
        labels = [int(max(range(len(centroids)), key=lambda c: float(row @ centroids[c])))
                  for row in rows]
        if step == iters:
            return centroids, torch.tensor(labels)
        for c in range(len(centroids)):
            members = [row for row, label in zip(rows, labels) if label == c]
            if members:
                mean = sum(members) / len(members)
                centroids[c] = mean / mean.norm()


def unit_rows(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, 6, generator=generator), dim=1)


def test_spherical_kmeans_matches_the_reference_loop() -> None:
    rows = unit_rows(40, seed=0)
    start = initial_centroids(rows, 5, torch.Generator().manual_seed(1))
    assert all(any(torch.equal(c, r) for r in rows) for c in start)  # rows of the bank
    assert len({tuple(c.tolist()) for c in start}) == 5  # distinct ones
    centroids, labels = spherical_kmeans(rows, start, iters=4)
    ref_centroids, ref_labels = reference_kmeans(rows, start, iters=4)
    assert torch.equal(labels, ref_labels)
    torch.testing.assert_close(centroids, ref_centroids)
    torch.testing.assert_close(centroids.norm(dim=1), torch.ones(5))


def _two_process_clustering(rank: int, world: int) -> dict:
    rows = unit_rows(24, seed=0)
    mine = slice(0, 13) if rank == 0 else slice(13, 24)  # unequal shares: padded gathers
    indexes = torch.arange(100, 124)[mine]
    embeddings = torch.stack([rows, rows.flip(1)])[:, mine]  # 2 large crops
    table, centroids = cluster_memory(indexes, embeddings, [3, 4], 3, 110,
                                      torch.Generator().manual_seed(7))
    # the memory bank's checkpoint form: every process's rows, shared out again
    owner = nn.Module()
    bank = MemoryBank(owner, crops=2, dim=6)
    bank.allocate(16)
    bank.write(indexes, list(embeddings.unbind(0)))
    checkpoint = {"state_dict": dict(owner.state_dict())}
    bank.gather_into(checkpoint)
    saved = {k: v.clone() for k, v in checkpoint["state_dict"].items()}
    bank.share_from(checkpoint)
    return {"table": table, "centroids": centroids, "saved": saved,
            "shared": checkpoint["state_dict"], "local": dict(owner.state_dict())}


def test_kmeans_on_two_processes_equals_one_process() -> None:
    ranks = run_processes(_two_process_clustering)
    rows = unit_rows(24, seed=0)
    crops = [rows, rows.flip(1)]
    for head, k in enumerate([3, 4]):
        # one process holding every row, started from the same rows of rank 0's bank
        start = initial_centroids(crops[head % 2][:13], k, torch.Generator().manual_seed(7)
                                  if head == 0 else generator_after_first_head())
        centroids, labels = spherical_kmeans(crops[head % 2], start, 3)
        table = gather_assignments(torch.arange(100, 124), labels, 110)
        for result in ranks:
            torch.testing.assert_close(result["centroids"][head], centroids)
            assert torch.equal(result["table"][head], table)
    assert (ranks[0]["table"][:, :100] == -1).all() and (ranks[0]["table"][:, 100:] >= 0).all()
    # the saved bank holds both processes' rows; each process gets its own back
    saved = ranks[0]["saved"]
    assert saved["local_memory_index"].tolist() == (list(range(100, 113)) + [-1] * 3
                                                    + list(range(113, 124)) + [-1] * 5)
    for result in ranks:
        for key in ("local_memory_index", "local_memory_embeddings"):
            assert torch.equal(result["shared"][key], result["local"][key]), key


def generator_after_first_head() -> torch.Generator:
    """The generator as cluster_memory leaves it after drawing the first head's 3 rows."""
    generator = torch.Generator().manual_seed(7)
    torch.randperm(13, generator=generator)
    return generator
