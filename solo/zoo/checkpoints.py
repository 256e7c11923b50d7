"""Loading a pretrained backbone from our checkpoints, solo-learn's, torchvision/timm weights, or
the official MoCo v1/v2, MoCo v3 and DINO releases.

``load_pretrained(path)`` works out the format, the backbone and its geometry (from the config when
the checkpoint has one, else from the weights), builds the backbone with ``build_backbone`` and
loads its weights strictly: a checkpoint that does not fit fails with the missing, unexpected and
mis-shaped keys, never a partial load. Only a classifier or projection head that the headless
backbone lacks is left out, and older timm layouts are first rewritten by timm's own filters.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from solo.backbones import build_backbone, is_known_backbone, unknown_backbone
from solo.zoo.infer import infer_backbone_name, is_vit_name, vit_geometry
from solo.zoo.layouts import is_state_dict, split_official
from solo.zoo.resnet_layout import has_cifar_stem
from solo.zoo.saved_config import (config_backbone_kwargs, config_backbone_name,
                                   config_cifar_stem, config_image_size, config_method, plain,
                                   read_args_json)
from solo.zoo.timm_layouts import ResampledWeightsError, adapt_timm_layout

SOURCE_FORMATS = ("solo", "solo-learn", "torchvision", "timm", "moco", "mocov3", "dino")
# where Lightning checkpoints keep the backbone: ours and solo-learn's use "backbone.", solo-learn
# before 1.0 used "encoder."
BACKBONE_PREFIXES = ("backbone.", "encoder.")
_SHOWN_KEYS = 12  # how many keys of each kind an error lists


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the backbone; the message says why."""


@dataclass
class Pretrained:
    """A loaded backbone and what its checkpoint said about it."""

    backbone: nn.Module  # built with solo.backbones.build_backbone, weights loaded, in eval mode
    backbone_name: str  # e.g. "resnet18"
    method: str | None  # "byol", ... when the checkpoint says
    cfg: dict | None  # the pretraining config (nested or solo-learn's flat one), when there is one
    state_dict: dict[str, Tensor]  # the checkpoint's whole model state dict (projector, ...)
    source_format: str  # one of SOURCE_FORMATS
    cifar_stem: bool = False  # whether the backbone has the 3x3 stride-1 stem for 32x32 images
    # the builder kwargs it was built with (the config's, and a ViT's geometry read from weights)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckpointContents:
    """What a checkpoint file holds, told apart by its layout."""

    state_dict: dict[str, Tensor]  # the whole model's
    weights: dict[str, Tensor]  # the backbone's, without prefix (a head may still be in)
    source_format: str  # one of SOURCE_FORMATS
    cfg: dict | None = None
    method: str | None = None  # what the layout itself says (MoCo, DINO); else the config's


# ----------------------------------------------------------------------------------------------
# reading files
# ----------------------------------------------------------------------------------------------
def read_checkpoint_file(path: Path, trust_pickle: bool = False) -> Any:
    """The object in ``path``: safetensors, or a torch file loaded with ``weights_only=True``.

    Our Lightning checkpoints hold only plain types and load this way. Older solo-learn ones may
    carry an ``argparse.Namespace`` (allowed explicitly) or other pickled classes (an OmegaConf
    config, paths); those need a full unpickle, which runs code from the file. That happens only
    with ``trust_pickle`` (a local file the user named), never for downloads.
    """
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist or is not a file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:  # ships with timm, but is not our own dependency
            raise CheckpointError(f"reading '{path}' needs safetensors: pip install safetensors"
                                  ) from err
        return load_file(str(path), device="cpu")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_pickle:
            raise CheckpointError(f"'{path}' holds objects other than tensors and plain types, so "
                                  f"it is not loaded (it could run code): {err}") from err
        warnings.warn(f"'{path}' holds pickled Python objects besides the weights; loading it "
                      "with weights_only=False because it is a local file you named", stacklevel=3)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (pickle.UnpicklingError, EOFError, RuntimeError, OSError) as error:  # not torch's
            raise CheckpointError(f"'{path}' is not a readable checkpoint: "
                                  f"{type(error).__name__}: {error}") from None
    except (EOFError, RuntimeError, OSError) as error:  # truncated, or not a torch file at all
        raise CheckpointError(f"'{path}' is not a readable checkpoint: "
                              f"{type(error).__name__}: {error}") from None


