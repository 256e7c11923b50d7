"""Batched augmentation on real CIFAR-10 images: every op equals torchvision's functional op for
fixed parameters, the drawn parameters follow torchvision's distributions, views have the right
shapes per crop group."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop, v2

from solo.config import AugmentationConfig, build
from solo.data import batch_ops as ops
from solo.data.batch_augment import (
    JITTER_OPS,
    BatchMultiCrop,
    BatchTransform,
    JitterParams,
    color_jitter,
    sample_crop_boxes,
    sample_jitter,
)

MINI = Path(__file__).resolve().parents[2] / "data" / "cifar10-mini"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """16 real CIFAR-10 images, uint8 (16, 3, 32, 32), two per class of the first eight."""
    classes = sorted(p for p in (MINI / "train").iterdir())[:8]
    files = [f for c in classes for f in sorted(c.iterdir())[:2]]
    return torch.stack([TF.pil_to_tensor(Image.open(f).convert("RGB")) for f in files])


def as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255


# ----------------------------------------------------------------------------------------------
# ops against torchvision, parameters fixed
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_resized_crop_matches_torchvision(images: torch.Tensor, interpolation: str) -> None:
    generator = torch.Generator().manual_seed(0)
    sizes = torch.full((len(images),), 32)
    boxes = sample_crop_boxes(sizes, sizes, (0.08, 1.0), generator=generator)
    for size in (32, 16, 48):  # shrink, keep, enlarge
        ours = ops.resized_crop(as_float(images), boxes.top, boxes.left, boxes.height, boxes.width,
                                size, interpolation)
        mode = InterpolationMode(interpolation)
        for i, image in enumerate(as_float(images)):
            box = [int(v[i]) for v in (boxes.top, boxes.left, boxes.height, boxes.width)]
            ref = TF.resized_crop(image, *box, [size, size], interpolation=mode, antialias=True)
            torch.testing.assert_close(ours[i], ref, atol=2e-5, rtol=0)


def test_validation_resize_matches_torchvision(images: torch.Tensor) -> None:
    x = as_float(images)
    ours = ops.resize_center_crop(x, 36, 32)  # ImageNet-style: shorter side, then centre crop
    ref = torch.stack([TF.center_crop(TF.resize(i, 36, antialias=True), [32, 32]) for i in x])
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=0)
    ours = ops.resize_center_crop(x, (24, 24), 24)  # CIFAR-style: resize to a square
    torch.testing.assert_close(ours, TF.resize(x, [24, 24], antialias=True), atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation", "hue"])
def test_colour_ops_match_torchvision(images: torch.Tensor, name: str) -> None:
    x = as_float(images)
    low, high = (-0.5, 0.5) if name == "hue" else (0.0, 2.0)
    factors = torch.linspace(low, high, len(x))
    ours = getattr(ops, f"adjust_{name}")(x, factors)
    ref = torch.stack([getattr(TF, f"adjust_{name}")(image, float(f)) for image, f in zip(x, factors)])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_hsv_round_trip(images: torch.Tensor) -> None:
    x = as_float(images)
    torch.testing.assert_close(ops.hsv_to_rgb(ops.rgb_to_hsv(x)), x, atol=1e-5, rtol=0)


def test_grayscale_blur_solarize_equalize_match_torchvision(images: torch.Tensor) -> None:
    x = as_float(images)
    torch.testing.assert_close(ops.grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)
    sigma = torch.linspace(0.1, 2.0, len(x))
    kernel = ops.blur_kernel_size(2.0, 32)
    ours = ops.gaussian_blur(x, sigma, kernel)
    for i, image in enumerate(x):
        ref = TF.gaussian_blur(image, [kernel, kernel], [float(sigma[i])] * 2)
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ops.gaussian_blur(x, torch.zeros(len(x)), kernel), x)  # sigma 0: none
    torch.testing.assert_close(ops.solarize(x, 0.5), TF.solarize(x, 0.5))
    equalized = ops.equalize(x) * 255
    ref = torch.stack([TF.equalize(image) for image in images]).float()
    torch.testing.assert_close(equalized, ref, atol=1e-3, rtol=0)


def test_jitter_applies_each_images_ops_in_its_own_order(images: torch.Tensor) -> None:
    x = as_float(images)
    batch = len(x)
    generator = torch.Generator().manual_seed(3)
    params = sample_jitter(batch, 0.75, 0.4, 0.4, 0.4, 0.1, CPU, generator)
    ours = color_jitter(x, params)
    for i, image in enumerate(x):
        expected = image
        if params.applied[i]:
            for op_index in params.order[i].tolist():
                name = JITTER_OPS[op_index]
                expected = getattr(TF, f"adjust_{name}")(expected, float(params.factors[name][i]))
        torch.testing.assert_close(ours[i], expected, atol=1e-5, rtol=0)
    assert not params.applied.all() and params.applied.any(), "draw some of each (seeded)"


@pytest.mark.parametrize("hue", [0.0, 0.2])
def test_jitter_equals_torchvisions_color_jitter_for_every_op_order(images: torch.Tensor,
                                                                     hue: float) -> None:
    """All 24 orders of the four ops, one image each, with the same factors and order given to
    torchvision's ColorJitter; with hue 0 the op at the fourth position must run too (it was
    skipped once, leaving 3 of 4 jittered images without one of their ops)."""
    orders = torch.tensor(list(itertools.permutations(range(len(JITTER_OPS)))))  # (24, 4)
    x = as_float(images.repeat(2, 1, 1, 1)[: len(orders)])
    n = len(orders)
    generator = torch.Generator().manual_seed(11)
    factors = {name: torch.empty(n).uniform_(0.6, 1.4, generator=generator)
               for name in JITTER_OPS[:3]}
    if hue > 0:
        factors["hue"] = torch.empty(n).uniform_(-hue, hue, generator=generator)
    ours = color_jitter(x, JitterParams(torch.ones(n, dtype=torch.bool), factors, orders))
    reference = v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=hue)
    for i in range(n):
        params = {"fn_idx": orders[i],
                  **{f"{name}_factor": float(factors[name][i]) if name in factors else None
                     for name in JITTER_OPS}}
        expected = reference.transform(x[i], params)
        torch.testing.assert_close(ours[i], expected, atol=1e-5, rtol=0,
                                   msg=f"order {orders[i].tolist()}, hue {hue}")
        unchanged = (ours[i] - x[i]).abs().max()
        assert unchanged > 1e-3, f"order {orders[i].tolist()}: the image was not jittered"


# ----------------------------------------------------------------------------------------------
# parameter distributions
# ----------------------------------------------------------------------------------------------
def test_crop_boxes_follow_torchvisions_distribution() -> None:
    n, generator = 4000, torch.Generator().manual_seed(0)
    heights, widths = torch.full((n,), 96), torch.full((n,), 128)
    boxes = sample_crop_boxes(heights, widths, (0.2, 0.9), generator=generator)
    assert (boxes.top >= 0).all() and (boxes.left >= 0).all()
    assert (boxes.top + boxes.height <= 96).all() and (boxes.left + boxes.width <= 128).all()
    area = (boxes.height * boxes.width).float() / (96 * 128)
    ratio = boxes.width.float() / boxes.height.float()
    assert area.min() >= 0.19 and area.max() <= 0.91  # up to rounding of the sides
    assert ratio.min() >= 0.7 and ratio.max() <= 1.4

    torch.manual_seed(0)
    reference = torch.tensor([_get_params(torch.empty(3, 96, 128), (0.2, 0.9)) for _ in range(n)])
    ref_area = (reference[:, 2] * reference[:, 3]).float() / (96 * 128)
    ref_ratio = reference[:, 3].float() / reference[:, 2].float()
    for ours_values, ref_values in ((area, ref_area), (ratio, ref_ratio)):
        quantiles = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
        torch.testing.assert_close(ours_values.quantile(quantiles), ref_values.quantile(quantiles),
                                   atol=0.03, rtol=0)
    # positions are uniform over the free range: the mean top is half of it on average
    free = (96 - boxes.height).float()
    assert abs((boxes.top.float() / free.clamp(min=1)).mean() - 0.5) < 0.03


def _get_params(image: torch.Tensor, scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's own draw of a RandomResizedCrop box (top, left, height, width)."""
    return RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3])


