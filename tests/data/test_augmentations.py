"""Augmentation recipes on real CIFAR-10 images: shapes, normalization and each op at p = 1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms.functional import pil_to_tensor

from solo.config import AugmentationConfig, ConfigError, build
from solo.data import MultiCropTransform, build_transform, build_val_transform

MINI = Path(__file__).resolve().parents[2] / "data" / "cifar10-mini"
MEAN, STD = [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]


def normalized(image: Image.Image) -> torch.Tensor:
    """(ToTensor(image) - MEAN) / STD, written out."""
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return (pil_to_tensor(image.convert("RGB")).float() / 255 - mean) / std


@pytest.fixture
def image() -> Image.Image:
    first = sorted((MINI / "train" / "horse").iterdir())[0]
    return Image.open(first)


def recipe(**groups: object) -> AugmentationConfig:
    """A crop group of 32 px with every op off and no random crop, changed by ``groups``."""
    return build(AugmentationConfig, {"crop_size": 32, "rrc": {"enabled": False},
                                      "mean": [0.0] * 3, "std": [1.0] * 3, **groups})


def as_float(image: Image.Image) -> torch.Tensor:
    return pil_to_tensor(image.convert("RGB")).float() / 255


def test_multicrop_shapes(image: Image.Image) -> None:
    large = build(AugmentationConfig, {"crop_size": 32, "num_crops": 2,
                                       "color_jitter": {"prob": 0.8, "brightness": 0.4,
                                                        "contrast": 0.4, "saturation": 0.2,
                                                        "hue": 0.1},
                                       "grayscale": {"prob": 0.2},
                                       "gaussian_blur": {"prob": 0.5},
                                       "solarization": {"prob": 0.2},
                                       "equalization": {"prob": 0.2},
                                       "horizontal_flip": {"prob": 0.5}})
    small = build(AugmentationConfig, {"crop_size": 16, "num_crops": 4,
                                       "rrc": {"crop_min_scale": 0.05, "crop_max_scale": 0.4}})
    transform = MultiCropTransform([large, small])
    views = transform(image)
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 4
    assert all(v.dtype == torch.float32 for v in views)
    assert not torch.equal(views[0], views[1])  # two random crops of the same image differ
    assert len(transform) == 6


def test_large_groups_come_first() -> None:
    groups = [recipe(num_crops=1), recipe(crop_size=16, num_crops=3), recipe(num_crops=1)]
    assert MultiCropTransform(groups).crop_sizes == [32, 32, 16, 16, 16]
    with pytest.raises(ConfigError, match=r"augmentations\[1\]\.crop_size"):
        MultiCropTransform([recipe(crop_size=16), recipe(crop_size=32)])


def test_normalization(image: Image.Image) -> None:
    out = build_transform(recipe(mean=MEAN, std=STD))(image)
    torch.testing.assert_close(out, normalized(image))


def test_default_normalization_is_imagenet(image: Image.Image) -> None:
    aug = build(AugmentationConfig, {"crop_size": 32, "rrc": {"enabled": False}})
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    torch.testing.assert_close(build_transform(aug)(image), (as_float(image) - mean) / std)


def test_grayscale(image: Image.Image) -> None:
    out = build_transform(recipe(grayscale={"prob": 1.0}))(image)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert not torch.equal(as_float(image)[0], as_float(image)[1])  # the input was in colour


def test_solarization_inverts_bright_pixels(image: Image.Image) -> None:
    out = build_transform(recipe(solarization={"prob": 1.0, "threshold": 0.5}))(image)
    pixels = pil_to_tensor(image.convert("RGB"))
    expected = torch.where(pixels >= 128, 255 - pixels, pixels).float() / 255
    assert (pixels >= 128).any() and (pixels < 128).any()
    torch.testing.assert_close(out, expected)


def test_horizontal_flip_mirrors(image: Image.Image) -> None:
    out = build_transform(recipe(horizontal_flip={"prob": 1.0}))(image)
    torch.testing.assert_close(out, as_float(image).flip(-1))


def test_equalization(image: Image.Image) -> None:
    out = build_transform(recipe(equalization={"prob": 1.0}))(image)
    torch.testing.assert_close(out, as_float(ImageOps.equalize(image.convert("RGB"))))


def test_blur_uses_the_sigma_range(image: Image.Image) -> None:
    aug = recipe(gaussian_blur={"prob": 1.0, "sigma_min": 1.0, "sigma_max": 1.0})
    blurred = image.convert("RGB").filter(ImageFilter.GaussianBlur(radius=1.0))
    torch.testing.assert_close(build_transform(aug)(image), as_float(blurred))


def test_color_jitter_changes_colours(image: Image.Image) -> None:
    aug = recipe(color_jitter={"prob": 1.0, "brightness": 0.8, "saturation": 0.8})
    transform = build_transform(aug)
    torch.manual_seed(0)
    assert all(not torch.equal(transform(image), as_float(image)) for _ in range(5))


def test_zero_probabilities_leave_ops_out() -> None:
    names = [type(op).__name__ for op in build_transform(recipe()).transforms]
    assert names == ["Resize", "CenterCrop", "ToImage", "ToDtype", "Normalize", "ToPureTensor"]


def test_crop_of_a_non_square_image(image: Image.Image) -> None:
    wide = image.resize((64, 40))
    assert build_transform(recipe(crop_size=24))(wide).shape == (3, 24, 24)
    rrc = build(AugmentationConfig, {"crop_size": 24})
    assert build_transform(rrc)(wide).shape == (3, 24, 24)


def test_val_transforms(image: Image.Image) -> None:
    cifar = build_val_transform(32, MEAN, STD, "cifar10")(image)
    torch.testing.assert_close(cifar, normalized(image))  # native size: only normalized
    assert build_val_transform(96, MEAN, STD, "stl10")(image).shape == (3, 96, 96)
    imagenet = build_val_transform(64, MEAN, STD, "imagenet")
    assert imagenet(image.resize((100, 80))).shape == (3, 64, 64)
    assert [type(op).__name__ for op in imagenet.transforms][:2] == ["Resize", "CenterCrop"]
    assert imagenet.transforms[0].size == [73]  # 64 / 224 * 256, the shorter side
