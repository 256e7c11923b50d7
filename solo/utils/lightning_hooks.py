"""What every LightningModule of solo (pretraining methods, the linear model) does the same way:
logging host numbers without stalling the device, and pairing the optimizer with its schedule."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch.optim import Optimizer

from solo.config import SchedulerConfig
from solo.utils.optim import restore_fixed_lrs
from solo.utils.schedules import build_scheduler


def log_host_values(module: pl.LightningModule, values: dict[str, float],
                    step: int | None = None) -> None:
    """Log Python numbers on the logger's steps only: logging one copies it to the device, and
    that copy waits for the device's queue to drain. ``log_every_n_steps: 0`` logs no steps, as
    in Lightning. ``step``: the step count to judge by, the trainer's global step by default."""
    every = module.trainer.log_every_n_steps
    step = module.trainer.global_step if step is None else step
    if every and step % every == 0:
        module.log_dict(values, on_step=True, on_epoch=False)


def accumulation(module: pl.LightningModule) -> int:
    """Batches per optimizer step (the trainer's ``accumulate_grad_batches``), 1 when detached."""
    return int(module.trainer.accumulate_grad_batches) if module._trainer is not None else 1


def with_schedule(module: pl.LightningModule, optimizer: Optimizer,
                  scheduler_cfg: SchedulerConfig) -> Any:
    """What ``configure_optimizers`` returns: the optimizer, and its scheduler over the trainer's
    estimated optimizer steps when the config has one. Under gradient accumulation the schedule's
    absolute lrs (``warmup_start_lr``, ``min_lr``) are scaled like every lr, as in solo-learn."""
    attached = module._trainer is not None
    max_epochs = max(1, module.trainer.max_epochs or 1) if attached else 1
    stepping = int(module.trainer.estimated_stepping_batches) if attached else 1
    scheduler = build_scheduler(scheduler_cfg, optimizer, max(1, stepping), max_epochs,
                                lr_multiplier=accumulation(module))
    if scheduler is None:
        return optimizer
    restore_fixed_lrs(optimizer)  # the scheduler set its first lr in every group
    return {"optimizer": optimizer, "lr_scheduler": scheduler}
