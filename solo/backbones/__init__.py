"""Backbone registry: builders returning a headless module with ``.num_features``."""

# each import registers its builders
from solo.backbones import resnet, timm_models, vit, wide_resnet  # noqa: F401
from solo.backbones.features import feature_width, is_convolutional
from solo.backbones.registry import (BACKBONES, BackboneContext, build_backbone,
                                     is_known_backbone, timm_name, unknown_backbone)

__all__ = ["BACKBONES", "BackboneContext", "build_backbone", "feature_width", "is_convolutional",
           "is_known_backbone", "timm_name", "unknown_backbone"]
