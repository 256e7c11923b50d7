"""MAE's building blocks (He et al., arXiv:2111.06377): per-sample random masking, the ViT
encoder run on the visible patches only, and the light decoder that predicts the pixels.

Weight names are solo-learn's (``decoder.decoder_embed``, ``mask_token``, ``decoder_pos_embed``,
``decoder_blocks.N``, ``decoder_norm``, ``decoder_pred``), so its MAE checkpoints load whole.
"""

from __future__ import annotations

from typing import Optional

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from solo.backbones.vit_mae import init_mae_weights, mae_sincos_embedding


def random_masking(batch: int, length: int, mask_ratio: float, device: torch.device | str = "cpu",
                   generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Which of ``length`` patches each of ``batch`` images keeps: the paper's per-sample
    shuffle (argsort of uniform noise), the first ``int(length * (1 - mask_ratio))`` kept.

    Returns ``keep`` (B, K) the kept patches' indices in shuffled order, ``mask`` (B, L) 1 where
    a patch is masked (removed), and ``restore`` (B, L), the inverse permutation that puts the
    shuffled sequence back in patch order.
    """
    num_keep = int(length * (1 - mask_ratio))
    noise = torch.rand(batch, length, device=device, generator=generator)
    shuffle = noise.argsort(dim=1)  # ascending: the smallest noise is kept
    restore = shuffle.argsort(dim=1)
    mask = torch.ones(batch, length, device=device)
    mask[:, :num_keep] = 0
    return shuffle[:, :num_keep], mask.gather(1, restore), restore


def patch_tokens(vit: nn.Module, images: Tensor) -> Tensor:
    """(B, L, D) patch embeddings of a timm ViT plus their (fixed) positions, no class token."""
    tokens = vit.patch_embed(images)
    if tokens.dim() == 4:  # timm's dynamic_img_size: NHWC
        tokens = tokens.flatten(1, 2)
    positions = vit.pos_embed[:, vit.num_prefix_tokens:]
    if positions.shape[1] != tokens.shape[1]:
        raise ValueError(f"MAE masks the ViT's own patch grid ({positions.shape[1]} patches); "
                         f"these images give {tokens.shape[1]}: make every crop the ViT's img_size")
    return tokens + positions


def encode_visible(vit: nn.Module, images: Tensor, mask_ratio: float,
                   generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor, Tensor]:
    """The ViT on the visible patches only: ``(tokens (B, 1 + K, D) after the final norm, class
    token first; mask (B, L); restore (B, L))`` (see ``random_masking``)."""
    tokens = patch_tokens(vit, images)  # (B, L, D)
    batch, length, width = tokens.shape
    keep, mask, restore = random_masking(batch, length, mask_ratio, tokens.device, generator)
    visible = tokens.gather(1, keep[..., None].expand(-1, -1, width))  # (B, K, D)
    cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(batch, -1, -1)
    x = vit.norm_pre(torch.cat([cls, visible], dim=1))
    return vit.norm(vit.blocks(x)), mask, restore


class MAEDecoder(nn.Module):
    """Visible tokens and mask tokens, back in patch order with fixed sine-cosine positions,
    through ``depth`` transformer blocks to ``patch_size^2 * 3`` pixels per patch."""

    def __init__(self, in_dim: int, embed_dim: int, depth: int, num_heads: int, num_patches: int,
                 patch_size: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        grid = round(num_patches ** 0.5)
        if grid * grid != num_patches:
            raise ValueError(f"the decoder needs a square patch grid, got {num_patches} patches")
        self.decoder_embed = nn.Linear(in_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.decoder_pos_embed = nn.Parameter(mae_sincos_embedding(grid, embed_dim),
                                              requires_grad=False)
        # pre-norm blocks with qkv biases; torch's LayerNorm eps (1e-5) as solo-learn's decoder
        # (the official code's is 1e-6)
        self.decoder_blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm)
            for _ in range(depth)])
        self.decoder_norm = nn.LayerNorm(embed_dim)
        self.decoder_pred = nn.Linear(embed_dim, patch_size ** 2 * 3)
        init_mae_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: Tensor, restore: Tensor) -> Tensor:
        """tokens (B, 1 + K, in_dim) from ``encode_visible``; the prediction (B, L, p*p*3)."""
        x = self.decoder_embed(tokens)
        batch, length = restore.shape
        masked = self.mask_token.expand(batch, length + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], masked], dim=1)  # shuffled order: the kept ones first
        patches = patches.gather(1, restore[..., None].expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x)[:, 1:]  # the class token predicts nothing
