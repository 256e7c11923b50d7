"""timm backbones: solo-learn's Swin, ConvNeXt and PoolFormer names, and any timm model by name.

Each is ``timm.create_model(<timm name>, pretrained=False, num_classes=0, **kwargs)``, headless,
so its state dict is timm's and its ``num_features`` is the pooled feature width.
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from solo.backbones.registry import BACKBONES, BackboneContext


def create_timm(name: str, **kwargs: Any) -> nn.Module:
    """A headless timm model. Weights come only from disk: ``pretrained_cfg_overlay={"file":
    path}`` loads a local file through timm (its own key filters included); ``pretrained=True``
    without a file would download, which solo never does at run time."""
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    wants_weights = bool(kwargs.pop("pretrained", False)) or "file" in overlay
    if wants_weights and "file" not in overlay:
        raise ValueError(f"backbone.kwargs.pretrained for '{name}' would download weights; give "
                         "backbone.pretrained: <path to a checkpoint> or backbone.kwargs."
                         "pretrained_cfg_overlay.file: <path> instead")
    return timm.create_model(name, pretrained=wants_weights, num_classes=0, **kwargs)


def _sized(context: BackboneContext, kwargs: dict[str, Any]) -> dict[str, Any]:
    """img_size from the crop size unless given, and other sizes allowed (multi-crop)."""
    sized = dict(kwargs)
    if context.image_size is not None:
        sized.setdefault("img_size", context.image_size)
    sized.setdefault("strict_img_size", False)  # relative position bias: any multiple of 32 px
    return sized


# solo-learn's name -> timm's model (patch 4, window 7 and the widths of the Swin paper)
SWIN_MODELS = {"swin_tiny": "swin_tiny_patch4_window7_224",
               "swin_small": "swin_small_patch4_window7_224",
               "swin_base": "swin_base_patch4_window7_224",
               "swin_large": "swin_large_patch4_window7_224"}
CONVNEXT_MODELS = {f"convnext_{size}": f"convnext_{size}" for size in
                   ("tiny", "small", "base", "large")}
POOLFORMER_MODELS = {f"poolformer_{size}": f"poolformer_{size}" for size in
                     ("s12", "s24", "s36", "m36", "m48")}


def _register(solo_name: str, model_name: str, sized: bool) -> None:
    def build(context: BackboneContext, **kwargs: Any) -> nn.Module:
        return create_timm(model_name, **(_sized(context, kwargs) if sized else kwargs))

    build.__doc__ = f"timm's {model_name}, headless."
    BACKBONES.register(solo_name)(build)


for _solo, _timm in SWIN_MODELS.items():
    _register(_solo, _timm, sized=True)
for _solo, _timm in {**CONVNEXT_MODELS, **POOLFORMER_MODELS}.items():
    _register(_solo, _timm, sized=False)  # fully convolutional: any size of at least 32 px
