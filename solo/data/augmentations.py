"""CPU augmentations: a recipe per crop group, the multi-crop transform, the validation transform.

Each entry of the config's ``augmentations`` list is a crop group: ``num_crops`` views of
``crop_size`` pixels made with one recipe (solo-learn's semantics). Ops whose probability is 0 are
left out, so a recipe costs only what it uses. Ops run on PIL images; the views come out as float
tensors (3, H, W), normalized.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode, v2

from solo.config import AugmentationConfig, ConfigError

ImageTransform = Callable[[Image.Image], torch.Tensor]

CIFAR_LIKE = ("cifar10", "cifar100", "stl10")  # small images, validated at their full size


class GaussianBlur:
    """PIL's Gaussian blur with a standard deviation drawn uniformly from [sigma_min, sigma_max].

    PIL's blur is about ten times faster on the CPU than torchvision's kernel blur (which converts
    PIL images to tensors and back); its radius is the standard deviation, as in solo-learn.
    """

    def __init__(self, sigma_min: float, sigma_max: float) -> None:
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def __call__(self, image: Image.Image) -> Image.Image:
        # torch's generator, which the data loader seeds differently in every worker
        sigma = torch.empty(1).uniform_(self.sigma_min, self.sigma_max).item()
        return image.filter(ImageFilter.GaussianBlur(radius=sigma))

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma=({self.sigma_min}, {self.sigma_max}))"


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),  # uint8 -> [0, 1]
            v2.Normalize(list(mean), list(std)), v2.ToPureTensor()]


def build_transform(aug: AugmentationConfig) -> ImageTransform:
    """The recipe of one crop group: PIL image -> normalized float tensor (3, crop, crop)."""
    size = aug.crop_size
    ops: list[Callable] = []
    if aug.rrc.enabled:
        scale = (aug.rrc.crop_min_scale, aug.rrc.crop_max_scale)
        ops.append(v2.RandomResizedCrop(size, scale=scale, interpolation=InterpolationMode.BICUBIC))
    else:
        ops += [v2.Resize(size, interpolation=InterpolationMode.BICUBIC), v2.CenterCrop(size)]
    jitter = aug.color_jitter
    if jitter.prob > 0:
        ops.append(v2.RandomApply([v2.ColorJitter(jitter.brightness, jitter.contrast,
                                                  jitter.saturation, jitter.hue)], p=jitter.prob))
    if aug.grayscale.prob > 0:
        ops.append(v2.RandomGrayscale(p=aug.grayscale.prob))
    blur = aug.gaussian_blur
    if blur.prob > 0:
        ops.append(v2.RandomApply([GaussianBlur(blur.sigma_min, blur.sigma_max)], p=blur.prob))
    if aug.solarization.prob > 0:
        # the config's threshold is a fraction of the range; PIL pixels are 0..255
        ops.append(v2.RandomSolarize(threshold=aug.solarization.threshold * 255,
                                     p=aug.solarization.prob))
    if aug.equalization.prob > 0:
        ops.append(v2.RandomEqualize(p=aug.equalization.prob))
    if aug.horizontal_flip.prob > 0:
        ops.append(v2.RandomHorizontalFlip(p=aug.horizontal_flip.prob))
    mean, std = aug.normalization
    return v2.Compose(ops + _to_normalized_tensor(mean, std))


def order_crop_groups(augmentations: Sequence[AugmentationConfig]) -> list[AugmentationConfig]:
    """The groups at the first group's crop size (the large crops), then the others, each part in
    the given order. A group larger than the first is an error: the first sets the large size."""
    if not augmentations:
        raise ConfigError("augmentations: needs at least one crop group")
    large = augmentations[0].crop_size
    for i, aug in enumerate(augmentations):
        if aug.crop_size > large:
            raise ConfigError(f"augmentations[{i}].crop_size: {aug.crop_size} is larger than the "
                              f"first group's {large}; list the large crops first")
    return ([a for a in augmentations if a.crop_size == large]
            + [a for a in augmentations if a.crop_size != large])


class MultiCropTransform:
    """Every view of one image: each crop group's recipe applied ``num_crops`` times.

    Returns a list of tensors, group by group, large crops first (as counted by
    ``ExperimentConfig.num_large_crops``), then the small crops.
    """

    def __init__(self, augmentations: Sequence[AugmentationConfig]) -> None:
        groups = order_crop_groups(augmentations)
        self.transforms = [(build_transform(aug), aug.num_crops) for aug in groups]
        self.crop_sizes = [aug.crop_size for aug in groups for _ in range(aug.num_crops)]

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        return [transform(image) for transform, num_crops in self.transforms
                for _ in range(num_crops)]

    def __len__(self) -> int:
        return len(self.crop_sizes)

    def __repr__(self) -> str:
        groups = "\n".join(f"  {n} x {t}" for t, n in self.transforms)
        return f"MultiCropTransform(\n{groups}\n)"


def build_val_transform(crop_size: int, mean: Sequence[float], std: Sequence[float],
                        dataset: str) -> ImageTransform:
    """Deterministic validation transform.

    CIFAR and STL-10 images are resized to ``crop_size`` square (a no-op at their native 32 and
    96 px); ImageNet-like images get the usual resize to 256/224 of the crop, then a center crop.
    """
    # bilinear, as solo-learn's and torchvision's reference evaluations resize
    if dataset in CIFAR_LIKE:
        resize = [v2.Resize((crop_size, crop_size))]
    else:
        resize = [v2.Resize(int(round(crop_size * 256 / 224))), v2.CenterCrop(crop_size)]
    return v2.Compose(resize + _to_normalized_tensor(mean, std))
