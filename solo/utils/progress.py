"""A progress bar that shows the training loss without a host sync on every step.

A value logged with ``self.log(..., prog_bar=True, on_step=True)`` is turned into a Python number
by Lightning's logger connector after every batch, whatever the bar's refresh rate: one
device-to-host copy per step, which makes the host wait for the device's queue to drain before
it can launch the next step. solo logs the loss without ``prog_bar``; this bar reads it from
``trainer.callback_metrics`` (device tensors) only when it redraws.
"""

from __future__ import annotations

from typing import Any, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

# what pretraining and the linear model log with on_step and on_epoch (Lightning's suffixes)
TRAIN_LOSS_NAMES = ("train_loss_step", "train_loss_epoch")


class LossProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, plus the callback metrics named in ``shown`` (by default the
    training loss of this step and of the last epoch), read back only when the bar redraws:
    every ``refresh_rate`` batches and at the ends of epochs and validations."""

    def __init__(self, refresh_rate: int = 20, shown: Sequence[str] = TRAIN_LOSS_NAMES) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.shown = tuple(shown)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        for name in self.shown:
            value = trainer.callback_metrics.get(name)
            if value is not None:
                metrics[name] = float(value)  # the one read-back, once per redraw
        return metrics
