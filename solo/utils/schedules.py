"""Learning-rate schedules: a pure warmup-cosine function and the Lightning scheduler config."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch.optim.lr_scheduler import ExponentialLR, LambdaLR, MultiStepLR, ReduceLROnPlateau

from solo.config import SchedulerConfig

# the metric "reduce" watches; the method logs its SSL loss under this name once per epoch
REDUCE_MONITOR = "train_loss"


def warmup_cosine(step: float, warmup_steps: float, total_steps: float, base_lr: float,
                  warmup_start_lr: float, min_lr: float) -> float:
    """Linear warmup from ``warmup_start_lr`` to ``base_lr``, then a half cosine to ``min_lr``.

    The warmup reaches ``base_lr`` at ``warmup_steps``; the cosine reaches ``min_lr`` at
    ``total_steps`` and stays there.
    """
    step = max(step, 0)
    if step >= total_steps:
        return min_lr
    if step < warmup_steps:
        return warmup_start_lr + (base_lr - warmup_start_lr) * step / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # in [0, 1)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


def build_scheduler(cfg: SchedulerConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    max_epochs: int) -> Optional[dict]:
    """The Lightning ``lr_scheduler`` config for ``cfg``, or None for "none".

    "warmup_cosine" counts optimizer steps or epochs as ``cfg.interval`` says. Its
    ``warmup_start_lr`` and ``min_lr`` are for the first group's lr; every group follows the same
    shape relative to its own lr, so a probe with 10x the lr keeps 10x throughout. "step",
    "exponential" and "reduce" update once per epoch; "reduce" monitors ``REDUCE_MONITOR``.
    """
    if cfg.name == "none":
        return None
    if cfg.name == "warmup_cosine":
        per = steps_per_epoch if cfg.interval == "step" else 1
        if per < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        group0 = optimizer.param_groups[0]
        base_lr = group0.get("initial_lr", group0["lr"])  # initial_lr is set when resuming
        warmup, total = cfg.warmup_epochs * per, max_epochs * per
        start, end = cfg.warmup_start_lr / base_lr, cfg.min_lr / base_lr

        def factor(step: int) -> float:
            return warmup_cosine(step, warmup, total, 1.0, start, end)

        return {"scheduler": LambdaLR(optimizer, factor), "interval": cfg.interval, "frequency": 1}
    if cfg.name == "step":
        scheduler = MultiStepLR(optimizer, milestones=list(cfg.lr_decay_steps or []),
                                gamma=cfg.gamma)
        return {"scheduler": scheduler, "interval": "epoch", "frequency": 1}
    if cfg.name == "exponential":
        return {"scheduler": ExponentialLR(optimizer, gamma=cfg.gamma), "interval": "epoch",
                "frequency": 1}
    if cfg.name == "reduce":
        # torch's defaults (factor 0.1, patience 10), as solo-learn uses them
        return {"scheduler": ReduceLROnPlateau(optimizer), "interval": "epoch", "frequency": 1,
                "monitor": REDUCE_MONITOR}
    raise ValueError(f"unknown scheduler '{cfg.name}'")