def test_crop_box_fallback_is_torchvisions_centre_crop() -> None:
    # no box with 90-100% of a 4x400 image has an aspect ratio in [3/4, 4/3]: the centre crop
    heights, widths = torch.tensor([4, 400]), torch.tensor([400, 4])
    boxes = sample_crop_boxes(heights, widths, (0.9, 1.0))
    for i in range(2):
        expected = _get_params(torch.empty(3, int(heights[i]), int(widths[i])), (0.9, 1.0))
        ours = tuple(int(v[i]) for v in (boxes.top, boxes.left, boxes.height, boxes.width))
        assert ours == tuple(expected)


def test_jitter_draws() -> None:
    n, generator = 8000, torch.Generator().manual_seed(1)
    params = sample_jitter(n, 0.8, 0.4, 0.3, 0.0, 0.1, CPU, generator)
    assert set(params.factors) == {"brightness", "contrast", "hue"}  # a range of 0 is no op
    b, c, h = params.factors["brightness"], params.factors["contrast"], params.factors["hue"]
    assert 0.6 <= b.min() and b.max() <= 1.4 and 0.7 <= c.min() and c.max() <= 1.3
    assert -0.1 <= h.min() and h.max() <= 0.1 and abs(h.mean()) < 0.005
    assert abs(params.applied.float().mean() - 0.8) < 0.02
    assert (params.order.sort(1).values == torch.arange(4)).all()  # each row a permutation
    first = torch.bincount(params.order[:, 0], minlength=4).float() / n
    torch.testing.assert_close(first, torch.full((4,), 0.25), atol=0.02, rtol=0)


