"""Which backbone a headless state dict is, from its keys and shapes alone, and a ViT's geometry.

For checkpoints without a config (torchvision, timm, MoCo, DINO files): ResNets in torchvision's
layout, timm ViTs, solo-learn's Wide ResNets, and Swin / ConvNeXt / PoolFormer in timm's or their
official layouts, each matched to a registered size by width and blocks per stage.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

from torch import Tensor

from solo.backbones import BACKBONES
from solo.backbones.vit import VIT_SIZES
from solo.zoo.resnet_layout import infer_resnet_name

# (first stage width, blocks per stage) -> name; the sizes of the Swin, ConvNeXt and PoolFormer
# papers, as timm builds them
HIERARCHICAL_SIZES: dict[str, dict[tuple[int, tuple[int, ...]], str]] = {
    "swin": {(96, (2, 2, 6, 2)): "swin_tiny", (96, (2, 2, 18, 2)): "swin_small",
             (128, (2, 2, 18, 2)): "swin_base", (192, (2, 2, 18, 2)): "swin_large"},
    "convnext": {(96, (3, 3, 9, 3)): "convnext_tiny", (96, (3, 3, 27, 3)): "convnext_small",
                 (128, (3, 3, 27, 3)): "convnext_base", (192, (3, 3, 27, 3)): "convnext_large"},
    "poolformer": {(64, (2, 2, 6, 2)): "poolformer_s12", (64, (4, 4, 12, 4)): "poolformer_s24",
                   (64, (6, 6, 18, 6)): "poolformer_s36", (96, (6, 6, 18, 6)): "poolformer_m36",
                   (96, (8, 8, 24, 8)): "poolformer_m48"},
}
# family, a key of its blocks (stage, block), the stem weight whose first dimension is the
# width, and how stage indexes map to stages (official PoolFormer interleaves downsampling)
_BLOCK_LAYOUTS = (
    ("swin", re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.weight$"),
     "patch_embed.proj.weight", 1),
    ("convnext", re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.weight$"),
     "stem.0.weight", 1),
    ("convnext", re.compile(r"^stages\.(\d+)\.(\d+)\.dwconv\.weight$"),  # facebookresearch's
     "downsample_layers.0.0.weight", 1),
    ("poolformer", re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.weight$"),
     "stem.conv.weight", 1),
    ("poolformer", re.compile(r"^network\.(\d+)\.(\d+)\.mlp\.fc1\.weight$"),  # sail-sg's
     "patch_embed.proj.weight", 2),
)


def _blocks_per_stage(weights: Mapping[str, Tensor], pattern: re.Pattern,
                      divisor: int) -> tuple[int, ...]:
    counts: dict[int, int] = {}
    for key in weights:
        match = pattern.match(key)
        if match:
            stage, block = int(match.group(1)) // divisor, int(match.group(2))
            counts[stage] = max(counts.get(stage, 0), block + 1)
    return tuple(counts[s] for s in sorted(counts))


def infer_vit_name(weights: Mapping[str, Tensor]) -> str:
    """``vit_tiny`` .. ``vit_large`` from the embedding width and the number of blocks."""
    width = weights["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("blocks."))
    for name, (_, size_width, size_depth, _) in VIT_SIZES.items():
        if (width, depth) == (size_width, size_depth):
            return name
    raise ValueError(f"no registered ViT has width {width} and {depth} blocks; pass "
                     "backbone=... (a timm name such as timm/<name>) explicitly")


def infer_wide_resnet_name(weights: Mapping[str, Tensor]) -> str:
    """``wide_resnet28w2`` / ``w8`` from the width of the first stage and its blocks."""
    widen = weights["block1.layer.0.conv1.weight"].shape[0] // 16
    blocks = 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("block1.layer."))
    name = f"wide_resnet{6 * blocks + 4}w{widen}"
    if name not in BACKBONES:
        raise ValueError(f"the weights are a {name}, which is not registered; pass backbone=...")
    return name


def infer_backbone_name(weights: Mapping[str, Tensor]) -> str:
    """The registered backbone whose layout ``weights`` has; ValueError when none fits."""
    if "conv1.weight" in weights and "layer1.0.conv1.weight" in weights:
        return infer_resnet_name(weights)
    if "cls_token" in weights and "blocks.0.attn.qkv.weight" in weights:
        return infer_vit_name(weights)
    if "block1.layer.0.conv1.weight" in weights:
        return infer_wide_resnet_name(weights)
    for family, pattern, stem_key, divisor in _BLOCK_LAYOUTS:
        stages = _blocks_per_stage(weights, pattern, divisor)
        if stages and stem_key in weights:
            width = weights[stem_key].shape[0]
            name = HIERARCHICAL_SIZES[family].get((width, stages))
            if name is None:
                raise ValueError(f"a {family} with width {width} and {list(stages)} blocks per "
                                 "stage is not registered; pass backbone=... (timm/<name>)")
            return name
    raise ValueError("cannot tell the backbone from the weights: they are not a ResNet in "
                     "torchvision's layout, a timm ViT, Swin, ConvNeXt or PoolFormer, or a Wide "
                     f"ResNet (first keys: {', '.join(list(weights)[:5])}); pass backbone=...")


def vit_geometry(weights: Mapping[str, Tensor]) -> dict[str, int] | None:
    """``img_size`` and ``patch_size`` of a timm ViT, or None when the weights are not one with a
    class token and a square grid: the patch projection's kernel is the patch, the position
    embedding (the class token's, then the grid's) gives the grid side."""
    if not all(k in weights for k in ("cls_token", "pos_embed", "patch_embed.proj.weight")):
        return None
    if any(k.startswith("patch_embed.backbone.") for k in weights):  # a hybrid: a CNN's patches
        return None
    position, projection = weights["pos_embed"], weights["patch_embed.proj.weight"]
    if position.ndim != 3 or projection.ndim != 4:
        return None
    tokens = position.shape[1] - 1  # (1, 1 + grid * grid, width)
    grid, patch = math.isqrt(tokens), projection.shape[-1]  # (width, 3, patch, patch)
    return {"img_size": grid * patch, "patch_size": patch} if grid * grid == tokens else None


def is_vit_name(name: str) -> bool:
    """Our ViTs and timm's ``vit_*`` / ``deit_*`` VisionTransformers, which take ``img_size``
    and ``patch_size``."""
    return name in VIT_SIZES or name.removeprefix("timm/").startswith(("vit_", "deit_", "deit3_"))
