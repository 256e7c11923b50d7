"""Fixtures for the zoo tests: a real pretraining checkpoint of ours and real CIFAR-10 images."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from solo.data import build_pipeline
from solo.methods import METHODS
from solo.pretrain import trainer_kwargs
from solo.utils.checkpoint import Checkpointer
from tests.helpers import shipped_config

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


def features(module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module.eval()(images)


def assert_same_network(ours: nn.Module, reference: nn.Module, images: torch.Tensor) -> None:
    """The checkpoint's weights, bit for bit, and the same features. Features are compared
    to float32 rounding, not bitwise: on inputs small enough to reach 2x2 maps, solo's ResNets
    run their last convolutions as matrix products (solo/backbones/small_input_conv.py)."""
    mine, theirs = ours.state_dict(), reference.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[key], theirs[key]) for key in mine)
    torch.testing.assert_close(features(ours, images), features(reference, images))


def real_images(root: Path, count: int, size: int = 32) -> torch.Tensor:
    """``count`` CIFAR-10 test images, one class after another, normalized, (count, 3, size, size)."""
    paths = sorted((root / "test").rglob("*.jpg"))[::97][:count]
    images = []
    for path in paths:
        image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
        array = (np.asarray(image, dtype=np.float32) / 255 - MEAN) / STD
        images.append(torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1))
    return torch.stack(images)


@pytest.fixture(scope="session")
def images(cifar_mini: Path) -> torch.Tensor:
    return real_images(cifar_mini, 8)


@pytest.fixture(scope="session")
def solo_run(cifar_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.LightningModule]:
    """A BYOL checkpoint written by our Checkpointer after one training step on real images."""
    cfg = shipped_config("byol", cifar_mini, ["++data.fraction=0.01", "++max_epochs=1"])
    pl.seed_everything(0, verbose=False)
    model = METHODS.get(cfg.method)(cfg)
    run_dir = tmp_path_factory.mktemp("solo_run") / "byol" / "run0"
    checkpointer = Checkpointer(run_dir, cfg.name, "run0", {"cfg": cfg.to_dict()})
    trainer = pl.Trainer(callbacks=[checkpointer], **{
        **trainer_kwargs(cfg), "max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 0,
        "logger": False, "enable_progress_bar": False, "enable_model_summary": False})
    trainer.fit(model, datamodule=build_pipeline(cfg))
    (checkpoint,) = run_dir.glob("*.ckpt")
    return checkpoint, model.eval()
