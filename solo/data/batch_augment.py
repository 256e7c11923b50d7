"""Batched augmentation: the views of a whole batch made at once, on the batch's device.

The same recipes as the CPU path (solo/data/augmentations.py), drawn with the same distributions as
torchvision's transforms, but each image of a batch gets its own parameters from one vectorized
draw: random resized crop, colour jitter with its ops in a random order per image, grayscale,
Gaussian blur, solarization, equalization, horizontal flip, normalization. Nothing is read back to
the host, so a GPU never waits for Python between ops; on the CPU the same code is several times
faster per image than transforming images one by one (scripts/benchmark/pretrain_speed.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from solo.config import AugmentationConfig
from solo.data import batch_ops as ops
from solo.data.augmentations import order_crop_groups

RRC_RATIO = (3 / 4, 4 / 3)  # torchvision's default aspect-ratio range
RRC_ATTEMPTS = 10  # torchvision's rejection sampling tries this many boxes before a centre crop


def _uniform(low: float, high: float, shape: tuple[int, ...], device: torch.device,
             generator: Optional[torch.Generator]) -> Tensor:
    return torch.rand(shape, device=device, generator=generator) * (high - low) + low


def _coin(prob: float, batch: int, device: torch.device, generator: Optional[torch.Generator]) -> Tensor:
    return torch.rand(batch, device=device, generator=generator) < prob


@dataclass
class CropBoxes:
    """One box per image, (B,) int64 each."""

    top: Tensor
    left: Tensor
    height: Tensor
    width: Tensor


def sample_crop_boxes(heights: Tensor, widths: Tensor, scale: tuple[float, float],
                      ratio: tuple[float, float] = RRC_RATIO,
                      generator: Optional[torch.Generator] = None) -> CropBoxes:
    """RandomResizedCrop's boxes for images of the given (B,) sizes, torchvision's algorithm:
    up to ten tries of an area fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``,
    the first box that fits is kept; if none fits, the centre crop with the ratio clamped."""
    batch, device = len(heights), heights.device
    h_img, w_img = heights.float()[:, None], widths.float()[:, None]
    area = h_img * w_img * _uniform(scale[0], scale[1], (batch, RRC_ATTEMPTS), device, generator)
    log_ratio = _uniform(math.log(ratio[0]), math.log(ratio[1]), (batch, RRC_ATTEMPTS), device,
                         generator)
    aspect = torch.exp(log_ratio)
    width = torch.round(torch.sqrt(area * aspect))
    height = torch.round(torch.sqrt(area / aspect))
    fits = (width > 0) & (height > 0) & (width <= w_img) & (height <= h_img)
    first = fits.int().argmax(1, keepdim=True)  # index of the first fitting try (0 if none)
    width, height = width.gather(1, first)[:, 0], height.gather(1, first)[:, 0]

    # the fallback: the whole image, cut to the nearest allowed aspect ratio
    h_img, w_img = h_img[:, 0], w_img[:, 0]
    image_ratio = w_img / h_img
    center_w = torch.where(image_ratio > ratio[1], torch.round(h_img * ratio[1]), w_img)
    center_h = torch.where(image_ratio < ratio[0], torch.round(w_img / ratio[0]), h_img)
    found = fits.any(1)
    width, height = torch.where(found, width, center_w), torch.where(found, height, center_h)

    # a uniform integer position, drawn for every image (the fallback box is centred)
    top = torch.floor(torch.rand(batch, device=device, generator=generator) * (h_img - height + 1))
    left = torch.floor(torch.rand(batch, device=device, generator=generator) * (w_img - width + 1))
    top = torch.where(found, top, torch.div(h_img - height, 2, rounding_mode="floor"))
    left = torch.where(found, left, torch.div(w_img - width, 2, rounding_mode="floor"))
    return CropBoxes(top.long(), left.long(), height.long(), width.long())


JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


@dataclass
class JitterParams:
    """Per-image colour-jitter draws: whether it applies, one factor per op, the order of ops."""

    applied: Tensor  # (B,) bool
    factors: dict[str, Tensor]  # op -> (B,) factor; an op with range 0 is absent
    order: Tensor  # (B, 4) a permutation of range(4) per image: JITTER_OPS positions


def sample_jitter(batch: int, prob: float, brightness: float, contrast: float, saturation: float,
                  hue: float, device: torch.device,
                  generator: Optional[torch.Generator] = None) -> JitterParams:
    """ColorJitter's factors: [max(0, 1 - x), 1 + x] for brightness, contrast and saturation,
    [-hue, hue] for hue; every image also draws its own order of the four ops."""
    ranges = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
    factors = {name: _uniform(max(0.0, 1 - x), 1 + x, (batch,), device, generator)
               for name, x in ranges.items() if x > 0}
    if hue > 0:
        factors["hue"] = _uniform(-hue, hue, (batch,), device, generator)
    order = torch.rand(batch, len(JITTER_OPS), device=device, generator=generator).argsort(1)
    return JitterParams(_coin(prob, batch, device, generator), factors, order)


def _blend_step(images: Tensor, op: Tensor, active: Tensor, params: JitterParams) -> Tensor:
    """One position of the jitter for every image at once: brightness, contrast and saturation
    are all blends, factor * image + (1 - factor) * other (other: black, the mean luma, the luma),
    so the image's op at this position is one blend; inactive images take factor 1 (unchanged)."""
    factor = torch.ones(len(images), device=images.device)
    for op_index, name in enumerate(JITTER_OPS[:3]):
        if name in params.factors:
            factor = torch.where(active & (op == op_index), params.factors[name], factor)
    luma = ops.grayscale(images)
    mean_luma = luma.mean(dim=(-2, -1), keepdim=True)
    op = op.view(-1, 1, 1, 1)
    other = torch.where(op == 0, torch.zeros_like(luma), torch.where(op == 1, mean_luma, luma))
    return ops.blend(images, other, factor)