def _args_json(path: Path) -> dict | None:
    try:
        return read_args_json(path)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"'{path.parent / 'args.json'}' is not valid JSON: {err}") from err


# ----------------------------------------------------------------------------------------------
# telling the formats apart
# ----------------------------------------------------------------------------------------------
def _strip(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def split_checkpoint(obj: Any, path: Path) -> CheckpointContents:
    """The state dicts, format and config of a checkpoint object read from ``path``."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"'{path}' holds a {type(obj).__name__}, not a checkpoint dict or "
                              "a state dict")
    official = split_official(obj)
    if official is not None:
        return CheckpointContents(official.state_dict, official.weights, official.source_format,
                                  method=official.method)
    state = obj.get("state_dict")
    if is_state_dict(state):
        prefix = next((p for p in BACKBONE_PREFIXES if any(k.startswith(p) for k in state)), None)
        if prefix is not None:  # a Lightning checkpoint of ours or of solo-learn
            hparams = plain(obj.get("hyper_parameters") or {})
            if isinstance(hparams.get("cfg"), dict):  # written by solo.methods.BaseMethod
                return CheckpointContents(dict(state), _strip(state, prefix), "solo",
                                          hparams["cfg"])
            cfg = _args_json(path) or (hparams if hparams else None)
            return CheckpointContents(dict(state), _strip(state, prefix), "solo-learn", cfg)
        plain_state, fmt = dict(state), "timm" if "arch" in obj else None  # timm's train.py
    elif is_state_dict(obj.get("model")):  # torchvision's reference scripts, DeiT-style exports
        plain_state = dict(obj["model"])
        fmt = "torchvision" if any(k.startswith("layer1.") for k in plain_state) else "timm"
    elif is_state_dict(obj):
        plain_state, fmt = dict(obj), "timm" if path.suffix == ".safetensors" else None
    else:
        raise CheckpointError(
            f"'{path}' is not a checkpoint this loader knows: expected a Lightning checkpoint "
            f"('state_dict' with keys under {' or '.join(BACKBONE_PREFIXES)}), an official MoCo "
            "or DINO checkpoint, or a plain state dict; its top-level keys are "
            f"{sorted(map(str, obj))[:_SHOWN_KEYS]}")
    if all(k.startswith("module.") for k in plain_state):  # saved from a DistributedDataParallel
        plain_state = _strip(plain_state, "module.")
    # torchvision's and timm's ResNets share one key layout; headless weights are timm's
    # num_classes=0 layout, weights with an fc head are reported as torchvision's
    fmt = fmt or ("torchvision" if any(k.startswith("fc.") for k in plain_state) else "timm")
    return CheckpointContents(plain_state, plain_state, fmt)


# ----------------------------------------------------------------------------------------------
# strict loading
# ----------------------------------------------------------------------------------------------
def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_KEYS])
    more = f", ... and {len(items) - _SHOWN_KEYS} more" if len(items) > _SHOWN_KEYS else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def misfit(expected: Mapping[str, Tensor], weights: Mapping[str, Tensor]) -> str | None:
    """The missing, unexpected and mis-shaped keys of ``weights`` against ``expected``, or None
    when they fit exactly."""
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    mismatched = [f"{k} (checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)})"
                  for k, v in weights.items() if k in expected and v.shape != expected[k].shape]
    if not (missing or unexpected or mismatched):
        return None
    message = ""
    if missing:
        message += _listing("missing keys", missing)
    if unexpected:
        message += _listing("unexpected keys", unexpected)
    if mismatched:
        message += _listing("shape mismatches", mismatched)
    return message


def load_weights_strictly(model: nn.Module, weights: Mapping[str, Tensor], what: str) -> None:
    """Load ``weights`` into ``model`` or fail listing missing/unexpected/mis-shaped keys."""
    problems = misfit(model.state_dict(), weights)
    if problems:
        raise CheckpointError(f"{what} does not fit:{problems}")
    model.load_state_dict(weights, strict=True)


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Where a checkpoint of ``model``'s architecture keeps its classifier: timm's pretrained
    config says (``head``, ``head.fc``, ``fc``); ``fc.`` and ``head.`` otherwise (also where
    MoCo keeps its projection and DINO its head)."""
    config = getattr(model, "pretrained_cfg", None) or {}
    named = config.get("classifier")
    names = [named] if isinstance(named, str) else list(named or [])
    return tuple(f"{name}." for name in names) + ("fc.", "head.")


def fit_to_model(model: nn.Module, weights: Mapping[str, Tensor], what: str) -> dict[str, Tensor]:
    """``weights`` in ``model``'s layout (older timm layouts rewritten), without the classifier
    or projection head keys that the headless ``model`` does not have."""
    try:
        weights = adapt_timm_layout(model, weights)
    except ResampledWeightsError as err:
        raise CheckpointError(f"{what} does not fit: {err}") from None
    expected = model.state_dict()
    heads = classifier_prefixes(model)
    return {k: v for k, v in weights.items() if k in expected or not k.startswith(heads)}


def load_pretrained(path: str | os.PathLike, backbone: str | None = None,
                    cifar_stem: bool | None = None, *,
                    backbone_kwargs: Mapping[str, Any] | None = None,
                    trust_pickle: bool = True) -> Pretrained:
    """Load the backbone of a checkpoint in any of ``SOURCE_FORMATS``, ready for inference.

    ``backbone``, ``cifar_stem`` and ``backbone_kwargs`` (added to the config's
    ``backbone.kwargs``) override what the checkpoint's config says; without a config the
    weights tell the backbone, a ResNet's stem (a 3x3 ``conv1`` is the CIFAR stem) and a ViT's
    patch and image size. A ViT's head count is not in its weights: MoCo v3's (12 heads for
    ViT-S) comes from its checkpoint layout or a config's method, else timm's count is used
    (pass ``backbone_kwargs={"num_heads": ...}``). ``trust_pickle`` allows a full unpickle for
    checkpoints that need one (see ``read_checkpoint_file``); pass False for untrusted files.
    """
    path = Path(path)
    contents = split_checkpoint(read_checkpoint_file(path, trust_pickle=trust_pickle), path)
    cfg, weights, source_format = contents.cfg, contents.weights, contents.source_format
    if not weights:
        raise CheckpointError(f"'{path}' has no backbone weights")
    kwargs = {**(config_backbone_kwargs(cfg) if cfg else {}), **(backbone_kwargs or {})}
    try:
        name = backbone or (cfg and config_backbone_name(cfg)) or infer_backbone_name(weights)
        if cifar_stem is None and cfg:
            cifar_stem = config_cifar_stem(cfg)
        if cifar_stem is None:  # only ResNets have a stem to tell; the others ignore it
            cifar_stem = has_cifar_stem(weights) if "conv1.weight" in weights else False
    except ValueError as err:
        raise CheckpointError(f"'{path}': {err}") from err
    if not is_known_backbone(name):
        raise CheckpointError(f"'{path}': {unknown_backbone(name)}")
    geometry = vit_geometry(weights) if is_vit_name(name) else None
    if geometry:  # what the config does not say (solo-learn's default is timm's 224 px)
        kwargs = {**geometry, **kwargs}
    method = contents.method or (config_method(cfg) if cfg else None)
    image_size = config_image_size(cfg) if source_format == "solo" else None
    try:
        model = build_backbone(name, small_images=cifar_stem, image_size=image_size,
                               method=method, **kwargs)
    except (TypeError, ValueError, RuntimeError, AssertionError) as err:
        raise CheckpointError(f"'{path}': cannot build {name} with kwargs {kwargs}: {err}") from err
    what = f"'{path}' ({source_format} format) for {name}"
    if name.startswith("resnet"):
        what += f" with the {'CIFAR' if cifar_stem else 'ImageNet'} stem"
    load_weights_strictly(model, fit_to_model(model, weights, what), what)
    built = model.state_dict()  # only a ResNet has the stem; other builders ignore small_images
    has_stem = "layer1.0.conv1.weight" in built and has_cifar_stem(built)
    return Pretrained(backbone=model.eval(), backbone_name=name, method=method, cfg=cfg,
                      state_dict=contents.state_dict, source_format=source_format,
                      cifar_stem=has_stem, backbone_kwargs=kwargs)


def load_backbone_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load the backbone weights of checkpoint ``path`` (any of ``SOURCE_FORMATS``) into
    ``model`` strictly, leaving out a classifier head the headless model does not have."""
    path = Path(os.path.expanduser(str(path)))
    contents = split_checkpoint(read_checkpoint_file(path, trust_pickle=True), path)
    what = f"'{path}' ({contents.source_format} format) for {type(model).__name__}"
    load_weights_strictly(model, fit_to_model(model, contents.weights, what), what)
