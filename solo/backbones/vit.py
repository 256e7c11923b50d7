"""Vision Transformers (Dosovitskiy et al., arXiv:2010.11929) under solo-learn's names.

``vit_tiny/small/base/large`` are timm's VisionTransformer, headless, patch 16 unless
``backbone.kwargs.patch_size`` says otherwise (solo-learn's CIFAR recipe: patch 4, img_size 32).
The position grid is sized to the largest crop unless ``img_size`` is given, and smaller crops
(multi-crop) interpolate it (timm's ``dynamic_img_size``), as DINO does for its local crops.

MoCo v3's variant (Chen, Xie, He, arXiv:2104.02057, section 4 "Stability"): a fixed 2-D sine-cosine
position embedding, a frozen random patch projection, the paper's initialization and 12 heads for
ViT-S. The method ``mocov3`` selects it, as in solo-learn; ``backbone.kwargs.variant: mocov3``
selects it for any method, and ``frozen_patch_embed`` (default: true for MoCo v3's variant only)
freezes or trains the projection (solo-learn trains it; the paper freezes it).

MAE's variant (``variant: mae``, the default of the method ``mae``): fixed sine-cosine positions
and the official initialization (backbones/vit_mae.py).
"""

from __future__ import annotations

import math
from typing import Any

import timm
import torch
from torch import Tensor, nn

from solo.backbones.registry import BACKBONES, BackboneContext
from solo.backbones.vit_mae import make_mae

# name -> (timm model, embed_dim, depth, num_heads of the MoCo v3 variant)
VIT_SIZES = {"vit_tiny": ("vit_tiny_patch16_224", 192, 12, 12),
             "vit_small": ("vit_small_patch16_224", 384, 12, 12),  # MoCo v3: 12 heads, not 6
             "vit_base": ("vit_base_patch16_224", 768, 12, 12),
             "vit_large": ("vit_large_patch16_224", 1024, 24, 16)}
VARIANTS = ("timm", "mocov3", "mae")
METHOD_VARIANTS = {"mocov3": "mocov3", "mae": "mae"}  # the ViT a method gets unless told


def sincos_position_embedding(grid_size: tuple[int, int], dim: int,
                              temperature: float = 10000.0) -> Tensor:
    """MoCo v3's fixed embedding, (1, 1 + h * w, dim), with a zero row for the class token.

    Token k of the h x w grid gets [sin(a w), cos(a w), sin(b w), cos(b w)] over the dim / 4
    frequencies w_i = temperature ** (-i / (dim / 4)), with a = k // h and b = k % h, the order of
    the official code (for square grids: a is the token's row, b its column).
    """
    if dim % 4:
        raise ValueError(f"the sine-cosine position embedding needs embed_dim divisible by 4, "
                         f"got {dim}")
    height, width = grid_size
    token = torch.arange(height * width, dtype=torch.float32)
    first, second = token.div(height, rounding_mode="floor"), token.remainder(height)
    frequencies = temperature ** (-torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    angle_a, angle_b = first[:, None] * frequencies, second[:, None] * frequencies
    patches = torch.cat([angle_a.sin(), angle_a.cos(), angle_b.sin(), angle_b.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), patches])[None]


def make_mocov3(model: nn.Module) -> nn.Module:
    """Turn a timm ViT into MoCo v3's: a fixed position embedding and the paper's initialization
    (its frozen patch projection is ``build_vit``'s ``frozen_patch_embed``)."""
    embedding = sincos_position_embedding(model.patch_embed.grid_size, model.embed_dim)
    model.pos_embed = nn.Parameter(embedding, requires_grad=False)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            if "qkv" in name:  # uniform Xavier for q, k and v as three separate matrices
                bound = math.sqrt(6.0 / (module.weight.shape[0] // 3 + module.weight.shape[1]))
                nn.init.uniform_(module.weight, -bound, bound)
            else:
                nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    nn.init.normal_(model.cls_token, std=1e-6)
    projection = model.patch_embed.proj
    fan_in = projection.in_channels * math.prod(projection.kernel_size)
    bound = math.sqrt(6.0 / (fan_in + model.embed_dim))  # Xavier for the flattened patch
    nn.init.uniform_(projection.weight, -bound, bound)
    nn.init.zeros_(projection.bias)
    return model


def build_vit(name: str, context: BackboneContext, **kwargs: Any) -> nn.Module:
    model_name, _, _, mocov3_heads = VIT_SIZES[name]
    default_variant = METHOD_VARIANTS.get(context.method or "", "timm")
    variant = kwargs.pop("variant", default_variant)
    if variant not in VARIANTS:
        raise ValueError(f"backbone.kwargs.variant: '{variant}' is not one of {VARIANTS}")
    # the paper freezes the projection for stability; any ViT may ask for the same
    frozen_patch_embed = kwargs.pop("frozen_patch_embed", variant == "mocov3")
    if context.image_size is not None:
        kwargs.setdefault("img_size", context.image_size)
    kwargs.setdefault("dynamic_img_size", True)
    if variant == "mocov3":
        kwargs.setdefault("num_heads", mocov3_heads)
    model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
    if variant == "mocov3":
        make_mocov3(model)
    elif variant == "mae":
        make_mae(model)  # solo/backbones/vit_mae.py
    if frozen_patch_embed:
        model.patch_embed.proj.requires_grad_(False)
    return model


def _register(name: str) -> None:
    def build(context: BackboneContext, **kwargs: Any) -> nn.Module:
        return build_vit(name, context, **kwargs)

    _, width, depth, _ = VIT_SIZES[name]
    build.__doc__ = f"ViT with {depth} blocks of width {width}, {width} features."
    BACKBONES.register(name)(build)


for _name in VIT_SIZES:
    _register(_name)
