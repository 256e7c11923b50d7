"""batch_shuffle / batch_unshuffle (MoCo's Shuffle BN) on two gloo processes: each process gets
its rows back in its own order, and keys computed with per-process batch norm on the shuffled
shares are those of batch norm on the permuted sub-batches (= split BN, same permutation)."""

from __future__ import annotations

import torch
from torch import nn

from solo.nn import SplitBatchNorm2d
from solo.utils.distributed import batch_shuffle, batch_unshuffle
from tests.multiprocess import run_processes

PER_PROCESS = 6


def global_batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2 * PER_PROCESS, 3, 2, 2, generator=g) * 2 + 1


def _shuffled_keys(rank: int, world: int) -> dict:
    x = global_batch().chunk(world)[rank]
    torch.manual_seed(100 + rank)  # different generators: rank 0's permutation must win
    shuffled, unshuffle = batch_shuffle(x)
    keys = nn.BatchNorm2d(3).train()(shuffled)  # this process's statistics only
    return {"shuffled": shuffled, "unshuffle": unshuffle,
            "restored": batch_unshuffle(shuffled, unshuffle),
            "keys": batch_unshuffle(keys.detach(), unshuffle)}


def test_shuffle_across_two_processes_and_back() -> None:
    ranks = run_processes(_shuffled_keys)
    x = global_batch()
    assert torch.equal(ranks[0]["unshuffle"], ranks[1]["unshuffle"])  # broadcast from rank 0
    permutation = torch.argsort(ranks[0]["unshuffle"])
    assert sorted(permutation.tolist()) == list(range(2 * PER_PROCESS))
    for rank, result in enumerate(ranks):
        mine = slice(rank * PER_PROCESS, (rank + 1) * PER_PROCESS)
        assert torch.equal(result["shuffled"], x[permutation[mine]])
        assert torch.equal(result["restored"], x[mine])  # its own rows, in its own order
    # the reference: batch norm on each permuted sub-batch, the outputs put back in place
    expected = torch.empty_like(x)
    for part in permutation.view(2, -1):
        expected[part] = nn.BatchNorm2d(3).train()(x[part]).detach()
    keys = torch.cat([r["keys"] for r in ranks])
    torch.testing.assert_close(keys, expected)
    # one process with 2 split-BN sub-batches and the same permutation computes the same keys
    split = SplitBatchNorm2d(3, 2).train()(x[permutation]).detach()
    torch.testing.assert_close(split[torch.argsort(permutation)], keys)


def test_one_process_is_a_local_permutation() -> None:
    x = global_batch()
    shuffled, unshuffle = batch_shuffle(x)
    assert torch.equal(shuffled, x[torch.argsort(unshuffle)])
    assert torch.equal(batch_unshuffle(shuffled, unshuffle), x)
