"""Converting a pretrained backbone to torchvision, timm or detectron2 weights.

- ``torchvision`` (ResNets): the ResNet state dict without ``fc`` (a classifier would be random, so
  none is written). Load it with ``model = torchvision.models.resnet18(); model.fc =
  torch.nn.Identity(); model.load_state_dict(sd)`` or keep a fresh head with
  ``load_state_dict(sd, strict=False)`` (which then reports only ``fc.weight`` / ``fc.bias``).
- ``timm`` (ResNets and every timm model: ViT, Swin, ConvNeXt, PoolFormer, ``timm/<name>``): the
  headless state dict in timm's current layout, which ``timm.create_model(name, num_classes=0,
  **kwargs).load_state_dict(sd)`` loads strictly. ``timm_model_args`` gives that name and the
  kwargs of the backbone's geometry (a ViT's ``img_size``, ``patch_size``, ``num_heads``; a
  Swin's ``img_size``, ...), checked against a timm model built on the meta device;
  ``python -m solo.zoo convert`` prints the call.
- ``detectron2`` (ResNets): a pickle ``{"model": {name: numpy array}, "__author__": "solo",
  "matching_heuristics": True}`` with detectron2's ResNet names (``stem.conv1``,
  ``res2``..``res5``, ``convN.norm``, ``shortcut``), as its torchvision conversion script writes.

A backbone with the CIFAR stem (3x3 stride-1 ``conv1`` with padding 2, no max-pool) needs the same
change in the target model: ``patch_cifar_stem(model)`` does it for torchvision and timm ResNets.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import torchvision
from torch import Tensor, nn

from solo.config import WEIGHT_KWARGS
from solo.utils.checkpoint import write_atomic
from solo.zoo.checkpoints import CheckpointError, Pretrained, load_pretrained, misfit
from solo.zoo.resnet_layout import infer_resnet_name

TARGETS = ("torchvision", "timm", "detectron2")
# options of solo's builders that timm does not take; the weights carry what they change
SOLO_KWARGS = ("variant", "frozen_patch_embed")


def patch_cifar_stem(model: nn.Module) -> nn.Module:
    """Give a torchvision or timm ResNet the CIFAR stem that solo's ``small_images`` backbones use."""
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=2,
                            bias=False)
    model.maxpool = nn.Identity()
    return model


def detectron2_key(key: str) -> str:
    """detectron2's name for a torchvision ResNet key (``layer1.0.bn2.bias`` ->
    ``res2.0.conv2.norm.bias``)."""
    if not key.startswith("layer"):
        key = "stem." + key  # conv1 / bn1 form detectron2's BasicStem
    key = re.sub(r"^layer([1-4])", lambda m: f"res{int(m.group(1)) + 1}", key)
    key = re.sub(r"\bbn([1-3])\b", r"conv\1.norm", key)  # detectron2 nests each norm in its conv
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def to_detectron2(weights: Mapping[str, Tensor]) -> dict[str, Any]:
    """The detectron2 checkpoint dict of a headless ResNet state dict.

    ``num_batches_tracked`` is left out: detectron2 freezes the backbone's norms by default
    (FrozenBatchNorm2d, which has no such buffer), so it would only be reported as unused.
    """
    model = {detectron2_key(k): v.detach().cpu().numpy() for k, v in weights.items()
             if not k.endswith("num_batches_tracked") and not k.startswith("fc.")}
    return {"model": model, "__author__": "solo", "matching_heuristics": True}


def timm_model_args(pretrained: Pretrained) -> tuple[str, dict[str, Any]]:
    """The ``timm.create_model`` name and kwargs (besides ``num_classes=0``) of a model with
    exactly the backbone's state dict; CheckpointError when timm has no such model."""
    model = pretrained.backbone
    if isinstance(model, torchvision.models.ResNet):  # timm's ResNets share torchvision's keys
        name, kwargs = infer_resnet_name(model.state_dict()), {}
    else:
        name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        if name is None:
            raise CheckpointError(f"{pretrained.backbone_name} is not a timm model (its layout is "
                                  "solo-learn's own), so there are no timm weights to write")
        kwargs = {k: v for k, v in pretrained.backbone_kwargs.items()
                  if k not in SOLO_KWARGS + WEIGHT_KWARGS}
        kwargs.update(_geometry(model))
    _check_timm_fit(name, kwargs, model.state_dict(), pretrained.cifar_stem)
    return name, kwargs


