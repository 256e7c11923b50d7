"""The DALI graphs behind ``solo.data.dali``: readers, per-crop augmentation and validation views.

This module imports NVIDIA DALI at its top, so only ``solo.data.dali`` imports it, and only once the
DALI pipeline is really built: ``import solo`` works without DALI installed.

Every random parameter is drawn per sample (``fn.random.*``), so each image of a batch and each
crop of an image gets its own. Ops applied "with probability p" run inside DALI conditionals
(``if fn.random.coin_flip(...)``), which route only the chosen samples through the op. The order
of the ops is that of ``solo.data.augmentations.build_transform``; where DALI's ops differ from
torchvision's the docstrings say how.
"""

from __future__ import annotations

from typing import Any, Sequence

import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
from nvidia.dali import pipeline_def

from solo.config import AugmentationConfig, ColorJitterConfig

READER = "Reader"  # the reader's name, through which the iterator learns the epoch and shard sizes
DataNode = Any  # nvidia.dali.pipeline.DataNode: a batch of tensors inside a graph


def equalize_op() -> Any:
    """DALI's histogram equalization, or None in releases without it (moved out of
    ``fn.experimental`` in later releases)."""
    return getattr(fn, "equalize", None) or getattr(fn.experimental, "equalize", None)


def _uniform(low: float, high: float) -> DataNode:
    return fn.random.uniform(range=[low, high])


def _factor(strength: float) -> DataNode:
    """torchvision's jitter factor: uniform in [max(0, 1 - s), 1 + s]."""
    return _uniform(max(0.0, 1.0 - strength), 1.0 + strength)


def _to_uint8(images: DataNode) -> DataNode:
    return fn.cast(dmath.clamp(images, 0, 255), dtype=types.UINT8)


def adjust_contrast(images: DataNode, factor: DataNode) -> DataNode:
    """torchvision's contrast: blend each image with the mean of its grayscale version.

    DALI's ``brightness_contrast`` pivots around a fixed grey level; the per-image mean is
    computed here on the images' own device, so this also runs on the GPU.
    """
    gray = fn.color_space_conversion(images, image_type=types.RGB, output_type=types.GRAY)
    mean = fn.reductions.mean(gray, dtype=types.FLOAT)  # one scalar per sample
    return _to_uint8(images * factor + mean * (1.0 - factor))


def color_jitter(images: DataNode, jitter: ColorJitterConfig) -> DataNode:
    """Brightness, contrast, saturation and hue, each factor drawn per sample.

    torchvision shuffles the four adjustments per image; here they run in that fixed order. Hue is
    DALI's: a rotation about the grey axis in RGB space, close to torchvision's HSV hue shift.
    """
    if jitter.brightness > 0:
        images = fn.brightness_contrast(images, brightness=_factor(jitter.brightness))
    if jitter.contrast > 0:
        images = adjust_contrast(images, _factor(jitter.contrast))
    if jitter.saturation > 0 or jitter.hue > 0:
        saturation = _factor(jitter.saturation) if jitter.saturation > 0 else 1.0
        # the config's hue is a fraction of the colour circle, DALI's is in degrees
        hue = _uniform(-360.0 * jitter.hue, 360.0 * jitter.hue) if jitter.hue > 0 else 0.0
        images = fn.hsv(images, saturation=saturation, hue=hue)
    return images


def solarize(images: DataNode, threshold: float) -> DataNode:
    """Invert the pixels at or above ``threshold`` (a fraction of 255), as torchvision does."""
    inverted = images >= threshold * 255.0
    return _to_uint8(images + inverted * (255 - images - images))


