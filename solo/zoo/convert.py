"""Converting a pretrained backbone to torchvision, timm or detectron2 weights.

- ``torchvision``: the ResNet state dict without ``fc`` (a classifier would be random, so none is
  written). Load it with ``model = torchvision.models.resnet18(); model.fc = torch.nn.Identity();
  model.load_state_dict(sd)`` or keep a fresh head with ``load_state_dict(sd, strict=False)``
  (which then reports only ``fc.weight`` / ``fc.bias`` as missing).
- ``timm``: the same keys, which is timm's ResNet layout: ``timm.create_model("resnet18",
  num_classes=0).load_state_dict(sd)`` is strict.
- ``detectron2``: a pickle ``{"model": {name: numpy array}, "__author__": "solo",
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
from torch import Tensor, nn

from solo.utils.checkpoint import write_atomic
from solo.zoo.checkpoints import load_pretrained

TARGETS = ("torchvision", "timm", "detectron2")


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


def convert(checkpoint: str | os.PathLike, to: str, out: str | os.PathLike,
            backbone: str | None = None, cifar_stem: bool | None = None) -> Path:
    """Load ``checkpoint`` (any format ``load_pretrained`` reads) and write it for ``to``."""
    if to not in TARGETS:
        raise ValueError(f"unknown conversion target '{to}'; valid: {', '.join(TARGETS)}")
    pretrained = load_pretrained(checkpoint, backbone=backbone, cifar_stem=cifar_stem)
    weights = pretrained.backbone.state_dict()
    out = Path(out)
    if to == "detectron2":
        if pretrained.cifar_stem:
            warnings.warn("this backbone has the 3x3 CIFAR stem; detectron2's BasicStem is a 7x7 "
                          "convolution, so stem.conv1.weight will not fit it", stacklevel=2)
        write_atomic(out, lambda handle: pickle.dump(to_detectron2(weights), handle))
    else:
        # torchvision and timm share the ResNet key layout; fc is not written (see module doc)
        write_atomic(out, lambda handle: torch.save(weights, handle))
    return out
