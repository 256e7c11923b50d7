"""MAE: Masked Autoencoders Are Scalable Vision Learners (He, Chen, Xie, Li, Dollar, Girshick,
arXiv:2111.06377).

No second view and no target network: the ViT encoder sees a random 25% of each image's
patches, a light transformer decoder fills in the rest from mask tokens, and the loss is the
pixel error on the masked patches only. The online probe trains on the visible patches' class
token (as solo-learn), or on whole images; the kNN sees whole images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from solo.config import ConfigError, check, check_positive
from solo.losses import mae_loss
from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.registry import METHODS
from solo.nn import MAEDecoder, encode_visible


@dataclass
class MAEConfig:
    mask_ratio: float = 0.75  # paper, section 4 and figure 5: 75% of the patches removed
    # the paper's default decoder (table 1a/b): 8 blocks of width 512; 16 heads as the official
    # mae_vit_*_dec512d8b models (solo-learn has no defaults: its recipes set all three)
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    # standardize each target patch (paper, table 1c: better); off by default as in solo-learn
    # and the official code, on in the shipped recipes
    norm_pix_loss: bool = False
    # True: the online probe trains on the class token of the visible patches, as solo-learn's
    # (free); False: on whole images (one extra forward without gradient, the probe then
    # measures the features that linear evaluation will see)
    probe_on_visible: bool = True

    def __post_init__(self) -> None:
        check(0 < self.mask_ratio < 1, "mask_ratio", f"must be in (0, 1), got {self.mask_ratio}")
        check_positive(self, "decoder_embed_dim", "decoder_depth", "decoder_num_heads")
        check(self.decoder_embed_dim % self.decoder_num_heads == 0, "decoder_embed_dim",
              f"must be divisible by decoder_num_heads ({self.decoder_num_heads}), "
              f"got {self.decoder_embed_dim}")
        check(self.decoder_embed_dim % 4 == 0, "decoder_embed_dim", "must be divisible by 4 "
              f"(its 2-D sine-cosine positions), got {self.decoder_embed_dim}")


@dataclass
class MaskedBatch(EncodedBatch):
    """The crops and, per crop, ``encode_visible``'s (tokens, mask, restore)."""

    crops: list[Tensor] = field(default_factory=list)
    visible: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)


@METHODS.register("mae")
class MAE(BaseMethod):
    Config = MAEConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.require_crops(large=1, small=0, at_least=True)
        vit = self.backbone
        if not isinstance(vit, VisionTransformer) or vit.cls_token is None:
            raise ConfigError(f"backbone.name: mae needs a ViT with a class token (vit_tiny, "
                              f"vit_small, vit_base, vit_large or a timm ViT), got "
                              f"'{self.cfg.backbone.name}' ({type(vit).__name__})")
        image_size = vit.patch_embed.img_size[0]
        for i, group in enumerate(self.cfg.augmentations):
            check(group.crop_size == image_size, f"augmentations[{i}].crop_size", "must be the "
                  f"ViT's img_size ({image_size}): MAE masks its patch grid, got {group.crop_size}")
        num_patches = vit.patch_embed.num_patches
        check(0 < int(num_patches * (1 - k.mask_ratio)) < num_patches, "method_kwargs.mask_ratio",
              f"{k.mask_ratio} keeps no patch or all {num_patches} of them")
        self.patch_size: int = vit.patch_embed.patch_size[0]
        self.decoder = MAEDecoder(self.num_features, k.decoder_embed_dim, k.decoder_depth,
                                  k.decoder_num_heads, num_patches, self.patch_size)

    def encode_batch(self, batch: tuple[Tensor, list[Tensor], Tensor]) -> MaskedBatch:
        indexes, crops, targets = batch
        visible = [encode_visible(self.backbone, crop, self.kwargs.mask_ratio) for crop in crops]
        if self.kwargs.probe_on_visible:
            feats = [tokens[:, 0] for tokens, _, _ in visible]
        else:
            with torch.no_grad():  # the probe detaches its input anyway
                feats = [self.backbone(crop) for crop in crops]
        return MaskedBatch(indexes=indexes, targets=targets, feats=feats, crops=list(crops),
                           visible=visible)

    def ssl_loss(self, batch: MaskedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        losses = [mae_loss(crop, self.decoder(tokens, restore), mask, self.patch_size,
                           self.kwargs.norm_pix_loss)
                  for crop, (tokens, mask, restore) in zip(batch.crops, batch.visible)]
        loss = torch.stack(losses).mean()  # averaged over the crops, as solo-learn
        return loss, {"reconstruction_loss": loss.detach()}
