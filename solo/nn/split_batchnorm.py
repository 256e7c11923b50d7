"""Split batch norm: one process imitating the per-GPU batch statistics of N processes.

MoCo (arXiv:1911.05722) trains on 8 GPUs, each normalizing its own 32 images; its authors' CIFAR-10
demo (facebookresearch/moco, colab/moco_cifar10_demo.ipynb, ``--bn-splits 8``) imitates that on
one GPU with a batch norm whose training statistics are computed per sub-batch. Here sub-batch s
is rows [s * B/N, (s + 1) * B/N), the rows process s would hold (the demo interleaves the rows
instead; for a shuffled batch both are the same in distribution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SplitBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that, in training, normalizes each of ``num_splits`` contiguous sub-batches
    with its own statistics; the running statistics move by the mean of the sub-batches' updates.
    In eval mode it is a plain BatchNorm2d. Parameters and buffers are BatchNorm2d's, so the
    state-dict keys do not change."""

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_splits = num_splits

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"

    def forward(self, x: Tensor) -> Tensor:
        batch_statistics = self.training or self.running_mean is None
        if self.num_splits == 1 or not batch_statistics:
            return super().forward(x)
        self._check_input_dim(x)
        n, c, h, w = x.shape
        splits = self.num_splits
        if n % splits:
            raise ValueError(f"split batch norm: a batch of {n} does not split into {splits} equal "
                             "sub-batches (method_kwargs.split_bn must divide the batch size)")
        factor = 0.0
        track = self.training and self.track_running_stats
        if track:
            self.num_batches_tracked.add_(1)
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else self.momentum)
        # sub-batch s becomes channels [s*C, (s+1)*C) of a batch of B/N: one fused batch norm call
        folded = x.reshape(splits, n // splits, c, h, w).transpose(0, 1)
        folded = folded.reshape(-1, splits * c, h, w)
        mean = self.running_mean.repeat(splits) if track else None
        var = self.running_var.repeat(splits) if track else None
        weight = self.weight.repeat(splits) if self.weight is not None else None
        bias = self.bias.repeat(splits) if self.bias is not None else None
        out = F.batch_norm(folded, mean, var, weight, bias, True, factor, self.eps)
        if track:
            with torch.no_grad():
                self.running_mean.copy_(mean.view(splits, c).mean(dim=0))
                self.running_var.copy_(var.view(splits, c).mean(dim=0))
        out = out.reshape(-1, splits, c, h, w).transpose(0, 1).reshape(n, c, h, w)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)
        return out


def convert_split_batchnorm(module: nn.Module, num_splits: int) -> int:
    """Every plain ``nn.BatchNorm2d`` inside ``module`` replaced, in place, by a SplitBatchNorm2d
    holding the same parameter and buffer tensors; the number replaced. Subclasses of
    BatchNorm2d (timm's BatchNormAct2d) are left alone: their forward does more than normalize."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, SplitBatchNorm2d):
            child.num_splits = num_splits
            count += 1
        elif type(child) is nn.BatchNorm2d:
            split = SplitBatchNorm2d(child.num_features, num_splits, eps=child.eps,
                                     momentum=child.momentum, affine=child.affine,
                                     track_running_stats=child.track_running_stats)
            split._parameters.update(child._parameters)  # the same tensors, not copies
            split._buffers.update(child._buffers)
            split.train(child.training)
            setattr(module, name, split)
            count += 1
        else:
            count += convert_split_batchnorm(child, num_splits)
    return count
