"""SplitBatchNorm2d: N splits on one process are N BatchNorm2d's on the contiguous sub-batches,
as N processes each normalizing their own share would compute them (the MoCo CIFAR demo's
--bn-splits); eval mode is plain batch norm; the converter keeps keys and tensors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn

from solo.nn import SplitBatchNorm2d, convert_split_batchnorm
from tests.multiprocess import run_processes

SPLITS, PER_SPLIT, CHANNELS = 4, 3, 5


def batch_and_norm(seed: int = 0) -> tuple[torch.Tensor, nn.BatchNorm2d]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SPLITS * PER_SPLIT, CHANNELS, 4, 4, generator=g) * 3 + 1
    norm = nn.BatchNorm2d(CHANNELS)
    with torch.no_grad():  # not the identity affine, not the default running stats
        norm.weight.copy_(torch.rand(CHANNELS, generator=g) + 0.5)
        norm.bias.copy_(torch.randn(CHANNELS, generator=g))
        norm.running_mean.copy_(torch.randn(CHANNELS, generator=g))
        norm.running_var.copy_(torch.rand(CHANNELS, generator=g) + 0.5)
    return x, norm


def split_copy(norm: nn.BatchNorm2d, splits: int) -> SplitBatchNorm2d:
    holder = nn.Sequential(copy.deepcopy(norm))
    assert convert_split_batchnorm(holder, splits) == 1
    return holder[0]


def test_splits_are_separate_batch_norms_on_the_sub_batches() -> None:
    x, norm = batch_and_norm()
    split = split_copy(norm, SPLITS).train()
    x = x.requires_grad_(True)
    out = split(x)
    separate = [copy.deepcopy(norm).train() for _ in range(SPLITS)]
    expected = torch.cat([bn(part) for bn, part in zip(separate, x.detach().chunk(SPLITS))])
    torch.testing.assert_close(out, expected)
    # running stats: the mean of the sub-batches' own updates; the step counted once
    for name in ("running_mean", "running_var"):
        mean = torch.stack([getattr(bn, name) for bn in separate]).mean(0)
        torch.testing.assert_close(getattr(split, name), mean)
    assert int(split.num_batches_tracked) == 1
    # gradients of the shared affine: the sum of the separate ones
    out.square().sum().backward()
    sum(bn(part).square().sum() for bn, part in zip(separate, x.detach().chunk(SPLITS))).backward()
    torch.testing.assert_close(split.weight.grad, sum(bn.weight.grad for bn in separate))
    # eval mode: plain batch norm with the running stats
    split.eval()
    plain = copy.deepcopy(norm).eval()
    plain.load_state_dict(split.state_dict())
    torch.testing.assert_close(split(x.detach()), plain(x.detach()))


def test_converter_keeps_keys_and_tensors_and_checks_the_batch() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)),
                        nn.BatchNorm1d(4))
    keys = list(net.state_dict())
    weight = net[1].weight
    assert convert_split_batchnorm(net, 2) == 2  # BatchNorm1d is not a 2d norm: left alone
    assert list(net.state_dict()) == keys and net[1].weight is weight
    assert isinstance(net[2][0], SplitBatchNorm2d) and type(net[3]) is nn.BatchNorm1d
    with pytest.raises(ValueError, match="split_bn"):
        net[1].train()(torch.randn(3, 4, 2, 2))  # 3 images do not split in 2
    with pytest.raises(ValueError, match="num_splits"):
        SplitBatchNorm2d(4, 0)


def _per_process_norm(rank: int, world: int) -> dict:
    x, norm = batch_and_norm()
    share = x.chunk(world)[rank]  # this process's rows of the global batch
    out = norm.train()(share)
    mean, var = norm.running_mean.clone(), norm.running_var.clone()
    dist.all_reduce(mean), dist.all_reduce(var)
    return {"out": out.detach(), "running_mean": mean / world, "running_var": var / world}


def test_one_process_split_equals_per_process_batch_norm_on_two_processes() -> None:
    ranks = run_processes(_per_process_norm)
    x, norm = batch_and_norm()
    split = split_copy(norm, 2).train()
    torch.testing.assert_close(split(x).detach(), torch.cat([r["out"] for r in ranks]))
    for name in ("running_mean", "running_var"):  # what averaging the processes' stats gives
        torch.testing.assert_close(getattr(split, name), ranks[0][name])
