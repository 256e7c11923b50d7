"""LinearModel: a frozen backbone keeps its weights and BN statistics; fine-tuning changes them."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from solo.eval.linear import LinearModel, build_criterion
from solo.eval.linear_config import LinearConfig, parse_linear_config
from solo.eval.linear_data import LinearDataModule
from solo.eval.linear_run import load_backbone
from tests.eval.linear_fixtures import LINEAR_CONFIGS, linear_overrides, save_byol_checkpoint
from tests.helpers import load_raw
from tests.host_sync import HostReadWindow


@pytest.fixture(scope="module")
def pretrained_file(cifar_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_byol_checkpoint(tmp_path_factory.mktemp("pretrained") / "byol.ckpt", cifar_mini)


def config(pretrained: Path, cifar_mini: Path, tmp_path: Path, *extra: str) -> LinearConfig:
    overrides = linear_overrides(pretrained, cifar_mini, tmp_path / "ckpt", batch_size=8)
    return parse_linear_config(load_raw(LINEAR_CONFIGS, "linear.yaml", overrides + list(extra)))


def train_steps(cfg: LinearConfig, tmp_path: Path, steps: int = 3,
                callbacks: list[pl.Callback] | None = None) -> tuple[LinearModel, dict, dict,
                                                                     pl.Trainer]:
    """Fit a few steps; the backbone's and the head's states before training, and the trainer."""
    model = LinearModel(load_backbone(cfg).backbone, cfg)
    backbone_before = copy.deepcopy(model.backbone.state_dict())  # weights and BN buffers
    head_before = copy.deepcopy(model.classifier.state_dict())
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=steps,
                         limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=callbacks or [])
    trainer.fit(model, datamodule=LinearDataModule(cfg, tmp_path / "run"))
    assert trainer.global_step == steps
    return model, backbone_before, head_before, trainer


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.filterwarnings("ignore:.*in eval mode")
def test_frozen_backbone_keeps_weights_and_bn_statistics(pretrained_file: Path, cifar_mini: Path,
                                                         tmp_path: Path) -> None:
    cfg = config(pretrained_file, cifar_mini, tmp_path)
    model, backbone_before, head_before, trainer = train_steps(cfg, tmp_path)
    assert changed(backbone_before, model.backbone.state_dict()) == set()
    assert any(k.endswith("running_mean") for k in backbone_before)  # BN buffers were compared
    assert changed(head_before, model.classifier.state_dict()) == {"weight", "bias"}
    assert not any(m.training for m in model.backbone.modules()) and model.classifier.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    # only the head is optimized, at lr 0.1 scaled to the batch of 8
    (group,) = trainer.optimizers[0].param_groups
    assert group["params"] == list(model.classifier.parameters())
    assert group["initial_lr"] == pytest.approx(0.1 * 8 / 256)


def test_finetune_changes_backbone_with_its_own_lr(pretrained_file: Path, cifar_mini: Path,
                                                   tmp_path: Path) -> None:
    cfg = config(pretrained_file, cifar_mini, tmp_path, "++finetune=True",
                 "++optimizer.backbone_lr=0.01", "++scheduler.name=none")
    model, backbone_before, head_before, trainer = train_steps(cfg, tmp_path, steps=2)
    after = model.backbone.state_dict()
    moved = changed(backbone_before, after)
    assert "conv1.weight" in moved and "layer4.1.conv2.weight" in moved
    assert "bn1.running_mean" in moved and "bn1.running_var" in moved  # BN in training mode
    assert changed(head_before, model.classifier.state_dict()) == {"weight", "bias"}
    head, backbone = trainer.optimizers[0].param_groups
    assert head["name"] == "linear" and head["lr"] == pytest.approx(0.1 * 8 / 256)
    assert backbone["name"] == "backbone" and backbone["lr"] == pytest.approx(0.01 * 8 / 256)


def test_training_steps_read_nothing_back_from_the_device(pretrained_file: Path,
                                                          cifar_mini: Path, tmp_path: Path) -> None:
    # fine-tuning with mixup: the most the linear model does in a step (tests/host_sync.py)
    cfg = config(pretrained_file, cifar_mini, tmp_path, "++finetune=True", "++mixup=0.8")
    window = HostReadWindow(first=1, last=2)
    train_steps(cfg, tmp_path, steps=4, callbacks=[window])
    window.assert_read_nothing()


def test_criteria(pretrained_file: Path, cifar_mini: Path, tmp_path: Path) -> None:
    assert type(build_criterion(config(pretrained_file, cifar_mini, tmp_path))) is nn.CrossEntropyLoss
    smooth = build_criterion(config(pretrained_file, cifar_mini, tmp_path, "++label_smoothing=0.2"))
    assert isinstance(smooth, LabelSmoothingCrossEntropy) and smooth.smoothing == 0.2
    mixing = config(pretrained_file, cifar_mini, tmp_path, "++mixup=0.8", "++label_smoothing=0.1")
    assert isinstance(build_criterion(mixing), SoftTargetCrossEntropy)
    model = LinearModel(nn.Sequential(nn.Flatten(), nn.Linear(12, 6)), mixing, num_features=6)
    images, targets = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    mixed, soft = model.mixup(images, targets)
    # each row's soft target spreads smoothing over the 10 classes and sums to one
    assert mixed.shape == images.shape and soft.shape == (4, 10)
    torch.testing.assert_close(soft.sum(1), torch.ones(4))
    assert (soft >= 0.1 / 10 - 1e-6).all()


def test_load_backbone_records_what_it_loaded(pretrained_file: Path, cifar_mini: Path,
                                              tmp_path: Path) -> None:
    cfg = config(pretrained_file, cifar_mini, tmp_path, "~backbone")
    assert cfg.backbone.name is None and cfg.pretrain_method is None
    pretrained = load_backbone(cfg)
    assert (cfg.backbone.name, cfg.backbone.cifar_stem, cfg.pretrain_method) == (
        "resnet18", False, "byol")
    assert pretrained.backbone.num_features == 512
    with pytest.warns(UserWarning, match="pretrain_method is 'simclr' but .* was pretrained with "
                                         "'byol'"):
        load_backbone(config(pretrained_file, cifar_mini, tmp_path, "++pretrain_method=simclr"))