def augment(images: DataNode, aug: AugmentationConfig) -> DataNode:
    """One view of every decoded image (uint8 HWC): crop group ``aug``'s recipe, normalized
    float CHW. Each call draws new random parameters."""
    size = aug.crop_size
    if aug.rrc.enabled:
        images = fn.random_resized_crop(
            images, size=[size, size], random_area=[aug.rrc.crop_min_scale, aug.rrc.crop_max_scale],
            random_aspect_ratio=[3 / 4, 4 / 3], interp_type=types.INTERP_CUBIC)
    else:  # the shorter side to the crop size, then the centre
        images = fn.resize(images, resize_shorter=size, interp_type=types.INTERP_CUBIC)
        images = fn.crop(images, crop=[size, size])
    if aug.color_jitter.prob > 0:
        if fn.random.coin_flip(probability=aug.color_jitter.prob):
            images = color_jitter(images, aug.color_jitter)
    if aug.grayscale.prob > 0:
        if fn.random.coin_flip(probability=aug.grayscale.prob):
            # zero saturation leaves the ITU-R 601 luma in all three channels, as torchvision's
            images = fn.hsv(images, saturation=0.0)
    blur = aug.gaussian_blur
    if blur.prob > 0:
        if fn.random.coin_flip(probability=blur.prob):
            images = fn.gaussian_blur(images, sigma=_uniform(blur.sigma_min, blur.sigma_max))
    if aug.solarization.prob > 0:
        if fn.random.coin_flip(probability=aug.solarization.prob):
            images = solarize(images, aug.solarization.threshold)
    if aug.equalization.prob > 0:
        if fn.random.coin_flip(probability=aug.equalization.prob):
            images = equalize_op()(images)
    flip = aug.horizontal_flip.prob
    mirror = fn.random.coin_flip(probability=flip) if flip > 0 else 0
    return normalize(images, aug.normalization, mirror=mirror)


def normalize(images: DataNode, normalization: tuple[Sequence[float], Sequence[float]],
              mirror: Any = 0, crop: int | None = None) -> DataNode:
    """uint8 HWC -> float CHW, ``(x / 255 - mean) / std``; flips the samples where ``mirror``."""
    mean, std = normalization
    kwargs = {"crop": [crop, crop]} if crop is not None else {}
    return fn.crop_mirror_normalize(
        images, mirror=mirror, mean=[255.0 * m for m in mean], std=[255.0 * s for s in std],
        dtype=types.FLOAT, output_layout="CHW", **kwargs)


def val_view(images: DataNode, crop_size: int, small_images: bool,
             normalization: tuple[Sequence[float], Sequence[float]]) -> DataNode:
    """``build_val_transform``'s view: small images resized to the crop; others resized to
    256/224 of the crop (shorter side) and centre-cropped. Bilinear, antialiased, as torchvision."""
    if small_images:
        images = fn.resize(images, resize_x=crop_size, resize_y=crop_size,
                           interp_type=types.INTERP_LINEAR)
    else:
        images = fn.resize(images, resize_shorter=int(round(crop_size * 256 / 224)),
                           interp_type=types.INTERP_LINEAR)
    return normalize(images, normalization, crop=crop_size)


def read_files(files: list[str], indexes: list[int], shard_id: int, num_shards: int,
               shuffle: bool, shuffle_seed: int = 0) -> tuple[DataNode, DataNode]:
    """Encoded files and their indexes (the reader's labels), this shard's part of each epoch.

    ``shuffle_after_epoch`` reshuffles the whole list every epoch (the first included) with the
    same seed in every process, so the shards of one epoch never overlap. Padding the last batch
    lets the iterator end every epoch at a batch boundary instead of starting the next one early.
    """
    shuffling = {"shuffle_after_epoch": True, "shuffle_after_epoch_seed": shuffle_seed} if shuffle else {}
    return fn.readers.file(files=files, labels=indexes, shard_id=shard_id, num_shards=num_shards,
                           pad_last_batch=True, name=READER, **shuffling)


def _decode(encoded: DataNode, gpu: bool) -> DataNode:
    # "mixed": the host parses, the GPU (nvJPEG) decodes
    return fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.RGB)


@pipeline_def(enable_conditionals=True)
def train_graph(files: list[str], indexes: list[int], groups: Sequence[AugmentationConfig],
                shard_id: int, num_shards: int, shuffle_seed: int, gpu: bool) -> tuple:
    """Outputs every crop (groups in the given order, ``num_crops`` each), then the indexes."""
    encoded, index = read_files(files, indexes, shard_id, num_shards, True, shuffle_seed)
    images = _decode(encoded, gpu)
    crops = [augment(images, aug) for aug in groups for _ in range(aug.num_crops)]
    return (*crops, index)


@pipeline_def
def val_graph(files: list[str], indexes: list[int], crop_size: int, small_images: bool,
              normalization: tuple[Sequence[float], Sequence[float]], shard_id: int,
              num_shards: int, gpu: bool) -> tuple:
    """Outputs the validation view of every image, in file order, then the indexes."""
    encoded, index = read_files(files, indexes, shard_id, num_shards, shuffle=False)
    return val_view(_decode(encoded, gpu), crop_size, small_images, normalization), index
