"""The backbone registry and its builder.

A registered builder takes a ``BackboneContext`` (what the experiment says about the images and
the method) and the user's ``backbone.kwargs``. Names that are not registered are looked up in timm
(``timm/<name>`` or a plain timm name), so any timm model is a backbone.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import nn

from solo.utils.registry import Registry, UnknownNameError

TIMM_PREFIX = "timm/"


@dataclass(frozen=True)
class BackboneContext:
    """What a builder may need besides its kwargs."""

    small_images: bool = False  # 32x32 inputs: ResNets get the 3x3 stride-1 stem
    image_size: Optional[int] = None  # the largest crop: ViT and Swin size their grids to it
    method: Optional[str] = None  # MoCo v3 selects its ViT variant


BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")


def timm_name(name: str) -> Optional[str]:
    """The timm model that ``name`` means, or None: ``timm/<model>`` or a plain timm model name
    that solo does not register itself (solo's own names win, as their layouts are solo-learn's)."""
    import timm

    if name.startswith(TIMM_PREFIX):
        name = name[len(TIMM_PREFIX):]
    elif name in BACKBONES:
        return None
    return name if timm.is_model(name) else None


def is_known_backbone(name: str) -> bool:
    return name in BACKBONES or timm_name(name) is not None


def unknown_backbone(name: str) -> str:
    """The error message for a name that is neither registered nor a timm model."""
    import timm

    wanted = name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else name
    close = difflib.get_close_matches(wanted, timm.list_models(), n=5, cutoff=0.6)
    timm_hint = (f"; the closest timm models: {', '.join(TIMM_PREFIX + c for c in close)}"
                 if close else "; any timm model works as 'timm/<name>' (timm.list_models())")
    return BACKBONES.unknown(name) + timm_hint


def build_backbone(name: str, small_images: bool = False, *, image_size: Optional[int] = None,
                   method: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """Build backbone ``name`` headless, with ``num_features`` set.

    ``small_images`` selects a stem for 32x32 inputs where one exists; ``image_size`` (the largest
    crop) sizes ViT and Swin grids unless ``kwargs`` has ``img_size``; ``method`` picks a
    method's own variant (MoCo v3's ViT).
    """
    context = BackboneContext(small_images=small_images, image_size=image_size, method=method)
    if name in BACKBONES:
        model = BACKBONES.get(name)(context, **kwargs)
    else:
        model_name = timm_name(name)
        if model_name is None:
            raise UnknownNameError(unknown_backbone(name))
        from solo.backbones.timm_models import create_timm

        model = create_timm(model_name, **kwargs)
    assert hasattr(model, "num_features"), f"backbone {name} must set num_features"
    return model
