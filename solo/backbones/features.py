"""What any ``nn.Module`` backbone is: its feature width, and whether it is convolutional."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def feature_width(backbone: nn.Module, image_size: int = 224) -> int:
    """``backbone.num_features`` when it says, else the width of its flattened output on two
    blank ``image_size`` images (in eval mode, so batch-norm statistics are not touched)."""
    width = getattr(backbone, "num_features", None)
    if isinstance(width, int):
        return width
    modes = {module: module.training for module in backbone.modules()}
    parameter = next(backbone.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    backbone.eval()
    try:
        out = backbone(torch.zeros(2, 3, image_size, image_size, device=device))
    finally:
        for module, training in modes.items():
            module.train(training)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the backbone {type(backbone).__name__} returns a {type(out).__name__}, "
                        "not a tensor of features; wrap it so that forward returns (B, F)")
    return int(out.flatten(1).shape[1])


def is_convolutional(backbone: nn.Module) -> bool:
    """True when some convolution is not a patchify (kernel == stride): ResNets, ConvNeXt and
    PoolFormer, whose kernels run faster on channels_last tensors; not ViTs or Swin, whose only
    convolution cuts the image into patches before they work on token sequences."""
    return any(isinstance(m, nn.Conv2d) and m.kernel_size != m.stride
               for m in backbone.modules())
