"""sum_with_grad and mean_no_grad on two gloo processes: a loss of a cross-process sum (Barlow
Twins' cross-correlation) gives, after DDP's gradient averaging, the one-process gradient of
the same loss on the global batch."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from solo.utils.distributed import mean_no_grad, sum_with_grad
from tests.utils.test_distributed import _free_port

BATCH, WIDTH = 6, 4  # per process


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2 * BATCH, 3, generator=g), torch.randn(3, WIDTH, generator=g)


def _loss(z: torch.Tensor, global_batch: int, reduce=lambda c: c) -> torch.Tensor:
    """(C - I)^2 summed, C the cross-correlation of z with itself over the global batch."""
    correlation = reduce(z.T @ z) / global_batch
    return (correlation - torch.eye(WIDTH)).pow(2).sum()


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        inputs, weight = _data()
        weight.requires_grad_(True)
        local = inputs[rank * BATCH:(rank + 1) * BATCH]
        loss = _loss(local @ weight, 2 * BATCH, sum_with_grad)
        loss.backward()
        grad = weight.grad.clone()
        dist.all_reduce(grad)  # what DDP does with the parameter gradients: their mean
        torch.save({"loss": loss.detach(), "grad": grad / 2,
                    "mean": mean_no_grad(torch.tensor([float(rank)]))},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gradients_of_a_summed_statistic_equal_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    inputs, weight = _data()
    weight.requires_grad_(True)
    loss = _loss(inputs @ weight, 2 * BATCH)
    loss.backward()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(result["loss"], loss.detach(), atol=1e-6)
        assert torch.allclose(result["grad"], weight.grad, atol=1e-6)
        assert torch.equal(result["mean"], torch.tensor([0.5]))


def test_one_process_is_the_identity() -> None:
    x = torch.randn(3, 2)
    assert sum_with_grad(x) is x and mean_no_grad(x) is x
