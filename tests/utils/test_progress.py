"""The progress bar shows the training loss, which is logged without prog_bar (Lightning reads
those back from the device after every step; tests/methods/test_host_reads.py checks that none
are read back)."""

from __future__ import annotations

from pathlib import Path

from solo.pretrain import progress_bar
from solo.utils.progress import LossProgressBar
from tests.helpers import shipped_config
from tests.methods.test_methods import fit


def test_the_config_sets_the_bar(cifar_mini: Path) -> None:
    [bar] = progress_bar(shipped_config("byol", cifar_mini,
                                        ["++performance.progress_bar_refresh_rate=7"]))
    assert isinstance(bar, LossProgressBar) and bar.refresh_rate == 7
    assert progress_bar(shipped_config("byol", cifar_mini, ["++enable_progress_bar=False"])) == []


def test_the_bar_shows_the_steps_and_the_epochs_loss(cifar_mini: Path) -> None:
    cfg = shipped_config("byol", cifar_mini, ["++backbone.cifar_stem=False"])
    [bar] = progress_bar(cfg)
    _, trainer = fit(cfg, max_epochs=1, batches=2, callbacks=[bar], enable_progress_bar=True)
    shown = bar.get_metrics(trainer, trainer.lightning_module)
    assert shown["train_loss_step"] == float(trainer.callback_metrics["train_loss_step"])
    assert shown["train_loss_epoch"] == float(trainer.callback_metrics["train_loss_epoch"])
    assert not any(name.startswith("train_loss") for name in trainer.progress_bar_metrics)
