"""The backbone registry and its builder."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from solo.utils.registry import Registry

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")


def build_backbone(name: str, small_images: bool = False, **kwargs: Any) -> nn.Module:
    """Build backbone ``name``; ``small_images`` selects a stem for 32x32 inputs where one exists."""
    model = BACKBONES.get(name)(small_images=small_images, **kwargs)
    assert hasattr(model, "num_features"), f"backbone {name} must set num_features"
    return model