def color_jitter(images: Tensor, params: JitterParams) -> Tensor:
    """Each image's ops in its own order, with the hue (the costly op) computed once: first the
    ops that come before the hue in each image's order, then the hue, then the ops after it.
    Without a hue every position comes before it, the last one included."""
    hue = JITTER_OPS.index("hue")
    has_hue = "hue" in params.factors
    num_positions = len(JITTER_OPS)
    if has_hue:
        hue_position = (params.order == hue).int().argmax(1)  # (B,)
    else:
        hue_position = torch.full_like(params.order[:, 0], num_positions)
    positions = torch.arange(num_positions, device=images.device)
    # with a hue, nothing precedes it at the last position and nothing follows it at the first
    parts = [(True, range(num_positions - 1)), (False, range(1, num_positions))] if has_hue \
        else [(True, range(num_positions))]
    for before_hue, part_positions in parts:
        for position in part_positions:
            op = params.order[:, position]
            in_part = (positions[position] < hue_position if before_hue
                       else positions[position] > hue_position)
            images = _blend_step(images, op, params.applied & (op != hue) & in_part, params)
        if before_hue and has_hue:
            images = _where(params.applied, ops.adjust_hue(images, params.factors["hue"]), images)
    return images


def _where(mask: Tensor, changed: Tensor, images: Tensor) -> Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), changed, images)


