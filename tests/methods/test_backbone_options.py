"""A method built on any network, started from weights on disk, or without momentum copies."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn

from solo.config import ConfigError
from solo.methods import BYOL
from solo.methods.momentum import OnlineTarget
from solo.zoo import load_method
from tests.helpers import shipped_config
from tests.methods.test_methods import fit

SMALL_HEADS = ["++method_kwargs.proj_hidden_dim=64", "++method_kwargs.pred_hidden_dim=64"]


class TinyNet(nn.Module):
    """A user's network that does not say its width."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def test_a_method_trains_a_network_given_as_an_object(cifar_mini: Path, tmp_path: Path) -> None:
    cfg = shipped_config("byol", cifar_mini, SMALL_HEADS)
    net = TinyNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = BYOL(cfg, backbone=net)
    assert model.backbone is net and model.num_features == 32  # 8 channels x 2 x 2
    assert model.projector[0].in_features == 32
    assert isinstance(model.momentum_backbone, TinyNet)  # the EMA copy is the user's network too
    _, trainer = fit(cfg, max_epochs=1, batches=2, model=model)
    assert not torch.equal(net.features[0].weight, before["features.0.weight"])  # trained in place
    trainer.save_checkpoint(tmp_path / "tiny.ckpt")
    reloaded = BYOL.load_from_checkpoint(tmp_path / "tiny.ckpt", backbone=TinyNet()).eval()
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(reloaded(images), model.eval()(images))


def test_backbone_pretrained_starts_from_weights_on_disk(cifar_mini: Path, tmp_path: Path) -> None:
    source = torchvision.models.resnet18(num_classes=10)  # a torchvision file, with its fc head
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    cfg = shipped_config("byol", cifar_mini, SMALL_HEADS + [
        f"++backbone.pretrained={path}", "++backbone.cifar_stem=False"])
    model = BYOL(cfg)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key
    # a timm model by name, from a timm file with its classifier (head.fc for ConvNeXt)
    convnext = timm.create_model("convnext_atto", num_classes=5)
    torch.save(convnext.state_dict(), path)
    cfg = shipped_config("byol", cifar_mini, SMALL_HEADS + [
        "++backbone.name=timm/convnext_atto", f"++backbone.pretrained={path}"])
    loaded = BYOL(cfg).backbone.state_dict()
    assert all(torch.equal(v, convnext.state_dict()[k]) for k, v in loaded.items())


def test_a_checkpoint_reloads_after_the_weights_it_started_from_are_gone(
        cifar_mini: Path, tmp_path: Path) -> None:
    start = tmp_path / "start.pth"
    torch.save(torchvision.models.resnet18().state_dict(), start)
    cfg = shipped_config("byol", cifar_mini, SMALL_HEADS + [
        f"++backbone.pretrained={start}", "++backbone.cifar_stem=False"])
    model, trainer = fit(cfg, max_epochs=1, batches=1)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    start.unlink()  # the checkpoint holds the trained weights: the starting file is not needed
    reloaded = load_method(tmp_path / "run.ckpt").state_dict()
    assert all(torch.equal(value, reloaded[key]) for key, value in model.state_dict().items())


def test_backbone_config_errors_name_the_key(cifar_mini: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"backbone.name: unknown backbone 'vit_smal'.*"
                                          r"did you mean \"vit_small\""):
        shipped_config("byol", cifar_mini, ["++backbone.name=vit_smal"])
    with pytest.raises(ConfigError, match="backbone.pretrained: '.*nope.pth' is not a file"):
        shipped_config("byol", cifar_mini, [f"++backbone.pretrained={tmp_path / 'nope.pth'}"])


def test_momentum_disabled_keeps_no_copies_and_no_gradient_through_targets(
        cifar_mini: Path) -> None:
    cfg = shipped_config("byol", cifar_mini, SMALL_HEADS + ["++momentum.enabled=False"])
    model = BYOL(cfg)
    assert isinstance(model.momentum_backbone, OnlineTarget)
    assert isinstance(model.momentum_projector, OnlineTarget)
    assert not any(k.startswith("momentum_") for k in model.state_dict())
    crops = [torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)]
    encoded = model.encode_batch((torch.arange(4), crops, torch.full((4,), -1)))
    assert not any(f.requires_grad for f in encoded.momentum_feats)
    assert not model.momentum_projector(encoded.feats[0]).requires_grad
    weights = model.backbone.conv1.weight.clone()
    fit(cfg, max_epochs=1, batches=2, model=model)  # no EMA step to take, training still works
    assert not torch.equal(model.backbone.conv1.weight, weights)
