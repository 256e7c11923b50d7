"""Checkpoints of timm models in older or official layouts, rewritten by timm's own key filters.

- Swin: timm before 0.9 (the one solo-learn's checkpoints were written with) ends each stage with
  its patch merging (``layers.N.downsample`` for stages 0-2) where timm now starts the next stage
  with it (``layers.N+1.downsample``), and it stored the ``relative_position_index`` and
  ``attn_mask`` buffers that timm now rebuilds. Seen from ``layers.0.downsample.*`` or those
  buffers.
- ConvNeXt: facebookresearch/ConvNeXt's names (``downsample_layers``, ``stages.i.j.dwconv``,
  ``pwconv``, a top-level ``norm``), seen from ``downsample_layers.0.0.weight``.
- PoolFormer: sail-sg/poolformer's (``patch_embed.proj``, ``network.i.j``, ``layer_scale_1``),
  seen from ``network.0.0.mlp.fc1.weight``.

The remapping is timm's (``checkpoint_filter_fn`` of each model file), so it follows timm. Those
filters also resample a patch embedding or a relative position table of another size to fit; the
result would no longer be the checkpoint's network, so here that is refused as a misfit.
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping

from torch import Tensor, nn


class ResampledWeightsError(ValueError):
    """timm's filter had to resize weights: the checkpoint is of another geometry."""


def _old_swin(weights: Mapping[str, Tensor]) -> bool:
    return "layers.0.downsample.reduction.weight" in weights or any(
        k.endswith(("relative_position_index", "attn_mask")) for k in weights)


def _official_convnext(weights: Mapping[str, Tensor]) -> bool:
    return "downsample_layers.0.0.weight" in weights


def _official_poolformer(weights: Mapping[str, Tensor]) -> bool:
    return "network.0.0.mlp.fc1.weight" in weights


def _filters() -> list[tuple[type, Callable, Callable, tuple[str, ...]]]:
    """(model class, layout test, timm's filter, the layout's classifier prefixes)."""
    from timm.models import convnext, metaformer, swin_transformer

    # official ConvNeXt / PoolFormer classifiers (head.weight) become head.fc.*, which headless
    # models lack and the PoolFormer filter looks up in the model: they go before filtering
    return [(swin_transformer.SwinTransformer, _old_swin, swin_transformer.checkpoint_filter_fn,
             ()),
            (convnext.ConvNeXt, _official_convnext, convnext.checkpoint_filter_fn, ("head.",)),
            (metaformer.MetaFormer, _official_poolformer, metaformer.checkpoint_filter_fn,
             ("head.",))]


def _storage(tensor: Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def adapt_timm_layout(model: nn.Module, weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``weights`` in ``model``'s (current timm) layout when they are in an older or official
    one; unchanged otherwise, or when timm's filter cannot map them (strict loading then lists
    what does not fit). Raises ResampledWeightsError where the filter would resize weights."""
    for model_class, in_layout, filter_fn, classifier in _filters():
        if not (isinstance(model, model_class) and in_layout(weights)):
            continue
        source = {k: v for k, v in weights.items() if not (classifier and k.startswith(classifier))}
        try:
            with warnings.catch_warnings():  # from resampling, which is refused below anyway
                warnings.simplefilter("ignore")
                adapted = filter_fn(source, model)
        except (KeyError, AttributeError, RuntimeError, IndexError):
            return dict(weights)
        # renaming and reshaping keep the checkpoint's storage; resampling makes new tensors
        kept = {_storage(v) for v in source.values()}
        expected = model.state_dict()
        resampled = [k for k, v in adapted.items() if k in expected and _storage(v) not in kept]
        if resampled:
            shapes = ", ".join(f"{k} (checkpoint {tuple(source[k].shape) if k in source else '?'}"
                               f", model {tuple(expected[k].shape)})" for k in resampled[:6])
            raise ResampledWeightsError(f"the weights are of another geometry than the model "
                                        f"(timm would resample them): {shapes}")
        return adapted
    return dict(weights)
