"""MAE's ViT encoder (He et al., arXiv:2111.06377): a timm ViT with a fixed 2-D sine-cosine
position embedding and the official code's initialization.

The method ``mae`` selects this variant of ``vit_tiny/small/base/large`` (as solo-learn builds its
own MAE ViT for it); ``backbone.kwargs.variant: mae`` selects it for any method. The weights keep
timm's names, which are also those of solo-learn's MAE ViT.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """(N, dim): [sin(p w_i) for i < dim/2, cos(p w_i) for i < dim/2], w_i = 10000^(-2i/dim)."""
    frequencies = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * frequencies[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def mae_sincos_embedding(grid_size: int, dim: int, cls_token: bool = True) -> Tensor:
    """MAE's fixed embedding, (1, [1 +] grid_size^2, dim), a zero row first for the class token.

    The token in row r, column c of the square grid (token r * grid_size + c) gets the column's
    1-D code in its first dim / 2 channels and the row's in the last dim / 2: the order of the
    official ``get_2d_sincos_pos_embed`` (whose meshgrid puts the width coordinate first).
    """
    if dim % 4:
        raise ValueError(f"the sine-cosine position embedding needs a width divisible by 4, "
                         f"got {dim}")
    token = torch.arange(grid_size * grid_size)
    rows, columns = token // grid_size, token % grid_size
    table = torch.cat([sincos_1d(columns, dim // 2), sincos_1d(rows, dim // 2)], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=table.dtype), table])
    return table.float()[None]


def init_mae_weights(module: nn.Module) -> None:
    """The official code's init: Xavier-uniform linear layers with zero biases, unit LayerNorms."""
    for child in module.modules():
        if isinstance(child, nn.Linear):
            nn.init.xavier_uniform_(child.weight)
            if child.bias is not None:
                nn.init.zeros_(child.bias)
        elif isinstance(child, nn.LayerNorm):
            nn.init.ones_(child.weight)
            nn.init.zeros_(child.bias)


def make_mae(model: nn.Module) -> nn.Module:
    """Turn a timm ViT into MAE's encoder: frozen sine-cosine positions (square grids only, as
    the official code), the patch projection initialized as a linear layer, the class token
    N(0, 0.02)."""
    height, width = model.patch_embed.grid_size
    if height != width:
        raise ValueError(f"MAE's position embedding needs a square patch grid, got {height}x{width}")
    model.pos_embed = nn.Parameter(mae_sincos_embedding(height, model.embed_dim),
                                   requires_grad=False)
    init_mae_weights(model)
    weight = model.patch_embed.proj.weight
    nn.init.xavier_uniform_(weight.data.view(weight.shape[0], -1))
    nn.init.zeros_(model.patch_embed.proj.bias)
    nn.init.normal_(model.cls_token, std=0.02)
    return model
