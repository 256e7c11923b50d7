"""Convolutions over inputs with fewer pixels than the kernel has taps, as one matrix product.

A ResNet with its ImageNet stem (stride 32 overall) reduces a 32 px image to 2x2 in its third
stage and 1x1 in its last. There most taps of a 3x3 kernel meet padding zeros: at 1x1 only the
centre tap counts. The convolution kernels still run the full window, and on the CPU these two
stages were about half of a ResNet-18 step on 32 px crops. Writing the convolution out as the
dense (out channels x output pixels) by (in channels x input pixels) matrix it is, and applying
it with ``F.linear``, computes the same sums (equal in exact arithmetic; the same gradients, zero
for the taps that only meet padding) with input-pixels / kernel-taps of the work.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class SmallInputConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters and state-dict keys) that takes the matrix-product path
    when every output pixel's kernel window holds the whole input, and convolves otherwise."""

    def _matmul_output(self, height: int, width: int) -> Optional[tuple[int, int]]:
        """The output's height and width where the matrix-product path applies, else None."""
        if (height * width >= self.kernel_size[0] * self.kernel_size[1] or self.groups != 1
                or self.dilation != (1, 1) or self.padding_mode != "zeros"
                or isinstance(self.padding, str)):
            return None
        shape = []
        for size, kernel, stride, padding in zip(
                (height, width), self.kernel_size, self.stride, self.padding):
            outputs = (size + 2 * padding - kernel) // stride + 1
            # the last output's window starts at or before the input, the first one's ends after
            if outputs < 1 or padding - (outputs - 1) * stride < 0 or padding + size > kernel:
                return None
            shape.append(outputs)
        return shape[0], shape[1]

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor,
                      bias: Optional[torch.Tensor]) -> torch.Tensor:
        height, width = input.shape[-2:]
        shape = self._matmul_output(height, width) if input.dim() == 4 else None
        if shape is None:
            return super()._conv_forward(input, weight, bias)
        (out_h, out_w), (stride_h, stride_w), (pad_h, pad_w) = shape, self.stride, self.padding
        # output pixel (i, j) meets the input through the kernel's taps from (pad - i * stride)
        rows = [pad_h - i * stride_h for i in range(out_h)]
        cols = [pad_w - j * stride_w for j in range(out_w)]
        dense = torch.stack([weight[:, :, row:row + height, col:col + width]
                             for row in rows for col in cols], dim=1)
        out = F.linear(input.reshape(input.shape[0], -1), dense.reshape(-1, dense[0, 0].numel()))
        out = out.reshape(input.shape[0], weight.shape[0], out_h, out_w)
        return out if bias is None else out + bias[:, None, None]


def use_small_input_convs(model: nn.Module) -> nn.Module:
    """Switch every plain ``nn.Conv2d`` of ``model`` to ``SmallInputConv2d`` in place;
    parameters, buffers and state-dict keys stay as they are."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = SmallInputConv2d
    return model
