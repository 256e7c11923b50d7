"""Every registered backbone: headless, with the feature width its paper states, at 32 and 224 px;
MoCo v3's ViT against its equations; Wide ResNet against a functional reference."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from solo.backbones import (BACKBONES, build_backbone, feature_width, is_convolutional,
                            unknown_backbone)
from solo.backbones.vit import sincos_position_embedding

# the pooled feature width each architecture's paper states
STATED_WIDTHS = {
    "resnet18": 512, "resnet50": 2048,
    "vit_tiny": 192, "vit_small": 384, "vit_base": 768, "vit_large": 1024,
    "swin_tiny": 768, "swin_small": 768, "swin_base": 1024, "swin_large": 1536,
    "convnext_tiny": 768, "convnext_small": 768, "convnext_base": 1024, "convnext_large": 1536,
    "poolformer_s12": 512, "poolformer_s24": 512, "poolformer_s36": 512, "poolformer_m36": 768,
    "poolformer_m48": 768, "wide_resnet28w2": 128, "wide_resnet28w8": 512,
}
CONVOLUTIONAL = ("resnet", "convnext", "poolformer", "wide_resnet")


def test_every_registered_name_has_a_stated_width() -> None:
    assert set(BACKBONES.names()) == set(STATED_WIDTHS)


@pytest.mark.parametrize("name", sorted(STATED_WIDTHS))
def test_headless_with_the_stated_width_at_32_and_224_pixels(name: str) -> None:
    torch.manual_seed(0)
    model = build_backbone(name, image_size=224).eval()
    assert model.num_features == STATED_WIDTHS[name]
    with torch.no_grad():
        for size in (32, 224):
            assert model(torch.rand(1, 3, size, size)).shape == (1, STATED_WIDTHS[name])
    assert is_convolutional(model) == name.startswith(CONVOLUTIONAL)


def test_vit_takes_solo_learns_cifar_kwargs_and_sizes_its_grid_to_the_crop() -> None:
    model = build_backbone("vit_small", patch_size=4, img_size=32)
    assert model.patch_embed.patch_size == (4, 4) and model.pos_embed.shape == (1, 65, 384)
    assert build_backbone("vit_small", image_size=96).pos_embed.shape == (1, 37, 384)
    # fused attention (scaled_dot_product_attention), timm's default
    assert all(block.attn.fused_attn for block in model.blocks)


# ----------------------------------------------------------------------------------------------
# MoCo v3's ViT (arXiv:2104.02057)
# ----------------------------------------------------------------------------------------------
def reference_sincos(height: int, width: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """The official equations, one entry at a time: token k = i * height + j of the meshgrid
    over (width, height), frequencies temperature ** (-d / (dim / 4))."""
    quarter = dim // 4
    rows = [[0.0] * dim]
    for i in range(width):
        for j in range(height):
            row = []
            for coordinate in (i, j):
                angles = [coordinate / temperature ** (d / quarter) for d in range(quarter)]
                row += [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
            rows.append(row)
    return torch.tensor(rows)[None]


def test_sincos_position_embedding_matches_the_equations() -> None:
    assert torch.allclose(sincos_position_embedding((4, 4), 16), reference_sincos(4, 4, 16),
                          atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_position_embedding((2, 2), 6)


def test_mocov3_selects_its_variant() -> None:
    model = build_backbone("vit_small", method="mocov3", patch_size=4, image_size=32)
    assert torch.allclose(model.pos_embed, reference_sincos(8, 8, 384), atol=1e-5)
    assert not model.pos_embed.requires_grad
    assert not any(p.requires_grad for p in model.patch_embed.proj.parameters())
    assert model.blocks[0].attn.num_heads == 12  # the paper's ViT-S; timm's has 6
    qkv = model.blocks[0].attn.qkv.weight  # uniform over +-sqrt(6 / (384 + 384)) per matrix
    assert qkv.abs().max() <= math.sqrt(6 / (384 + 384)) and qkv.std() > 0.5 * math.sqrt(2 / 768)
    assert torch.count_nonzero(model.blocks[0].attn.qkv.bias) == 0
    # any method may ask for it; frozen_patch_embed: False trains the projection
    trainable = build_backbone("vit_tiny", method="byol", variant="mocov3",
                               frozen_patch_embed=False, patch_size=4, image_size=32)
    assert trainable.patch_embed.proj.weight.requires_grad and not trainable.pos_embed.requires_grad
    default = build_backbone("vit_small", method="byol", patch_size=4, image_size=32)
    assert default.pos_embed.requires_grad and default.blocks[0].attn.num_heads == 6
    assert default.patch_embed.proj.weight.requires_grad
    frozen = build_backbone("vit_tiny", frozen_patch_embed=True, patch_size=4, image_size=32)
    assert not frozen.patch_embed.proj.weight.requires_grad and frozen.pos_embed.requires_grad
    with pytest.raises(ValueError, match="variant: 'moco' is not one of"):
        build_backbone("vit_tiny", variant="moco")


def test_mocov3_patch_projection_keeps_its_random_weights_while_training() -> None:
    torch.manual_seed(0)
    model = build_backbone("vit_tiny", method="mocov3", patch_size=8, image_size=32)
    projection = model.patch_embed.proj.weight.clone()
    block = model.blocks[0].mlp.fc1.weight.clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.rand(4, 3, 32, 32)).pow(2).sum().backward()
    optimizer.step()
    assert torch.equal(model.patch_embed.proj.weight, projection)
    assert not torch.equal(model.blocks[0].mlp.fc1.weight, block)


# ----------------------------------------------------------------------------------------------
# Wide ResNet-28: solo-learn's layout, FixMatch's computation
# ----------------------------------------------------------------------------------------------
def reference_wide_resnet(state: dict, x: torch.Tensor, blocks: int) -> torch.Tensor:
    """WRN-28 in eval mode written with functional ops on the state dict (FixMatch's block)."""

    def norm(prefix: str, t: torch.Tensor) -> torch.Tensor:
        out = F.batch_norm(t, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                           state[f"{prefix}.weight"], state[f"{prefix}.bias"], eps=0.001)
        return F.leaky_relu(out, 0.1)

    def conv(prefix: str, t: torch.Tensor, stride: int = 1, padding: int = 1) -> torch.Tensor:
        return F.conv2d(t, state[f"{prefix}.weight"], state[f"{prefix}.bias"], stride, padding)

    out = conv("conv1", x)
    for stage, first_stride in ((1, 1), (2, 2), (3, 2)):
        for index in range(blocks):
            p = f"block{stage}.layer.{index}"
            stride = first_stride if index == 0 else 1
            activated = norm(f"{p}.bn1", out)
            if f"{p}.convShortcut.weight" in state:
                source = activated if stage == 1 else out  # activate_before_residual: block1
                shortcut = conv(f"{p}.convShortcut", source, stride, 0)
                residual = conv(f"{p}.conv1", source, stride)
            else:
                shortcut, residual = out, conv(f"{p}.conv1", activated, stride)
            out = shortcut + conv(f"{p}.conv2", norm(f"{p}.bn2", residual))
    return norm("bn1", out).mean(dim=(2, 3))


def test_wide_resnet_matches_the_functional_reference_and_solo_learns_keys() -> None:
    torch.manual_seed(0)
    model = build_backbone("wide_resnet28w2")
    with torch.no_grad():  # give the batch norms statistics of their own
        model.train()(torch.rand(8, 3, 32, 32) * 2)
    model.eval()
    x = torch.rand(3, 3, 32, 32)
    state = model.state_dict()
    with torch.no_grad():
        assert torch.allclose(model(x), reference_wide_resnet(state, x, blocks=4), atol=1e-5)
    assert {"conv1.weight", "conv1.bias", "block1.layer.0.convShortcut.weight",
            "block3.layer.3.conv2.bias", "bn1.running_var"} <= set(state)
    assert "block1.layer.1.convShortcut.weight" not in state
    assert model.bn1.momentum == 0.001 and model.bn1.eps == 0.001


# ----------------------------------------------------------------------------------------------
# any timm model, any nn.Module
# ----------------------------------------------------------------------------------------------
def test_a_timm_name_outside_the_registry_builds_headless() -> None:
    for name in ("timm/resnet10t", "resnet10t"):
        model = build_backbone(name)
        assert model.num_features == 512 and model(torch.rand(1, 3, 64, 64)).shape == (1, 512)
    # our own names keep their layouts; "timm/" reaches timm's model of the same name
    assert isinstance(build_backbone("timm/resnet18"), timm.models.ResNet)
    assert not isinstance(build_backbone("resnet18"), timm.models.ResNet)


def test_an_unknown_name_lists_the_closest_timm_models() -> None:
    message = unknown_backbone("convnext_atoo")
    assert "timm/convnext_atto" in message and "valid: convnext_base" in message
    with pytest.raises(KeyError, match="timm/convnext_atto"):
        build_backbone("timm/convnext_atoo")


def test_timm_weights_only_from_disk(tmp_path) -> None:
    with pytest.raises(ValueError, match="would download weights"):
        build_backbone("timm/resnet10t", pretrained=True)
    source = timm.create_model("resnet10t", num_classes=10)  # with a classifier, as timm saves
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    model = build_backbone("timm/resnet10t", pretrained_cfg_overlay={"file": str(path)})
    for key, value in model.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_feature_width_of_any_module_by_one_forward_pass() -> None:
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.AdaptiveAvgPool2d(2))
    running_mean = net[1].running_mean.clone()
    assert feature_width(net, image_size=32) == 24  # 6 channels x 2 x 2, flattened
    assert net.training and torch.equal(net[1].running_mean, running_mean)  # stats untouched
    with pytest.raises(TypeError, match="returns a tuple"):
        feature_width(nn.Sequential(_Pair()), 32)


class _Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple:
        return x, x
