"""The base's validation extras in short real runs: collapse metrics and their one warning, and
the kNN bank taken from the training steps."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from solo.data.pipelines import validation_splits
from solo.methods import METHODS
from solo.utils.monitoring import CollapseWarning
from tests.helpers import shipped_config
from tests.methods.test_methods import fit


class TinyNet(nn.Module):
    """A small real network (so the runs take seconds); ``collapsed``: every image gets the same
    features, what a collapsed SSL embedding looks like."""

    num_features = 128

    def __init__(self, collapsed: bool = False) -> None:
        super().__init__()
        self.collapsed = collapsed
        self.net = nn.Sequential(nn.Conv2d(3, 128, 5, stride=4), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.net(x)
        return 0 * feats + 1 if self.collapsed else feats


class BankSize(pl.Callback):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and not trainer.sanity_checking:
            self.sizes.append(pl_module.knn.bank_size)


def run(cifar_mini: Path, collapsed: bool, extra: list[str], callbacks=()):
    cfg = shipped_config("simclr", cifar_mini, extra)
    model = METHODS.get("simclr")(cfg, backbone=TinyNet(collapsed))
    return fit(cfg, max_epochs=2, batches=2, callbacks=callbacks, model=model,
               limit_val_batches=8, num_sanity_val_steps=1)


def test_collapse_metrics_are_logged_and_a_collapse_warns_once(cifar_mini: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)  # a working network: no warning
        _, trainer = run(cifar_mini, collapsed=False, extra=[])
    metrics = trainer.callback_metrics
    # 8 validation batches of 16: 128 rows of width 128
    for name in ("feats", "proj"):
        assert 1.5 < float(metrics[f"val_{name}_rankme"]) <= 128
        assert float(metrics[f"val_{name}_std"]) > 0.01 * 128 ** -0.5

    with pytest.warns(CollapseWarning) as caught:
        _, trainer = run(cifar_mini, collapsed=True, extra=[])
    collapse = [w for w in caught if issubclass(w.category, CollapseWarning)]
    assert len(collapse) == 1  # two validations, one warning
    rank = float(trainer.callback_metrics["val_feats_rankme"])
    assert rank < 1.01 and str(collapse[0].message).startswith(f"feats_rankme = {rank:.3g}")


def test_a_bank_from_training_needs_no_bank_pass(cifar_mini: Path) -> None:
    sizes = BankSize()
    model, trainer = run(cifar_mini, collapsed=False, callbacks=[sizes], extra=[
        "++knn_eval.enabled=True", "++knn_eval.bank_from_training=True",
        "++knn_eval.distance_func=cosine"])
    assert validation_splits(model.cfg) == ["val"]  # no pass over the training images
    assert validation_splits(shipped_config("simclr", cifar_mini, [
        "++knn_eval.enabled=True"])) == ["val", "bank"]  # the default: as before
    # each validation votes with the epoch's 2 steps x 2 large crops x 16 images, then forgets
    assert sizes.sizes == [2 * 2 * 16, 2 * 2 * 16]
    assert 0 <= float(trainer.callback_metrics["knn_acc1"]) <= 1
    assert model.knn.bank_size == 0