def _side(size: Any) -> Any:
    return size[0] if isinstance(size, (tuple, list)) and len(set(size)) == 1 else size


def _geometry(model: nn.Module) -> dict[str, Any]:
    """What timm's model needs to be told for the backbone's shapes: the grid it was sized to
    and, for a ViT, the head count (MoCo v3's ViT-S has 12, timm's 6)."""
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(model, VisionTransformer):
        return {"img_size": _side(model.patch_embed.img_size),
                "patch_size": _side(model.patch_embed.patch_size),
                "num_heads": model.blocks[0].attn.num_heads,
                "dynamic_img_size": model.dynamic_img_size}
    if isinstance(model, SwinTransformer):
        return {"img_size": _side(model.patch_embed.img_size),
                "strict_img_size": model.patch_embed.strict_img_size}
    return {}


def _check_timm_fit(name: str, kwargs: dict[str, Any], weights: Mapping[str, Tensor],
                    cifar_stem: bool) -> None:
    """Build timm's model on the meta device (no memory, no init) and compare state dicts."""
    import timm

    def build() -> nn.Module:
        target = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        return patch_cifar_stem(target) if cifar_stem else target

    try:
        with torch.device("meta"):
            target = build()
    except (RuntimeError, NotImplementedError):  # a model whose init reads values
        target = build()
    problems = misfit(target.state_dict(), weights)
    if problems:
        raise CheckpointError(f"timm.create_model({call_text(name, kwargs)}) would not load the "
                              f"converted weights:{problems}")


def call_text(name: str, kwargs: Mapping[str, Any]) -> str:
    """``'vit_tiny_patch16_224', num_classes=0, img_size=32, ...``: the arguments as code."""
    return ", ".join([repr(name), "num_classes=0"] + [f"{k}={v!r}" for k, v in kwargs.items()])


def convert(checkpoint: str | os.PathLike, to: str, out: str | os.PathLike,
            backbone: str | None = None, cifar_stem: bool | None = None,
            backbone_kwargs: Mapping[str, Any] | None = None) -> Path:
    """Load ``checkpoint`` (any format ``load_pretrained`` reads) and write it for ``to``."""
    return convert_pretrained(load_pretrained(checkpoint, backbone=backbone, cifar_stem=cifar_stem,
                                              backbone_kwargs=backbone_kwargs), to, out)[0]


def convert_pretrained(pretrained: Pretrained, to: str, out: str | os.PathLike
                       ) -> tuple[Path, str | None]:
    """Write ``pretrained``'s backbone for ``to``; returns the file and, for timm, the
    ``timm.create_model`` call that loads it."""
    if to not in TARGETS:
        raise ValueError(f"unknown conversion target '{to}'; valid: {', '.join(TARGETS)}")
    weights = pretrained.backbone.state_dict()
    out = Path(out)
    if to == "timm":
        name, kwargs = timm_model_args(pretrained)  # checked before anything is written
        write_atomic(out, lambda handle: torch.save(weights, handle))
        model = f"timm.create_model({call_text(name, kwargs)})"
        if pretrained.cifar_stem:
            model = f"solo.zoo.convert.patch_cifar_stem({model})"
        return out, model
    try:
        infer_resnet_name(weights)  # torchvision's ResNet layout (timm's plain ResNets share it)
    except ValueError:
        raise CheckpointError(f"--to {to} writes ResNets; {pretrained.backbone_name} converts "
                              "with --to timm") from None
    if to == "detectron2":
        if pretrained.cifar_stem:
            warnings.warn("this backbone has the 3x3 CIFAR stem; detectron2's BasicStem is a 7x7 "
                          "convolution, so stem.conv1.weight will not fit it", stacklevel=2)
        write_atomic(out, lambda handle: pickle.dump(to_detectron2(weights), handle))
    else:  # torchvision's layout; fc is not written (see module doc)
        write_atomic(out, lambda handle: torch.save(weights, handle))
    return out, None
