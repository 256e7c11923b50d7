"""solo-learn's module layout, rebuilt here from its method files (module names and layer order),
loads into our methods whole: backbone, online classifier, projector, predictor, momentum
networks and MoCo's queue, strictly, and computes the same outputs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from solo.methods import METHODS
from solo.methods.base import upgrade_state_dict
from tests.helpers import shipped_config


def solo_learn_resnet18_cifar() -> nn.Module:
    """solo-learn's CIFAR backbone: torchvision's ResNet-18, fc removed, 3x3 stride-1 stem with
    padding 2, no max-pool."""
    net = torchvision.models.resnet18()
    net.fc = nn.Identity()
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    net.maxpool = nn.Identity()
    return net


def two_layer(in_dim: int, hidden: int, out: int, batch_norm: bool) -> nn.Sequential:
    middle = [nn.BatchNorm1d(hidden)] if batch_norm else []
    return nn.Sequential(nn.Linear(in_dim, hidden), *middle, nn.ReLU(), nn.Linear(hidden, out))


def solo_learn_model(method: str, kwargs, num_classes: int, momentum_classifier: bool) -> nn.Module:
    """The modules solo-learn's BaseMethod / BaseMomentumMethod and method classes create."""
    torch.manual_seed(1)
    model = nn.Module()
    model.backbone = solo_learn_resnet18_cifar()
    model.classifier = nn.Linear(512, num_classes)
    if method != "simclr":
        model.momentum_backbone = copy.deepcopy(model.backbone)
    if momentum_classifier:
        model.momentum_classifier = nn.Linear(512, num_classes)
    if method == "simclr":
        model.projector = two_layer(512, kwargs.proj_hidden_dim, kwargs.proj_output_dim, False)
    elif method == "byol":
        model.projector = two_layer(512, kwargs.proj_hidden_dim, kwargs.proj_output_dim, True)
        model.momentum_projector = copy.deepcopy(model.projector)
        model.predictor = two_layer(kwargs.proj_output_dim, kwargs.pred_hidden_dim,
                                    kwargs.proj_output_dim, True)
    else:  # mocov2plus
        model.projector = two_layer(512, kwargs.proj_hidden_dim, kwargs.proj_output_dim, False)
        model.momentum_projector = copy.deepcopy(model.projector)
        model.register_buffer("queue", nn.functional.normalize(
            torch.randn(2, kwargs.proj_output_dim, kwargs.queue_size), dim=1))
        model.register_buffer("queue_ptr", torch.tensor([128], dtype=torch.long))
    for module in model.modules():  # batch-norm statistics that differ from a fresh model's
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("method, momentum_classifier", [("byol", True), ("byol", False),
                                                          ("simclr", False), ("mocov2plus", True)])
def test_solo_learn_state_dict_loads_whole_and_computes_the_same(cifar_mini: Path, method: str,
                                                                 momentum_classifier: bool) -> None:
    cfg = shipped_config(method, cifar_mini, [f"++momentum.classifier={momentum_classifier}",
                                              "++method_kwargs.proj_hidden_dim=64",
                                              "++method_kwargs.proj_output_dim=32"]
                         + (["++method_kwargs.pred_hidden_dim=48"] if method == "byol" else [])
                         + (["++method_kwargs.queue_size=512"] if method == "mocov2plus" else []))
    theirs = solo_learn_model(method, cfg.method_kwargs, cfg.num_classes, momentum_classifier)
    ours = METHODS.get(method)(cfg)
    state = theirs.state_dict()
    assert sorted(ours.state_dict()) == sorted(state)  # the same keys, nothing more or less
    ours.load_state_dict(state, strict=True)
    ours.eval()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        feats = ours.backbone(images)
        torch.testing.assert_close(feats, theirs.backbone(images))
        torch.testing.assert_close(ours.classifier(feats), theirs.classifier(feats))
        torch.testing.assert_close(ours.projector(feats), theirs.projector(feats))
        if method == "byol":
            z = theirs.projector(feats)
            torch.testing.assert_close(ours.predictor(z), theirs.predictor(z))
            torch.testing.assert_close(ours.momentum_projector(feats), theirs.momentum_projector(feats))
    if method == "mocov2plus":
        assert ours.queue_ptr.shape == (1,) and int(ours.queue_ptr) == 128
        assert torch.equal(ours.queue, theirs.queue)


def test_checkpoints_of_solo_0_1_still_load(cifar_mini: Path) -> None:
    """solo 0.1 kept the probe under 'probe.linear', had no bias before the heads' batch norm and
    a 0-d queue pointer: the upgraded state dict loads and gives the same projections."""
    cfg = shipped_config("mocov2plus", cifar_mini, ["++momentum.classifier=True",
                                                    "++method_kwargs.queue_size=512"])
    model = METHODS.get("mocov2plus")(cfg).eval()
    old = {}
    for key, value in model.state_dict().items():
        key = key.replace("momentum_classifier.", "momentum_probe.linear.")
        key = key.replace("classifier.", "probe.linear.") if key.startswith("classifier.") else key
        old[key] = value.reshape(()) if key == "queue_ptr" else value
    upgraded = upgrade_state_dict(old, model.state_dict())
    assert sorted(upgraded) == sorted(model.state_dict())
    model.load_state_dict(upgraded, strict=True)

    byol_cfg = shipped_config("byol", cifar_mini)
    byol = METHODS.get("byol")(byol_cfg).eval()
    without_bias = {k: v for k, v in byol.state_dict().items()
                    if k not in ("projector.0.bias", "predictor.0.bias", "momentum_projector.0.bias")}
    feats = torch.randn(8, 512)
    with torch.no_grad():
        byol.projector[0].bias.zero_()
        expected = byol.projector(feats)
        byol.projector[0].bias.fill_(3.0)
        byol.load_state_dict(upgrade_state_dict(without_bias, byol.state_dict()), strict=True)
        torch.testing.assert_close(byol.projector(feats), expected)
