"""Backbone registry: builders returning a headless module with ``.num_features``."""

from solo.backbones import resnet  # noqa: F401  (registers resnet18, resnet50)
from solo.backbones.registry import BACKBONES, build_backbone

__all__ = ["BACKBONES", "build_backbone"]
