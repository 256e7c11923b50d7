"""The official MoCo v1/v2, MoCo v3 and DINO checkpoints load to the features of their networks.

Each file is written here as those repositories save it (key facts: facebookresearch/moco
main_moco.py and moco/builder.py, facebookresearch/moco-v3 moco/builder.py and vits.py,
facebookresearch/dino main_dino.py), from freshly built networks with batch-norm statistics unlike
a fresh model's; the projection heads are small, their layout is the official one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn

from solo.zoo import load_pretrained
from solo.zoo.convert import convert_pretrained
from tests.zoo.conftest import assert_same_network, features, real_images


def with_statistics(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2, generator=generator)
    return model


def drifted(state: dict[str, torch.Tensor], key: str) -> dict[str, torch.Tensor]:
    """The state dict of a network that moved away from ``state`` (a momentum encoder, a
    student): ``key`` changed, the other tensors shared, which keeps the files small."""
    return {**state, key: state[key] + 0.5}


def prefixed(prefix: str, network: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = network.state_dict() if isinstance(network, nn.Module) else network
    return {prefix + k: v for k, v in state.items()}


def mlp(num_layers: int, in_dim: int, hidden: int, out: int) -> nn.Sequential:
    """MoCo v3's projector / predictor layout: Linear without bias, BN (and ReLU) between,
    a final BN without affine parameters."""
    layers: list[nn.Module] = []
    for index in range(num_layers):
        last = index == num_layers - 1
        layers.append(nn.Linear(in_dim if index == 0 else hidden, out if last else hidden,
                                bias=False))
        layers += [nn.BatchNorm1d(out, affine=False)] if last else [nn.BatchNorm1d(hidden),
                                                                      nn.ReLU()]
    return nn.Sequential(*layers)


def timm_model(name: str, weights: dict[str, torch.Tensor], **kwargs) -> nn.Module:
    """``timm.create_model(name, num_classes=0, **kwargs)`` loaded strictly with ``weights``;
    built on the meta device, as initializing it would only be overwritten."""
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=0, **kwargs)
    model.load_state_dict(weights, strict=True, assign=True)
    return model


@pytest.fixture(scope="module")
def upscaled(cifar_mini: Path) -> torch.Tensor:
    return real_images(cifar_mini, 4, size=64)  # the ImageNet stem needs more than 32 px


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_moco_v1_v2_query_encoder(tmp_path, upscaled, version):
    torch.manual_seed(0)
    encoder_q = with_statistics(torchvision.models.resnet50(num_classes=128), seed=1)
    if version == "v2":  # main_moco.py --mlp: fc becomes Linear-ReLU-fc
        encoder_q.fc = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), encoder_q.fc)
    encoder_k = drifted(encoder_q.state_dict(), "layer4.2.bn3.running_mean")  # momentum copy
    state = {**prefixed("module.encoder_q.", encoder_q), **prefixed("module.encoder_k.", encoder_k),
             "module.queue": nn.functional.normalize(torch.randn(128, 256), dim=0),
             "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    optimizer = torch.optim.SGD(encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    path = tmp_path / f"moco_{version}_200ep_pretrain.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": state,
                "optimizer": optimizer.state_dict()}, path)

    loaded = load_pretrained(path, trust_pickle=False)  # as the zoo loads downloads
    assert (loaded.source_format, loaded.method, loaded.backbone_name, loaded.cifar_stem) == (
        "moco", f"moco{version}", "resnet50", False)
    assert "module.queue" in loaded.state_dict
    encoder_q.fc = nn.Identity()
    reference = features(encoder_q, upscaled)
    assert_same_network(loaded.backbone, encoder_q, upscaled)
    # and it converts: timm's ResNet-50 gives the same features
    out, recipe = convert_pretrained(loaded, "timm", tmp_path / "r50-timm.pth")
    assert recipe == "timm.create_model('resnet50', num_classes=0)"
    target = timm_model("resnet50", torch.load(out, weights_only=True))
    torch.testing.assert_close(features(target, upscaled), reference)


def mocov3_vit_small() -> nn.Module:
    """vits.py's vit_small: width 384, 12 blocks, 12 heads (timm's has 6), LayerNorm eps 1e-6, at
    32 px so the test stays small (the position embedding then has 2 x 2 patches)."""
    return timm.create_model("vit_small_patch16_224", num_classes=0, num_heads=12, img_size=32)


def test_mocov3_vit_base_encoder_with_its_12_heads(tmp_path, images):
    torch.manual_seed(0)
    base = mocov3_vit_small()
    base.head = mlp(3, 384, 64, 32)  # the projector
    momentum = drifted(base.state_dict(), "norm.weight")
    state = {**prefixed("module.base_encoder.", base), **prefixed("module.momentum_encoder.",
                                                                   momentum),
             **prefixed("module.predictor.", mlp(2, 32, 64, 32))}
    path = tmp_path / "vit-s-300ep.pth.tar"
    torch.save({"epoch": 300, "arch": "vit_small", "state_dict": state, "optimizer": {},
                "scaler": {"scale": 65536.0, "growth_factor": 2.0}}, path)

    loaded = load_pretrained(path)
    assert (loaded.source_format, loaded.method, loaded.backbone_name) == ("mocov3", "mocov3",
                                                                           "vit_small")
    assert loaded.backbone_kwargs == {"img_size": 32, "patch_size": 16}  # read from the weights
    base.head = nn.Identity()
    ours = features(loaded.backbone, images)
    assert torch.equal(ours, features(base, images))
    # the head count is not in the weights: timm's 6-head ViT-S with them computes other features
    six_heads = timm_model("vit_small_patch16_224", base.state_dict(), img_size=32)
    assert not torch.allclose(features(six_heads, images), ours)
    # the timm conversion keeps the 12 heads
    out, recipe = convert_pretrained(loaded, "timm", tmp_path / "vit-s-timm.pth")
    assert recipe == ("timm.create_model('vit_small_patch16_224', num_classes=0, img_size=32, "
                      "patch_size=16, num_heads=12, dynamic_img_size=True)")
    target = timm_model("vit_small_patch16_224", torch.load(out, weights_only=True), img_size=32,
                        patch_size=16, num_heads=12, dynamic_img_size=True)
    torch.testing.assert_close(features(target, images), ours)


def test_mocov3_resnet50_drops_its_fc_projector(tmp_path, upscaled):
    torch.manual_seed(0)
    base = with_statistics(torchvision.models.resnet50(), seed=3)
    base.fc = mlp(2, 2048, 64, 32)
    state = {**prefixed("module.base_encoder.", base),
             **prefixed("module.momentum_encoder.", drifted(base.state_dict(), "fc.0.weight")),
             **prefixed("module.predictor.", mlp(2, 32, 64, 32))}
    path = tmp_path / "r-50-100ep.pth.tar"
    torch.save({"epoch": 100, "arch": "resnet50", "state_dict": state}, path)
    loaded = load_pretrained(path)
    assert (loaded.source_format, loaded.backbone_name) == ("mocov3", "resnet50")
    base.fc = nn.Identity()
    assert_same_network(loaded.backbone, base, upscaled)


@pytest.fixture(scope="module")
def dino_vit_small() -> nn.Module:
    """DINO's ViT-S/16: timm's (6 heads), at 32 px to stay small."""
    torch.manual_seed(0)
    return timm.create_model("vit_small_patch16_224", num_classes=0, img_size=32)


def dino_head(seed: int) -> dict[str, torch.Tensor]:
    """The keys of a (small) DINOHead: an MLP, then weight-normed prototypes."""
    generator = torch.Generator().manual_seed(seed)
    return {"head.mlp.0.weight": torch.randn(64, 384, generator=generator),
            "head.mlp.0.bias": torch.zeros(64),
            "head.mlp.2.weight": torch.randn(16, 64, generator=generator),
            "head.mlp.2.bias": torch.zeros(16), "head.last_layer.weight_g": torch.ones(128, 1),
            "head.last_layer.weight_v": torch.randn(128, 16, generator=generator)}


def test_dino_training_checkpoint_loads_the_teacher(tmp_path, images, dino_vit_small):
    teacher, teacher_head = dino_vit_small, dino_head(seed=0)
    student, student_head = drifted(teacher.state_dict(), "norm.weight"), dino_head(seed=1)
    args = argparse.Namespace(arch="vit_small", patch_size=16, out_dim=128, epochs=100)
    path = tmp_path / "checkpoint.pth"
    torch.save({"student": {**prefixed("module.backbone.", student),  # the student is DDP's
                            **{f"module.{k}": v for k, v in student_head.items()}},
                "teacher": {**prefixed("backbone.", teacher), **teacher_head},
                "optimizer": {}, "epoch": 100, "args": args,
                "dino_loss": {"center": torch.zeros(1, 128)}}, path)
    loaded = load_pretrained(path, trust_pickle=False)  # argparse.Namespace is allowed
    assert (loaded.source_format, loaded.method, loaded.backbone_name) == ("dino", "dino",
                                                                           "vit_small")
    assert "head.last_layer.weight_v" in loaded.state_dict  # the teacher's whole network
    ours = features(loaded.backbone, images)
    assert torch.equal(ours, features(teacher, images))
    student_backbone = timm_model("vit_small_patch16_224", student, img_size=32)
    assert not torch.allclose(ours, features(student_backbone, images))


def test_dino_released_backbone_is_a_timm_state_dict(tmp_path, images, dino_vit_small):
    backbone = dino_vit_small
    torch.save(backbone.state_dict(), tmp_path / "dino_deitsmall16_pretrain.pth")
    loaded = load_pretrained(tmp_path / "dino_deitsmall16_pretrain.pth")
    assert (loaded.source_format, loaded.backbone_name, loaded.method) == ("timm", "vit_small",
                                                                           None)
    assert torch.equal(features(loaded.backbone, images), features(backbone, images))
