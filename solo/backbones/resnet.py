"""torchvision ResNets without their classifier, with the CIFAR stem for 32x32 images."""

from __future__ import annotations

from typing import Any, Callable

import torchvision
from torch import nn

from solo.backbones.registry import BACKBONES, BackboneContext
from solo.backbones.small_input_conv import use_small_input_convs


def _headless_resnet(builder: Callable[..., torchvision.models.ResNet], small_images: bool,
                     **kwargs: Any) -> torchvision.models.ResNet:
    model = builder(weights=None, **kwargs)
    model.num_features = model.fc.in_features
    model.fc = nn.Identity()
    if small_images:
        # 32x32 inputs: a 3x3 stride-1 stem and no max-pool keep the spatial size. Padding 2 (not 1)
        # is the layout of solo-learn's CIFAR checkpoints, which must load unchanged.
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    # small images through the ImageNet stem end at 2x2 and 1x1, where a 3x3 convolution is
    # cheaper as one matmul
    return use_small_input_convs(model)


@BACKBONES.register("resnet18")
def resnet18(context: BackboneContext, **kwargs: Any) -> nn.Module:
    """ResNet-18 (He et al., arXiv:1512.03385), 512 features."""
    return _headless_resnet(torchvision.models.resnet18, context.small_images, **kwargs)


@BACKBONES.register("resnet50")
def resnet50(context: BackboneContext, **kwargs: Any) -> nn.Module:
    """ResNet-50 (He et al., arXiv:1512.03385), 2048 features."""
    return _headless_resnet(torchvision.models.resnet50, context.small_images, **kwargs)
