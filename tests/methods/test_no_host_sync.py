"""On a GPU, training steps through a real Trainer (LARS, bf16, views made on the device) never
wait for the device: CUDA's sync debug mode turns any device-to-host synchronisation inside a
window of steps into an error. Skipped without a GPU; scripts/benchmark/gpu_check.sh runs it."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from solo.data import build_pipeline
from solo.methods import METHODS
from solo.pretrain import pretrain, trainer_kwargs
from tests.helpers import shipped_config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
FIRST, LAST = 3, 7  # steps 0-2 may synchronise (allocator growth, cuDNN's kernel search)
ON_GPU = ["++data.pipeline=gpu", "++accelerator=gpu", "++devices=1", "++precision=bf16-mixed",
          "++knn_eval.enabled=False", "++log_every_n_steps=1000"]


class NoSyncWindow(pl.Callback):
    """Sync debug mode "error" from the start of step FIRST to the end of step LAST."""

    def __init__(self) -> None:
        self.checked = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == FIRST:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if FIRST <= batch_idx <= LAST:
            self.checked += 1
        if batch_idx == LAST:
            torch.cuda.set_sync_debug_mode("default")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("method", ["byol", "simclr", "mocov2plus"])
def test_training_steps_do_not_wait_for_the_device(cifar_mini: Path, method: str) -> None:
    cfg = shipped_config(method, cifar_mini, ON_GPU + ["++optimizer.name=lars"])
    window = NoSyncWindow()
    trainer = pl.Trainer(**{**trainer_kwargs(cfg), "max_epochs": 1, "limit_train_batches": LAST + 2,
                            "limit_val_batches": 0, "logger": False, "enable_progress_bar": False,
                            "enable_model_summary": False}, callbacks=[window])
    trainer.fit(METHODS.get(method)(cfg), datamodule=build_pipeline(cfg))
    assert window.checked == LAST - FIRST + 1
    assert type(trainer.optimizers[0]).__name__ == "LARS"


def test_pretrain_steps_do_not_wait_for_the_device(cifar_mini: Path, tmp_path: Path) -> None:
    # pretrain() itself: its progress bar, checkpointer, per-step seeds and CSV logger too
    cfg = shipped_config("byol", cifar_mini, ON_GPU + [
        "++max_epochs=1", f"++limit_train_batches={LAST + 2}", "++limit_val_batches=0",
        "++enable_progress_bar=True", "++checkpoint.enabled=True", f"++checkpoint.dir={tmp_path}",
        "++checkpoint.every_n_steps=100"])
    window = NoSyncWindow()
    pretrain(cfg, callbacks=[window])
    assert window.checked == LAST - FIRST + 1
