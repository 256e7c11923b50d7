"""Run a function on two gloo processes (CPU) and collect what each returns: the 2-process tests
of every gathered or reduced loss use it, comparing with the 1-process value on the global batch.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple,
            out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        torch.set_num_threads(1)  # two processes on two cores
        torch.save(fn(rank, world, *args), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_processes(fn: Callable[..., Any], *args: Any, world: int = 2) -> list[Any]:
    """``fn(rank, world, *args)`` on ``world`` gloo processes; the list of their results, by rank.
    ``fn`` must be a module-level function (it is pickled) and return tensors or plain values."""
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(world, free_port(), fn, args, out_dir), nprocs=world, join=True)
        return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=False) for r in range(world)]


def average_gradients(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each parameter's gradient averaged over the processes, as DDP does before a step."""
    grads = []
    for p in params:
        grad = p.grad.detach().clone()
        dist.all_reduce(grad)
        grads.append(grad / dist.get_world_size())
    return grads
