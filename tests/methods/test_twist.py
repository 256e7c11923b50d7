"""TWIST's options: the momentum encoder, the self-labeling stage, its last norm, config errors."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from solo.config import ConfigError, parse_config
from solo.data import build_pipeline
from solo.losses import twist_loss
from solo.methods import TWIST
from solo.methods.momentum import OnlineTarget
from solo.nn import LocalBatchNorm1d
from solo.pretrain import trainer_kwargs
from solo.utils.schedules import cosine_schedule
from tests.helpers import CIFAR_CONFIGS, load_raw, shipped_config, small_cpu_overrides

SMALL = ["++method_kwargs.proj_hidden_dim=32", "++method_kwargs.proj_output_dim=16"]


def small_twist(cifar_mini: Path, *extra: str) -> TWIST:
    torch.manual_seed(0)
    return TWIST(shipped_config("twist", cifar_mini, SMALL + list(extra)))


def crops(seed: int = 0, batch: int = 4) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return (torch.arange(batch), [torch.randn(batch, 3, 32, 32, generator=g) for _ in range(2)],
            torch.zeros(batch, dtype=torch.long))


def test_without_momentum_encoder_both_views_go_through_the_online_network(cifar_mini: Path) -> None:
    model = small_twist(cifar_mini)
    assert isinstance(model.momentum_projector, OnlineTarget)
    assert not any("momentum" in key for key in model.state_dict())
    batch = crops()
    encoded = model.encode_batch(batch)
    assert encoded.momentum_feats == []
    loss, _ = model.ssl_loss(encoded)
    head = model.projector(torch.cat(encoded.feats)).chunk(2)  # one head call for both views
    torch.testing.assert_close(loss, twist_loss(list(head))[0])


def test_momentum_encoder_gives_the_targets(cifar_mini: Path) -> None:
    model = small_twist(cifar_mini, "++method_kwargs.use_momentum_encoder=True",
                        "++momentum.base_tau=0.996")
    assert isinstance(model.momentum_backbone, nn.Module)
    assert isinstance(model.momentum_projector, nn.Module)
    with torch.no_grad():  # make the copies differ from the online network
        for p in model.momentum_projector.parameters():
            p.mul_(0.5)
    batch = crops(1)
    encoded = model.encode_batch(batch)
    loss, _ = model.ssl_loss(encoded)
    with torch.no_grad():
        teacher = model.momentum_projector(
            torch.cat([model.momentum_backbone(c) for c in batch[1]])).chunk(2)
    student = model.projector(torch.cat(encoded.feats)).chunk(2)
    expected, _ = twist_loss(list(student), teacher_logits=list(teacher))
    torch.testing.assert_close(loss, expected)
    online_only, _ = twist_loss(list(student))
    assert not torch.allclose(loss, online_only)
    loss.backward()
    assert all(p.grad is None for p in model.momentum_projector.parameters())


class StageRecorder(pl.Callback):
    def __init__(self) -> None:
        self.keys: dict[int, set[str]] = {}
        self.quantiles: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.keys.setdefault(trainer.current_epoch, set()).update(trainer.callback_metrics)
        self.quantiles.append((trainer.global_step - 1, pl_module.quantile))


def test_self_labeling_stage_follows_twist_epochs(cifar_mini: Path) -> None:
    cfg = shipped_config("twist", cifar_mini, SMALL + [
        "++method_kwargs.self_label_epoch=1", "++method_kwargs.quantile=0.3",
        "++method_kwargs.quantile_end=0.8", "++optimizer.batch_size=4", "++knn_eval.enabled=False"])
    pl.seed_everything(0, verbose=False)
    model = TWIST(cfg)
    recorder = StageRecorder()
    trainer = pl.Trainer(**{**trainer_kwargs(cfg), "max_epochs": 2, "limit_train_batches": 2,
                            "limit_val_batches": 0, "logger": False, "enable_progress_bar": False,
                            "enable_model_summary": False}, callbacks=[recorder])
    trainer.fit(model, datamodule=build_pipeline(cfg))
    assert "train_kl_step" in recorder.keys[0] and "train_threshold_step" not in recorder.keys[0]
    assert "train_threshold_step" in recorder.keys[1]
    # the quantile's cosine runs from quantile at the stage's start to quantile_end at the end
    for step, quantile in recorder.quantiles:
        assert quantile == pytest.approx(cosine_schedule(step - 2, 2, 0.3, 0.8))
    assert recorder.quantiles[-1][1] == pytest.approx(0.3 + (0.8 - 0.3) / 2)


def test_last_norm_keeps_local_statistics_under_sync_batchnorm() -> None:
    torch.manual_seed(0)
    local, reference = LocalBatchNorm1d(6), nn.BatchNorm1d(6, affine=False)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(local))
    assert converted[0] is local  # Lightning's sync_batchnorm converts through this function
    assert local.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(10, 6) * 3 + 1
    torch.testing.assert_close(local(x), reference(x))
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(local.state_dict()[key], value)
    local.eval(), reference.eval()
    torch.testing.assert_close(local(x), reference(x))


@pytest.mark.parametrize("override,message", [
    ("++method_kwargs.last_norm=layernorm", r"last_norm: 'layernorm' is not one of \('bn', "
                                             r"'syncbn', 'none'\)"),
    ("++method_kwargs.quantile=0", r"quantile: must be in \(0, 1\], got 0"),
    ("++method_kwargs.quantile_end=1.5", r"quantile_end: must be in \(0, 1\], got 1.5"),
    ("++method_kwargs.self_label_epoch=-1", "self_label_epoch: must be >= 0"),
    ("++method_kwargs.tau=0", "tau: must be > 0"),
])
def test_bad_options_name_the_key(cifar_mini: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        shipped_config("twist", cifar_mini, [override])


def test_needs_two_large_crops(cifar_mini: Path) -> None:
    raw = load_raw(CIFAR_CONFIGS, "twist.yaml", small_cpu_overrides(cifar_mini) + SMALL)
    raw["augmentations"] = raw["augmentations"][:1]
    with pytest.raises(ConfigError, match="twist needs exactly 2 large crops"):
        TWIST(parse_config(raw))