class BatchTransform:
    """One crop group's recipe on a batch: uint8 or [0, 1] float images (B, 3, H, W) ->
    normalized float views (B, 3, crop_size, crop_size), each image with its own draws."""

    def __init__(self, aug: AugmentationConfig) -> None:
        self.aug = aug
        mean, std = aug.normalization
        self.inv_std = 1 / torch.tensor(std).view(1, 3, 1, 1)
        self.shift = -torch.tensor(mean).view(1, 3, 1, 1) * self.inv_std

    def __call__(self, images: Tensor, sizes: Optional[Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        """``sizes`` (B, 2) gives each image's (height, width) when a batch of differently sized
        images is zero-padded to one tensor; crops never reach the padding."""
        aug, device, batch = self.aug, images.device, len(images)
        scale = 255.0 if images.dtype == torch.uint8 else 1.0
        if sizes is None:  # filled on the device: a tensor built from a list would be copied there
            heights = torch.full((batch,), images.shape[-2], device=device, dtype=torch.long)
            widths = torch.full((batch,), images.shape[-1], device=device, dtype=torch.long)
        else:
            heights, widths = sizes[:, 0], sizes[:, 1]
        if aug.rrc.enabled:
            boxes = sample_crop_boxes(heights, widths, (aug.rrc.crop_min_scale, aug.rrc.crop_max_scale),
                                      generator=generator)
        else:  # resize the shorter side and take the centre square: the centred square box
            side = torch.minimum(heights, widths)
            boxes = CropBoxes((heights - side) // 2, (widths - side) // 2, side, side)
        # the flip is drawn here but done by the resampling: every later op is per pixel or, like
        # the blur, mirror-symmetric, so flipping first or last gives the same view
        flip = (_coin(aug.horizontal_flip.prob, batch, device, generator)
                if aug.horizontal_flip.prob > 0 else None)
        views = ops.resized_crop(images, boxes.top, boxes.left, boxes.height, boxes.width,
                                 aug.crop_size, "bicubic", flip=flip, value_scale=1 / scale)
        views = views.clamp_(0, 1)  # bicubic overshoots; 8-bit images cannot

        jitter = aug.color_jitter
        if jitter.prob > 0:
            views = color_jitter(views, sample_jitter(batch, jitter.prob, jitter.brightness,
                                                      jitter.contrast, jitter.saturation,
                                                      jitter.hue, device, generator))
        if aug.grayscale.prob > 0:
            views = _where(_coin(aug.grayscale.prob, batch, device, generator),
                           ops.grayscale(views).expand_as(views), views)
        blur = aug.gaussian_blur
        if blur.prob > 0:
            sigma = _uniform(blur.sigma_min, blur.sigma_max, (batch,), device, generator)
            sigma = torch.where(_coin(blur.prob, batch, device, generator), sigma, torch.zeros_like(sigma))
            views = ops.gaussian_blur(views, sigma, ops.blur_kernel_size(blur.sigma_max, aug.crop_size))
        if aug.solarization.prob > 0:
            chosen = _coin(aug.solarization.prob, batch, device, generator).view(-1, 1, 1, 1)
            views = torch.where(chosen & (views >= aug.solarization.threshold), 1 - views, views)
        if aug.equalization.prob > 0:
            views = _where(_coin(aug.equalization.prob, batch, device, generator),
                           ops.equalize(views), views)
        if self.inv_std.device != device:  # moved once, not at every batch
            self.inv_std, self.shift = self.inv_std.to(device), self.shift.to(device)
        return torch.addcmul(self.shift, views, self.inv_std)  # (x - mean) / std in one pass


class BatchMultiCrop:
    """Every view of a batch: each crop group's recipe ``num_crops`` times, large crops first
    (the order and sizes of ``MultiCropTransform``, the CPU path)."""

    def __init__(self, augmentations: Sequence[AugmentationConfig]) -> None:
        groups = order_crop_groups(augmentations)
        self.transforms = [(BatchTransform(aug), aug.num_crops) for aug in groups]
        self.crop_sizes = [aug.crop_size for aug in groups for _ in range(aug.num_crops)]

    def __call__(self, images: Tensor, sizes: Optional[Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> list[Tensor]:
        if images.dtype == torch.uint8:  # once per batch, not once per view
            images = images.float().div_(255)
        return [transform(images, sizes, generator) for transform, num_crops in self.transforms
                for _ in range(num_crops)]

    def __len__(self) -> int:
        return len(self.crop_sizes)