# ----------------------------------------------------------------------------------------------
# recipes
# ----------------------------------------------------------------------------------------------
def group(**kwargs: object) -> AugmentationConfig:
    return build(AugmentationConfig, {"crop_size": 32, **kwargs}, "augmentations[0]")


def test_multicrop_shapes_order_and_normalization(images: torch.Tensor) -> None:
    small = group(crop_size=16, num_crops=4, rrc={"crop_min_scale": 0.05, "crop_max_scale": 0.4})
    large = group(num_crops=2, color_jitter={"prob": 0.8, "brightness": 0.4, "contrast": 0.4,
                                             "saturation": 0.2, "hue": 0.1},
                  grayscale={"prob": 0.2}, solarization={"prob": 0.2}, horizontal_flip={"prob": 0.5},
                  gaussian_blur={"prob": 0.5}, equalization={"prob": 0.2})
    multicrop = BatchMultiCrop([large, small])
    views = multicrop(images, generator=torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(16, 3, 32, 32)] * 2 + [(16, 3, 16, 16)] * 4
    assert multicrop.crop_sizes == [32, 32, 16, 16, 16, 16] and len(multicrop) == 6
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    # views are normalized with ImageNet's statistics: values span [-mean/std, (1-mean)/std]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    lowest, highest = (-mean / std).min(), ((1 - mean) / std).max()
    assert views[0].min() >= lowest - 1e-4 and views[0].max() <= highest + 1e-4
    assert not torch.equal(views[0], views[1])  # two crops of one group are drawn apart


def test_identical_images_get_their_own_views(images: torch.Tensor) -> None:
    same = images[:1].expand(8, -1, -1, -1)
    views = BatchTransform(group(horizontal_flip={"prob": 0.5}))(same)
    assert len({tuple(v.flatten()[:64].tolist()) for v in views}) == 8


def test_recipe_without_random_ops_is_the_cpu_transform(images: torch.Tensor) -> None:
    # no crop (resize + centre crop at the native size), flip with p = 1: deterministic views
    recipe = group(rrc={"enabled": False}, horizontal_flip={"prob": 1.0}, mean=[0.5] * 3, std=[0.25] * 3)
    ours = BatchTransform(recipe)(images)
    expected = (as_float(images).flip(-1) - 0.5) / 0.25
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_padded_images_give_the_views_of_the_unpadded_ones(images: torch.Tensor) -> None:
    image = images[0, :, :20, :28]  # a 20x28 image alone, and zero-padded into a 32x32 batch
    padded = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    padded[0, :, :20, :28] = image
    recipe = BatchTransform(group(crop_size=16, rrc={"crop_min_scale": 0.3}))
    alone = recipe(image[None], generator=torch.Generator().manual_seed(5))
    within = recipe(padded, sizes=torch.tensor([[20, 28]]), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(alone, within, atol=1e-5, rtol=0)
    assert math.isfinite(float(within.sum()))
