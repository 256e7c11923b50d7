"""Each method's default views as crop groups, for code that builds a config without a YAML.

The values are those of the shipped recipes (scripts/pretrain/cifar and imagenet-100, whose
``augmentations/`` groups cite their papers); tests/test_learner.py checks that the two agree, so
a recipe changed in one place and not the other fails. The YAMLs are not installed with the
package, hence this copy in code.
"""

from __future__ import annotations

import copy
from typing import Any

# at most this many pixels a side, a view gets the CIFAR recipe (BYOL's drops the blur there: a
# blur of sigma up to 2 pixels wipes out most of a 32-pixel image); above it, ImageNet's
SMALL_IMAGE_MAX = 64

BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue (BYOL, table 6)
SIMCLR_CIFAR_JITTER = (0.8, 0.8, 0.8, 0.2)  # SimCLR's colour distortion at strength 1
MOCO_JITTER = (0.4, 0.4, 0.4, 0.1)  # MoCo v2's augmentation (arXiv:2003.04297)
MOCO_V1_JITTER = (0.4, 0.4, 0.4, 0.4)  # MoCo v1's (InstDisc's), applied to every image

# a method without a recipe here gets BYOL's two views: every method in solo takes two large crops
FALLBACK_METHOD = "byol"


def _view(jitter: tuple[float, float, float, float], blur: float, solarize: float = 0.0,
          num_crops: int = 1, min_scale: float = 0.08, jitter_prob: float = 0.8) -> dict[str, Any]:
    """One crop group in config form; every recipe here shares the grayscale and flip."""
    brightness, contrast, saturation, hue = jitter
    return {"rrc": {"enabled": True, "crop_min_scale": min_scale, "crop_max_scale": 1.0},
            "color_jitter": {"prob": jitter_prob, "brightness": brightness, "contrast": contrast,
                             "saturation": saturation, "hue": hue},
            "grayscale": {"prob": 0.2},
            "gaussian_blur": {"prob": blur},
            "solarization": {"prob": solarize},
            "equalization": {"prob": 0.0},
            "horizontal_flip": {"prob": 0.5},
            "num_crops": num_crops}


def _crop_and_flip() -> dict[str, Any]:
    """A weak view: random resized crop and horizontal flip only (ReSSL's teacher view)."""
    return {**_view((0.0, 0.0, 0.0, 0.0), blur=0.0, jitter_prob=0.0), "grayscale": {"prob": 0.0}}


# the ops a view without them switches off with ``enabled: False`` (solo-learn's way)
_OPS_OFF = ("color_jitter", "grayscale", "gaussian_blur", "solarization", "equalization")

