import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from solo.backbones import build_backbone
from solo.backbones.small_input_conv import SmallInputConv2d, use_small_input_convs


def _conv_pair(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int,
               bias: bool) -> tuple[nn.Conv2d, SmallInputConv2d]:
    torch.manual_seed(0)
    plain = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=bias).double()
    fast = copy.deepcopy(plain)
    use_small_input_convs(fast)
    return plain, fast


@pytest.mark.parametrize("kernel, stride, padding, size, takes_matmul", [
    (3, 1, 1, (1, 1), True),   # ResNet's last stage on 32 px images: only the centre tap counts
    (3, 2, 1, (2, 2), True),   # its stride-2 entry: the lower-right 2x2 taps
    (3, 1, 1, (2, 2), True),   # the third stage: 2x2 in, 2x2 out, 4 of 9 taps per output
    (3, 1, 1, (1, 2), True),   # not square
    (5, 2, 2, (2, 2), True),
    (3, 1, 0, (3, 3), False),  # as many pixels as taps: no cheaper as a matrix
    (1, 2, 0, (2, 2), False),  # a 1x1 stride-2 shortcut
    (3, 1, 1, (4, 4), False),  # an ordinary feature map
])
@pytest.mark.parametrize("bias", [False, True])
def test_small_input_conv_equals_the_convolution_values_and_gradients(
        kernel: int, stride: int, padding: int, size: tuple[int, int], takes_matmul: bool,
        bias: bool) -> None:
    plain, fast = _conv_pair(6, 5, kernel, stride, padding, bias)
    assert (fast._matmul_output(*size) is not None) is takes_matmul
    inputs = torch.randn(4, 6, *size, dtype=torch.float64, requires_grad=True)
    fast_inputs = inputs.detach().clone().requires_grad_()
    # the reference is the convolution's definition, not the module under test
    expected = F.conv2d(inputs, plain.weight, plain.bias, stride, padding)
    got = fast(fast_inputs)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    upstream = torch.randn_like(expected)
    expected.backward(upstream)
    got.backward(upstream)
    torch.testing.assert_close(fast_inputs.grad, inputs.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=0, atol=1e-12)
    if bias:
        torch.testing.assert_close(fast.bias.grad, plain.bias.grad, rtol=0, atol=1e-12)


def test_small_input_conv_takes_channels_last_inputs() -> None:
    plain, fast = _conv_pair(8, 4, 3, 1, 1, True)
    inputs = torch.randn(3, 8, 2, 2, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(inputs), plain(inputs), rtol=0, atol=1e-12)


def test_resnet18_imagenet_stem_on_32px_equals_torchvision_and_keeps_its_keys() -> None:
    ours = build_backbone("resnet18").double()
    reference = torchvision.models.resnet18(weights=None).double()
    reference.fc = nn.Identity()
    assert ours.state_dict().keys() == reference.state_dict().keys()
    reference.load_state_dict(ours.state_dict())
    assert any(isinstance(module, SmallInputConv2d) for module in ours.modules())
    assert not any(isinstance(module, SmallInputConv2d) for module in reference.modules())
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    ours_out, reference_out = ours(images), reference(images)
    torch.testing.assert_close(ours_out, reference_out, rtol=0, atol=1e-10)
    ours_out.square().sum().backward()
    reference_out.square().sum().backward()
    for (name, mine), theirs in zip(ours.named_parameters(), reference.parameters()):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-9, atol=1e-10, msg=name)


def test_benchmark_script_prints_both_precisions() -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "benchmark" / "small_input_conv.py"
    printed = subprocess.run([sys.executable, str(script), "--batch-size", "4", "--steps", "1"],
                             capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in printed.splitlines() if line.startswith(("fp32", "bf16"))]
    assert [row[0] for row in rows] == ["fp32", "bf16"]
    assert all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows)
