"""The online kNN at ImageNet scale: chunked, with the bank on the host, in fp16, and across
processes, each equal to the plain computation; and its memory bound."""

from __future__ import annotations

import pytest
import torch

import solo.nn.knn as knn_module
from solo.nn import WeightedKNN
from solo.utils.distributed import gather_padded
from solo.utils.monitoring import CollapseMonitor
from tests.multiprocess import run_processes


def data(seed: int, bank: int = 600, queries: int = 150, dim: int = 16, classes: int = 7):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (bank,), generator=g)
    centers = torch.randn(classes, dim, generator=g)
    bank_feats = centers[labels] + 1.5 * torch.randn(bank, dim, generator=g)
    targets = torch.randint(0, classes, (queries,), generator=g)
    query_feats = centers[targets] + 1.5 * torch.randn(queries, dim, generator=g)
    return bank_feats, labels, query_feats, targets


def filled(knn: WeightedKNN, bank, labels, queries, targets, batch: int = 50) -> WeightedKNN:
    for rows in torch.arange(len(bank)).split(batch):
        knn.add_bank(bank[rows], labels[rows])
    for rows in torch.arange(len(queries)).split(batch):
        knn.add_queries(queries[rows], targets[rows])
    return knn


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_chunked_scores_equal_the_unchunked_ones(distance: str) -> None:
    bank, labels, queries, targets = data(0)
    whole = WeightedKNN(k=10, distance=distance, chunk_size=len(queries))
    whole_scores = whole.predict(queries, bank, labels, 7)
    whole_acc = filled(whole, bank, labels, queries, targets).compute(7)
    for chunk_size in (1, 7, 26, 64):
        chunked = WeightedKNN(k=10, distance=distance, chunk_size=chunk_size)
        scores = chunked.predict(queries, bank, labels, 7)
        assert filled(chunked, bank, labels, queries, targets).compute(7) == whole_acc
        if chunk_size > 25:
            assert torch.equal(scores, whole_scores), chunk_size
        else:
            # a chunk of <= 25 rows takes other kernels (BLAS's matrix-vector product; cdist
            # computes distances directly below 26 rows): the same neighbours, last-bit sums
            torch.testing.assert_close(scores, whole_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_a_host_bank_in_blocks_equals_the_device_bank(distance: str) -> None:
    bank, labels, queries, targets = data(1)
    labels[::9] = -1  # unlabelled rows, left out in every block
    device = filled(WeightedKNN(k=10, distance=distance), bank, labels, queries, targets)
    # blocks of 120 rows (max_bank_on_device=100, added 50 at a time): 5 blocks, no rows left over
    host = filled(WeightedKNN(k=10, distance=distance, max_bank_on_device=100, chunk_size=32),
                  bank, labels, queries, targets)
    assert [len(f) for f, _ in host.bank_blocks()] == [100] * 6
    assert host.bank_size == device.bank_size == len(bank)
    # the neighbours and their votes merged across blocks equal those of the whole bank
    assert host.compute(7) == device.compute(7)
    keep = labels >= 0
    sim_host, targets_host = knn_module.nearest_neighbours(
        queries, [(f[t >= 0], t[t >= 0]) for f, t in host.bank_blocks()], 10, distance, 32)
    sim_device, targets_device = knn_module.nearest_neighbours(
        queries, [(bank[keep], labels[keep])], 10, distance, len(queries))
    torch.testing.assert_close(sim_host, sim_device, rtol=1e-6, atol=1e-6)
    assert torch.equal(targets_host, targets_device)


def test_an_fp16_bank_votes_as_the_fp32_bank_of_its_rounded_features() -> None:
    bank, labels, queries, targets = data(2)
    half = filled(WeightedKNN(k=10, distance="cosine", bank_dtype=torch.float16), bank, labels,
                  queries, targets)
    assert half.bank_blocks()[0][0].dtype == torch.float16  # half the memory
    rounded = filled(WeightedKNN(k=10, distance="cosine"), bank.half().float(), labels, queries,
                     targets)
    assert half.compute(7) == rounded.compute(7)


def test_the_largest_similarity_block_is_chunk_by_bank_block(monkeypatch) -> None:
    """Memory bound: what ``compute`` materializes, checked by the shapes it computes."""
    shapes = []
    real_similarity = knn_module.similarity

    def recording(queries, bank, distance):
        out = real_similarity(queries, bank, distance)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(knn_module, "similarity", recording)
    bank, labels, queries, targets = data(3, bank=1000, queries=300)
    knn = filled(WeightedKNN(k=20, distance="cosine", chunk_size=64, max_bank_on_device=200),
                 bank, labels, queries, targets)
    knn.compute(7)
    assert max(q for q, _ in shapes) == 64 and max(b for _, b in shapes) == 200
    assert len(shapes) == 5 * 5  # 5 query chunks (the last one of 44) x 5 blocks
    shapes.clear()
    filled(WeightedKNN(k=20, distance="cosine", chunk_size=64), bank, labels, queries,
           targets).compute(7)
    assert max(shapes) == (64, 1000)  # on the device: chunk x whole bank


def _gathered(rank: int, world: int, bank, labels, queries, targets, features):
    """This process's share: every other bank row, an uneven cut of the queries, and of the
    features of the collapse monitor."""
    cut = 70 if rank == 0 else len(queries)
    mine = slice(0, 70) if rank == 0 else slice(70, cut)
    knn = filled(WeightedKNN(k=10, distance="cosine", max_bank_on_device=100),
                 bank[rank::world], labels[rank::world], queries[mine], targets[mine])
    monitor = CollapseMonitor(max_rows=1000)
    monitor.add("feats", features[:110] if rank == 0 else features[110:], world)
    acc = knn.compute(7, gather=gather_padded)
    return acc, monitor.compute(gather=gather_padded)


def test_two_processes_equal_one() -> None:
    bank, labels, queries, targets = data(4)
    labels[::11] = -1
    features = torch.randn(250, 40, generator=torch.Generator().manual_seed(5))
    single = filled(WeightedKNN(k=10, distance="cosine"), bank, labels, queries, targets).compute(7)
    monitor = CollapseMonitor(max_rows=1000)
    monitor.add("feats", features)
    expected = monitor.compute()
    for acc, metrics in run_processes(_gathered, bank, labels, queries, targets, features):
        assert acc == single  # all queries against the whole bank, on every process
        for key, value in expected.items():
            torch.testing.assert_close(metrics[key], value, rtol=1e-5, atol=1e-6)