# method -> {"small": CIFAR's groups, "large": ImageNet's groups}, without crop_size
RECIPES: dict[str, dict[str, list[dict[str, Any]]]] = {
    # asymmetric: the first view always blurred, the second rarely blurred but sometimes solarized
    "byol": {"small": [_view(BYOL_JITTER, blur=0.0), _view(BYOL_JITTER, blur=0.0, solarize=0.2)],
             "large": [_view(BYOL_JITTER, blur=1.0), _view(BYOL_JITTER, blur=0.1, solarize=0.2)]},
    # solo-learn's ImageNet-100 SimCLR uses BYOL's milder jitter
    "simclr": {"small": [_view(SIMCLR_CIFAR_JITTER, blur=0.5, num_crops=2)],
               "large": [_view(BYOL_JITTER, blur=0.5, num_crops=2)]},
    # official MoCo: the authors' CIFAR-10 demo views (no blur) on CIFAR; v1's "aug" and v2's
    # "aug+" on ImageNet (scripts/pretrain/imagenet)
    "mocov1": {"small": [_view(MOCO_JITTER, blur=0.0, num_crops=2)],
               "large": [_view(MOCO_V1_JITTER, blur=0.0, num_crops=2, min_scale=0.2,
                               jitter_prob=1.0)]},
    "mocov2": {"small": [_view(MOCO_JITTER, blur=0.0, num_crops=2)],
               "large": [_view(MOCO_JITTER, blur=0.5, num_crops=2, min_scale=0.2)]},
    "mocov2plus": {"small": [_view(MOCO_JITTER, blur=0.5, num_crops=2)],
                   "large": [_view(MOCO_JITTER, blur=0.5, num_crops=2)]},
    # solo-learn's MoCo v3 (ResNet and ViT) and NNSiam take BYOL's asymmetric views; its SimSiam
    # takes MoCo v2's symmetric ones on CIFAR and BYOL's on ImageNet-100
    "mocov3": {"small": [_view(BYOL_JITTER, blur=0.0), _view(BYOL_JITTER, blur=0.0, solarize=0.2)],
               "large": [_view(BYOL_JITTER, blur=1.0), _view(BYOL_JITTER, blur=0.1, solarize=0.2)]},
    "simsiam": {"small": [_view(MOCO_JITTER, blur=0.5, num_crops=2)],
                "large": [_view(BYOL_JITTER, blur=1.0), _view(BYOL_JITTER, blur=0.1, solarize=0.2)]},
    "nnsiam": {"small": [_view(BYOL_JITTER, blur=0.0), _view(BYOL_JITTER, blur=0.0, solarize=0.2)],
               "large": [_view(BYOL_JITTER, blur=1.0), _view(BYOL_JITTER, blur=0.1, solarize=0.2)]},
    # solo-learn's NNCLR, NNBYOL, All4One and DINO take BYOL's asymmetric views too
    **{name: {"small": [_view(BYOL_JITTER, blur=0.0), _view(BYOL_JITTER, blur=0.0, solarize=0.2)],
              "large": [_view(BYOL_JITTER, blur=1.0), _view(BYOL_JITTER, blur=0.1, solarize=0.2)]}
       for name in ("nnclr", "nnbyol", "all4one", "dino")},
    # a strong view for the online network, a weak one for the momentum network (also on CIFAR)
    "ressl": {"small": [_view(BYOL_JITTER, blur=0.5), _crop_and_flip()],
              "large": [_view(BYOL_JITTER, blur=0.5), _crop_and_flip()]},
    # MAE: one view, crop and flip only (the masking is the augmentation); solo-learn's
    # reconstruction.yaml files switch the other ops off with ``enabled: False``
    "mae": {"small": [{**_crop_and_flip(), "grayscale": {"prob": 0.0, "enabled": False}}],
            "large": [{**{op: ({**cfg, "enabled": False} if op in _OPS_OFF else cfg)
                          for op, cfg in _crop_and_flip().items()}}]},
    # SimCLR's views at both sizes (solo-learn's imagenet-100 symmetric.yaml keeps strength 1)
    "supcon": {"small": [_view(SIMCLR_CIFAR_JITTER, blur=0.5, num_crops=2)],
               "large": [_view(SIMCLR_CIFAR_JITTER, blur=0.5, num_crops=2)]},
    # solo-learn's SwAV (without multi-crop) takes SimCLR's views at strength 1 at both sizes
    "swav": {"small": [_view(SIMCLR_CIFAR_JITTER, blur=0.5, num_crops=2)],
             "large": [_view(SIMCLR_CIFAR_JITTER, blur=0.5, num_crops=2)]},
    # solo-learn's DeepClusterV2: symmetric.yaml, as SimCLR's (BYOL's milder jitter on ImageNet)
    "deepclusterv2": {"small": [_view(SIMCLR_CIFAR_JITTER, blur=0.5, num_crops=2)],
                      "large": [_view(BYOL_JITTER, blur=0.5, num_crops=2)]},
    # solo-learn's Barlow Twins takes BYOL's asymmetric views
    "barlow_twins": {"small": [_view(BYOL_JITTER, blur=0.0),
                               _view(BYOL_JITTER, blur=0.0, solarize=0.2)],
                     "large": [_view(BYOL_JITTER, blur=1.0),
                               _view(BYOL_JITTER, blur=0.1, solarize=0.2)]},
    # TWIST's 800-epoch recipe ("--aug barlow"): BYOL's asymmetric views
    "twist": {"small": [_view(BYOL_JITTER, blur=0.0), _view(BYOL_JITTER, blur=0.0, solarize=0.2)],
              "large": [_view(BYOL_JITTER, blur=1.0), _view(BYOL_JITTER, blur=0.1, solarize=0.2)]},
    # solo-learn's VICReg and VIbCReg: crops from 20% up, solarization 0.1, blur 0.5 on ImageNet
    "vicreg": {"small": [_view(BYOL_JITTER, blur=0.0, solarize=0.1, num_crops=2, min_scale=0.2)],
               "large": [_view(BYOL_JITTER, blur=0.5, solarize=0.1, num_crops=2, min_scale=0.2)]},
    "vibcreg": {"small": [_view(BYOL_JITTER, blur=0.0, solarize=0.1, num_crops=2, min_scale=0.2)],
                "large": [_view(BYOL_JITTER, blur=0.5, solarize=0.1, num_crops=2, min_scale=0.2)]},
    # solo-learn's W-MSE: SimCLR's jitter, crops from 20% up; on ImageNet six more 96-pixel crops
    # (a fixed crop_size, kept whatever the image size), which its loss leaves out
    "wmse": {"small": [_view(SIMCLR_CIFAR_JITTER, blur=0.0, num_crops=2, min_scale=0.2)],
             "large": [_view(SIMCLR_CIFAR_JITTER, blur=0.2, num_crops=2, min_scale=0.2),
                       {**_view(SIMCLR_CIFAR_JITTER, blur=0.2, num_crops=6, min_scale=0.2),
                        "crop_size": 96}]},
}


def default_augmentations(method: str, image_size: int) -> list[dict[str, Any]]:
    """``method``'s crop groups (config form) with every view ``image_size`` pixels square, but
    for groups whose recipe fixes their own crop_size (multi-crop's small crops)."""
    recipe = RECIPES.get(method, RECIPES[FALLBACK_METHOD])
    groups = recipe["small" if image_size <= SMALL_IMAGE_MAX else "large"]
    return [{"crop_size": image_size, **copy.deepcopy(group)} for group in groups]


def two_views(image_size: int) -> list[dict[str, Any]]:
    """Two single-crop groups of ``image_size``: the shape of the views a user's augment_fn makes
    (their content is the user's; the config only needs their number and size)."""
    return [{"crop_size": image_size, "num_crops": 1}, {"crop_size": image_size, "num_crops": 1}]
