"""Random numbers keyed by where training stands, so that a resumed run draws what the
uninterrupted one drew.

Nothing random in training is read from a stream that runs on from the start of the run. Each
draw is made from a generator seeded, just before it, from the config's seed and a key:

- the training step's random numbers (dropout, masks, drop path, anything a method draws in
  ``training_step`` or its hooks): python's ``random``, numpy's global generator and torch's
  (CPU and every CUDA device) are seeded at each ``on_train_batch_start`` from (seed, epoch,
  batch index in the epoch) by ``StepSeeds``;
- the CPU pipeline's views: torch's generator is seeded per image from (seed, epoch, dataset
  index) (``seeded_torch`` in solo/data/datasets.py), whatever the worker process;
- the GPU pipeline's views: its generator is seeded per batch from (seed, epoch, batch, rank).

A checkpoint therefore needs no generator states: the key of every later draw follows from the
restored progress. What runs between two steps (validation, epoch hooks, the DataLoader's own
seed draws) can no longer shift the next step's numbers either. The same seed is used on every
process, as ``seed_everything`` does, so draws that all ranks must agree on still agree.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def mix_seed(*parts: int) -> int:
    """One seed in [0, 2**63) from integers; nearby keys give unrelated seeds. Python integers
    only: a few hundred nanoseconds a call."""
    value = 0
    for part in parts:
        value = _splitmix64(value ^ (int(part) & MASK64))
    return value >> 1


def seed_all(seed: int) -> None:
    """Python's ``random``, numpy's global generator and torch's generators (CPU and every CUDA
    device) seeded from ``seed``."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)  # numpy's legacy seed is 32 bits
    torch.manual_seed(seed)


class StepSeeds(pl.Callback):
    """Seeds every global generator at the start of each training batch from (seed, epoch,
    batch index in the epoch), before the method's own ``on_train_batch_start`` and its
    ``training_step`` draw anything."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        seed_all(mix_seed(self.seed, 0x57E9, trainer.current_epoch, batch_idx))
