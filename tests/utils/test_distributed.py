"""gather_padded on two gloo processes whose tensors differ in length, and the online kNN that
votes with the gathered banks: equal to one process holding both banks."""

from __future__ import annotations

import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from solo.nn import WeightedKNN
from solo.utils.distributed import gather_padded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _banks() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    bank, labels = torch.randn(37, 8, generator=g), torch.randint(0, 4, (37,), generator=g)
    queries, targets = torch.randn(12, 8, generator=g), torch.randint(0, 4, (12,), generator=g)
    return bank, labels, queries, targets


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        rows = torch.arange(5) + 10 * rank if rank == 0 else torch.arange(3) + 10 * rank
        gathered = gather_padded(rows.float()[:, None], fill=-1.0)
        bank, labels, queries, targets = _banks()
        split = 20  # rank 0 holds 20 bank rows, rank 1 the other 17
        mine = slice(0, split) if rank == 0 else slice(split, None)
        knn = WeightedKNN(k=5, distance="cosine")
        knn.add_bank(bank[mine], labels[mine])
        knn.add_queries(queries, targets)
        torch.save({"gathered": gathered, "knn": knn.compute(4, gather=gather_padded)},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_uneven_tensors_are_padded_then_gathered(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    expected = torch.tensor([0, 1, 2, 3, 4, 10, 11, 12, -1, -1], dtype=torch.float)[:, None]
    for result in results:
        assert torch.equal(result["gathered"], expected)  # rank order, padding at each rank's end
    bank, labels, queries, targets = _banks()
    alone = WeightedKNN(k=5, distance="cosine")
    alone.add_bank(bank, labels)
    alone.add_queries(queries, targets)
    single = alone.compute(4)
    for result in results:
        assert [float(a) for a in result["knn"]] == [float(a) for a in single]


def test_one_process_is_the_identity() -> None:
    x = torch.randn(3, 2)
    assert gather_padded(x, 0.0) is x
