"""What a headless ResNet state dict says about itself: its depth and whether it has the CIFAR stem.

Keys follow torchvision's layout (``conv1``, ``bn1``, ``layer<i>.<block>.conv<j>``,
``layer<i>.<block>.downsample.{0,1}``), which timm's ResNets share.
"""

from __future__ import annotations

import re
from typing import Mapping

from torch import Tensor

# blocks per stage and block type -> torchvision's name for that ResNet
RESNET_LAYOUTS: dict[tuple[tuple[int, int, int, int], bool], str] = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}
_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


def blocks_per_stage(state: Mapping[str, Tensor]) -> tuple[int, int, int, int]:
    """Number of residual blocks in layer1..layer4."""
    counts = [0, 0, 0, 0]
    for key in state:
        match = _BLOCK_KEY.match(key)
        if match:
            stage, block = int(match.group(1)) - 1, int(match.group(2))
            counts[stage] = max(counts[stage], block + 1)
    return counts[0], counts[1], counts[2], counts[3]


def infer_resnet_name(state: Mapping[str, Tensor]) -> str:
    """``resnet18``, ``resnet50``, ... from the block counts and block type of ``state``."""
    if "conv1.weight" not in state or "layer1.0.conv1.weight" not in state:
        raise ValueError("cannot tell the backbone from the weights: no 'conv1.weight' / "
                         "'layer1.0.conv1.weight' keys, so this is not a ResNet in torchvision's "
                         "layout; pass backbone=... explicitly")
    bottleneck = "layer1.0.conv3.weight" in state  # basic blocks have two convolutions
    stages = blocks_per_stage(state)
    name = RESNET_LAYOUTS.get((stages, bottleneck))
    if name is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise ValueError(f"no known ResNet has {list(stages)} {kind} blocks per stage; "
                         "pass backbone=... explicitly")
    if bottleneck and state["layer1.0.conv1.weight"].shape[0] != 64:
        raise ValueError(f"{name}-shaped weights with wider bottlenecks (a wide ResNet?); "
                         "pass backbone=... explicitly")
    return name


def has_cifar_stem(state: Mapping[str, Tensor]) -> bool:
    """True when the first convolution is 3x3 (the CIFAR stem) rather than ImageNet's 7x7."""
    conv1 = state.get("conv1.weight")
    if conv1 is None:
        raise ValueError("no 'conv1.weight' in the weights: cannot tell the stem; "
                         "pass cifar_stem=... explicitly")
    return tuple(conv1.shape[-2:]) == (3, 3)
