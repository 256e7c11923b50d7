"""Wide ResNet-28 (Zagoruyko and Komodakis, arXiv:1605.07146) for 32x32 images.

The layout, initialization and batch-norm settings are solo-learn's (those of FixMatch's WRN),
so its checkpoints load: ``conv1``, ``block{1,2,3}.layer.<i>.{bn1,conv1,bn2,conv2,convShortcut}``
and a final ``bn1``; LeakyReLU(0.1); batch norm with momentum 0.001 and eps 0.001.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from solo.backbones.registry import BACKBONES, BackboneContext


def _norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.001, eps=0.001)


class WideBasicBlock(nn.Module):
    """Pre-activation basic block; a 1x1 ``convShortcut`` when the width changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float,
                 activate_before_residual: bool) -> None:
        super().__init__()
        self.bn1, self.relu1 = _norm(in_planes), nn.LeakyReLU(0.1)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1)
        self.bn2, self.relu2 = _norm(out_planes), nn.LeakyReLU(0.1)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1)
        self.dropout = nn.Dropout(drop_rate)
        self.same_width = in_planes == out_planes
        self.convShortcut = (None if self.same_width else
                             nn.Conv2d(in_planes, out_planes, 1, stride=stride))
        self.activate_before_residual = activate_before_residual

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu1(self.bn1(x))
        if not self.same_width and self.activate_before_residual:
            x = activated  # the first block of the network: the shortcut sees the activation
        # a block that changes width convolves the raw input, as FixMatch's WRN does
        out = self.conv1(activated if self.same_width else x)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        return out + (x if self.same_width else self.convShortcut(x))


class WideStage(nn.Module):
    def __init__(self, num_blocks: int, in_planes: int, out_planes: int, stride: int,
                 drop_rate: float, activate_before_residual: bool = False) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_planes if i == 0 else out_planes, out_planes,
                           stride if i == 0 else 1, drop_rate, activate_before_residual)
            for i in range(num_blocks)])

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen_factor; returns the (B, 64 * widen_factor) pooled features."""

    def __init__(self, depth: int = 28, widen_factor: int = 2, drop_rate: float = 0.0,
                 first_stride: int = 1) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"a Wide ResNet has depth 6n + 4, got {depth}")
        blocks = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.num_features = widths[3]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1)
        self.block1 = WideStage(blocks, widths[0], widths[1], first_stride, drop_rate,
                                activate_before_residual=True)
        self.block2 = WideStage(blocks, widths[1], widths[2], 2, drop_rate)
        self.block3 = WideStage(blocks, widths[2], widths[3], 2, drop_rate)
        self.bn1, self.relu = _norm(widths[3]), nn.LeakyReLU(0.1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.pool(self.relu(self.bn1(out))).flatten(1)


@BACKBONES.register("wide_resnet28w2")
def wide_resnet28w2(context: BackboneContext, **kwargs: Any) -> nn.Module:
    """WRN-28-2, 128 features (1.5 M parameters)."""
    return WideResNet(depth=28, widen_factor=2, **kwargs)


@BACKBONES.register("wide_resnet28w8")
def wide_resnet28w8(context: BackboneContext, **kwargs: Any) -> nn.Module:
    """WRN-28-8, 512 features (23 M parameters)."""
    return WideResNet(depth=28, widen_factor=8, **kwargs)
