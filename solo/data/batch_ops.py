"""Image ops on whole batches, each image with its own parameters: the kernels of the batched
augmentation (solo/data/batch_augment.py).

Images are float tensors (B, 3, H, W) in [0, 1] on any device; parameters are (B,) tensors on the
same device, so a batch is transformed without a Python loop over images and without reading a
value back to the host. With fixed parameters every op gives what torchvision's functional op of
the same name gives for one image (the tests check it).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


# ----------------------------------------------------------------------------------------------
# resampling: crop + resize as two batched matrix products
# ----------------------------------------------------------------------------------------------
def _bicubic(x: Tensor) -> Tensor:
    # Keys' cubic with a = -0.5, the kernel of PIL's and torch's antialiased bicubic
    a = -0.5
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _triangle(x: Tensor) -> Tensor:
    return (1 - x.abs()).clamp(min=0)


KERNELS = {"bilinear": (_triangle, 1.0), "bicubic": (_bicubic, 2.0)}  # kernel, support radius


def resample_matrix(start: Tensor, scale: Tensor, valid_start: Tensor, valid_end: Tensor,
                    in_size: int, out_size: int, interpolation: str) -> Tensor:
    """Weights (B, out_size, in_size) taking a row (or column) of pixels to ``out_size`` samples.

    Output pixel i is centred at input coordinate ``start + (i + 0.5) * scale`` (pixel j covers
    [j, j + 1)); the kernel is widened by the scale when shrinking (antialiasing, as PIL and
    torchvision's ``antialias=True``), and only input pixels in [valid_start, valid_end) take part,
    which is how a crop's edge behaves when it is cut out before resizing.
    """
    kernel, support = KERNELS[interpolation]
    stretch = scale.clamp(min=1.0)[:, None, None]  # (B, 1, 1)
    outputs = torch.arange(out_size, device=start.device, dtype=torch.float32)
    centers = start[:, None].float() + (outputs[None] + 0.5) * scale[:, None]  # (B, out)
    pixels = torch.arange(in_size, device=start.device, dtype=torch.float32)
    offsets = pixels[None, None] + 0.5 - centers[..., None]  # (B, out, in)
    weights = kernel(offsets / stretch)
    inside = (pixels[None] >= valid_start[:, None]) & (pixels[None] < valid_end[:, None])  # (B, in)
    weights = weights * inside[:, None].float()
    # renormalising makes the taps of a border pixel sum to one, as PIL and torch do
    return weights / weights.sum(-1, keepdim=True).clamp(min=1e-12)


def resized_crop(images: Tensor, top: Tensor, left: Tensor, height: Tensor, width: Tensor,
                 size: int, interpolation: str = "bicubic", flip: Optional[Tensor] = None,
                 value_scale: float = 1.0) -> Tensor:
    """Crop box (top, left, height, width) of each image, resized to (size, size).

    ``images`` (B, C, H, W), any float or uint8 dtype; boxes are (B,) integer tensors inside each
    image. Matches ``torchvision.transforms.v2.functional.resized_crop(..., antialias=True)``; the
    result is not clamped (bicubic overshoots a little), the caller clamps. Folded into the
    resampling weights at no cost: a horizontal flip of the images where ``flip`` (B,) is true,
    and a factor ``value_scale`` on every value (1/255 turns 8-bit levels into [0, 1]).
    """
    _, _, in_h, in_w = images.shape
    rows = resample_matrix(top, height / size, top, top + height, in_h, size, interpolation)
    cols = resample_matrix(left, width / size, left, left + width, in_w, size, interpolation)
    if value_scale != 1.0:
        rows = rows * value_scale
    if flip is not None:  # output column j takes the weights of column size - 1 - j
        cols = torch.where(flip.view(-1, 1, 1), cols.flip(1), cols)
    return _resample(images, rows, cols)


def _resample(images: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    # out[b, c] = rows[b] @ images[b, c] @ cols[b].T as two batched matrix products with the
    # channels folded into the matrices (fewer, larger products than one per channel)
    batch, channels, height, width = images.shape
    size_h, size_w = rows.shape[1], cols.shape[1]
    x = images.float().reshape(batch, channels * height, width).bmm(cols.transpose(1, 2))
    x = x.view(batch, channels, height, size_w).transpose(1, 2).reshape(batch, height, -1)
    x = rows.bmm(x)  # (B, S_h, C * S_w)
    return x.view(batch, size_h, channels, size_w).transpose(1, 2)


def resize_center_crop(images: Tensor, resize_to: int | tuple[int, int], crop: int,
                       interpolation: str = "bilinear") -> Tensor:
    """Deterministic validation view: resize (shorter side to an int, or to (h, w)), then a
    centred ``crop`` square, in one resampling pass."""
    batch, _, in_h, in_w = images.shape
    if isinstance(resize_to, int):
        short = min(in_h, in_w)
        # torchvision: the shorter side becomes resize_to, the longer one is scaled and truncated
        new_h, new_w = ((resize_to, int(resize_to * in_w / in_h)) if in_h == short
                        else (int(resize_to * in_h / in_w), resize_to))
    else:
        new_h, new_w = resize_to
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    ones = images.new_ones(batch, dtype=torch.float32)
    zero = torch.zeros_like(ones)
    scale_h, scale_w = in_h / new_h, in_w / new_w
    rows = resample_matrix(ones * top * scale_h, ones * scale_h, zero, ones * in_h, in_h, crop,
                           interpolation)
    cols = resample_matrix(ones * left * scale_w, ones * scale_w, zero, ones * in_w, in_w, crop,
                           interpolation)
    return _resample(images, rows, cols)


# ----------------------------------------------------------------------------------------------
# colour
# ----------------------------------------------------------------------------------------------
def _per_image(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def grayscale(images: Tensor) -> Tensor:
    """Luma (B, 1, H, W)."""
    r, g, b = images.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """factor * images + (1 - factor) * other, clamped to [0, 1]; factor 1 returns the images."""
    return torch.lerp(other, images, _per_image(factor)).clamp_(0, 1)  # one fused pass


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    return (images * _per_image(factor)).clamp(0, 1)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    mean_luma = grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)
    return blend(images, mean_luma, factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    return blend(images, grayscale(images), factor)


def rgb_to_hsv(images: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV, each channel in [0, 1] (hue 0 for grays)."""
    r, g, b = images.unbind(1)
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    # the hue sector follows which channel is the largest (red wins ties, then green)
    hue = torch.where(value == r, (g - b) / safe,
                      torch.where(value == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = torch.remainder(hue / 6, 1.0)
    saturation = chroma / torch.where(value > 0, value, torch.ones_like(value))
    return torch.stack([hue, saturation, value], 1)


def _hsv_channels(sixths: Tensor, chroma: Tensor, value: Tensor) -> Tensor:
    # channel n (5: red, 3: green, 1: blue) = V - C * clamp(min(k, 4 - k), 0, 1), where
    # k = (n + hue in sixths of the wheel) mod 6: the sector formula without branching on sectors
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(sixths + n, 6.0)
        channels.append(value - chroma * torch.minimum(k, 4 - k).clamp_(0, 1))
    return torch.stack(channels, 1)


def hsv_to_rgb(images: Tensor) -> Tensor:
    """(B, 3, H, W) HSV in [0, 1] -> RGB in [0, 1]."""
    hue, saturation, value = images.unbind(1)
    return _hsv_channels(hue * 6, saturation * value, value)


def adjust_hue(images: Tensor, factor: Tensor) -> Tensor:
    """Rotate the hue by ``factor`` (a fraction of the colour wheel, in [-0.5, 0.5])."""
    r, g, b = images.unbind(1)
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)  # = saturation * value
    # the hue in sixths of the wheel, from the largest channel (red wins ties, then green); grays
    # (chroma 0) get 0 and come back unchanged whatever their hue
    sixths = torch.where(value == r, g - b,
                         torch.where(value == g, (b - r) + 2 * chroma, (r - g) + 4 * chroma))
    sixths = sixths / torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    return _hsv_channels(sixths + 6 * factor.view(-1, 1, 1), chroma, value)


# ----------------------------------------------------------------------------------------------
# filters and pixel maps
# ----------------------------------------------------------------------------------------------
def blur_kernel_size(sigma_max: float, image_size: int) -> int:
    """An odd kernel covering +-3 sigma of the widest blur, small enough for reflect padding."""
    size = 2 * math.ceil(3 * sigma_max) + 1
    return max(1, min(size, 2 * (image_size // 2) - 1))


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with a standard deviation per image (0 leaves it unchanged),
    reflect padding, as torchvision's gaussian_blur with that kernel size."""
    batch, channels, height, width = images.shape
    half = (kernel_size - 1) / 2
    taps = torch.linspace(-half, half, kernel_size, device=images.device)
    sigma = sigma.float()[:, None]
    weights = torch.exp(-0.5 * (taps[None] / sigma.clamp(min=1e-6)) ** 2)
    weights = torch.where(sigma > 0, weights, (taps[None] == 0).float())
    weights = weights / weights.sum(-1, keepdim=True)  # (B, K)
    weights = weights.repeat_interleave(channels, 0)  # (B*C, K): one group per image and channel
    pad = kernel_size // 2
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.pad(flat, (pad, pad, pad, pad), mode="reflect")
    flat = F.conv2d(flat, weights.view(-1, 1, 1, kernel_size), groups=batch * channels)
    flat = F.conv2d(flat, weights.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return flat.view(batch, channels, height, width)


def solarize(images: Tensor, threshold: float) -> Tensor:
    return torch.where(images >= threshold, 1 - images, images)


def equalize(images: Tensor) -> Tensor:
    """Histogram equalization per image and channel on 256 levels, as torchvision's equalize."""
    batch, channels, height, width = images.shape
    # float -> 8-bit levels as torchvision converts before equalizing
    levels = (images * (256 - 1e-3)).floor().long().clamp(0, 255).view(batch * channels, -1)
    histogram = torch.zeros(batch * channels, 256, device=images.device, dtype=torch.long)
    histogram.scatter_add_(1, levels, torch.ones_like(levels))
    top = levels.amax(1, keepdim=True)
    # pixels not at the brightest level, spread over 255 steps; 0 means nothing to equalize
    step = (height * width - histogram.gather(1, top)) // 255  # (BC, 1)
    lookup = (histogram.cumsum(1) + step // 2) // step.clamp(min=1)
    lookup = F.pad(lookup, (1, 0))[:, :-1].clamp(max=255)  # level l maps to the count below it
    mapped = torch.where(step > 0, lookup.gather(1, levels), levels)
    return (mapped.float() / 255).view(batch, channels, height, width)
