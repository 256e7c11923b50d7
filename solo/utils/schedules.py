"""Schedules: solo-learn's warmup-cosine lr as a pure function and a scheduler, the Lightning
scheduler config of every ``scheduler.name``, and the per-step schedules of other hyperparameters
(EMA decay, teacher temperature, weight decay) as pure functions of the optimizer step."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch.optim.lr_scheduler import ExponentialLR, LRScheduler, MultiStepLR, ReduceLROnPlateau

from solo.config import SchedulerConfig

# the metric "reduce" watches; the method logs its SSL loss under this name once per epoch
REDUCE_MONITOR = "train_loss"


def cosine_schedule(step: int, total_steps: float, start: float, end: float) -> float:
    """``start`` at step 0 moving to ``end`` at ``total_steps`` along a half cosine, then ``end``:
    BYOL's EMA decay and DINO's weight decay (``cosine_scheduler`` of its official code)."""
    progress = min(max(step, 0) / max(total_steps, 1), 1.0)
    return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2


def linear_warmup(step: float, warmup_steps: float, start: float, end: float) -> float:
    """``start`` at step 0 rising linearly to ``end`` at ``warmup_steps``, then ``end``. With
    ``warmup_steps`` 0 it is ``end`` from the start."""
    if step >= warmup_steps:
        return end
    return start + (end - start) * max(step, 0) / warmup_steps


def warmup_cosine(step: int, warmup_steps: float, total_steps: float, base_lr: float,
                  warmup_start_lr: float, min_lr: float) -> float:
    """The lr after ``step`` scheduler steps: solo-learn's linear warmup then cosine, in closed form.

    The lr rises linearly from ``warmup_start_lr`` at step 0 to ``base_lr`` at step W - 1
    (W = ``warmup_steps``), is ``base_lr`` at step W, then follows the half cosine that reaches
    ``min_lr`` at step ``total_steps`` (one past the last optimizer step) and stays there. A W that
    is not a whole number (warmup epochs x steps per epoch) is what solo-learn's recursive
    scheduler gives too: the cosine then starts from the last warmup value, at step floor(W).
    """
    w, t = warmup_steps, total_steps
    step = max(int(step), 0)

    def warming(e: int) -> float:
        return warmup_start_lr if e == 0 else warmup_start_lr + e * (base_lr - warmup_start_lr) / (w - 1)

    if step < w:
        return warming(step)
    if step == w:
        return base_lr
    if step >= t:
        return min_lr
    whole = float(w).is_integer()
    anchor_step = int(w) if whole else math.floor(w)
    anchor_lr = base_lr if whole else warming(anchor_step)

    def rise(e: float) -> float:  # 1 + cos(...): 2 where the cosine starts, 0 at total_steps
        return 1 + math.cos(math.pi * (e - w) / (t - w))

    return min_lr + (anchor_lr - min_lr) * rise(step) / rise(anchor_step)


class WarmupCosineLR(LRScheduler):
    """Every param group follows ``warmup_cosine`` from its own lr, with ``warmup_start_lr`` and
    ``min_lr`` as absolute values shared by all groups (the probe included), as in solo-learn.
    A group with ``"fixed_lr": True`` keeps its lr (SimSiam's predictor). Without warmup
    (``warmup_steps`` 0) each group starts at its own lr; solo-learn starts every group at the
    first group's lr then, which gives the probe the backbone's lr (a deliberate difference)."""

    # where the schedule comes from the config: a resumed run takes these from its own config (a
    # longer max_epochs lengthens the cosine) instead of from the checkpoint
    _FROM_CONFIG = ("warmup_steps", "total_steps", "warmup_start_lr", "min_lr")

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: float, total_steps: float,
                 warmup_start_lr: float, min_lr: float, last_epoch: int = -1) -> None:
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.warmup_start_lr, self.min_lr = warmup_start_lr, min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        lrs = []
        for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups):
            if group.get("fixed_lr", False):
                lrs.append(base_lr)
                continue
            lrs.append(warmup_cosine(self.last_epoch, self.warmup_steps, self.total_steps, base_lr,
                                     self.warmup_start_lr, self.min_lr))
        return lrs

    def state_dict(self) -> dict:
        return {k: v for k, v in super().state_dict().items() if k not in self._FROM_CONFIG}


def build_scheduler(cfg: SchedulerConfig, optimizer: torch.optim.Optimizer, total_steps: int,
                    max_epochs: int, lr_multiplier: float = 1.0) -> Optional[dict]:
    """The Lightning ``lr_scheduler`` config for ``cfg``, or None for "none".

    ``total_steps`` is the run's number of optimizer steps (Lightning's
    ``estimated_stepping_batches``). "warmup_cosine" steps every optimizer step (W = warmup_epochs
    x total_steps / max_epochs, as solo-learn) or every epoch, as ``cfg.interval`` says; its
    ``warmup_start_lr`` and ``min_lr`` are multiplied by ``lr_multiplier`` (the gradient
    accumulation factor, as every lr is). "step", "exponential" and "reduce" update once per
    epoch; "reduce" monitors ``REDUCE_MONITOR``.
    """
    if cfg.name == "none":
        return None
    if cfg.name == "warmup_cosine":
        if cfg.interval == "step":
            if total_steps < 1:
                raise ValueError(f"total_steps must be >= 1, got {total_steps}")
            warmup, total = cfg.warmup_epochs * (total_steps / max_epochs), total_steps
        else:
            warmup, total = cfg.warmup_epochs, max_epochs
        scheduler = WarmupCosineLR(optimizer, warmup, total, cfg.warmup_start_lr * lr_multiplier,
                                   cfg.min_lr * lr_multiplier)
        return {"scheduler": scheduler, "interval": cfg.interval, "frequency": 1}
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
