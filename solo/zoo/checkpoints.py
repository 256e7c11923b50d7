"""Loading a pretrained backbone from our checkpoints, solo-learn's, or torchvision/timm weights.

``load_pretrained(path)`` works out the format, the backbone and its stem (from the config when the
checkpoint has one, else from the weights), builds the backbone with ``build_backbone`` and loads
its weights strictly: a checkpoint that does not fit fails with the missing, unexpected and
mis-shaped keys, never a partial load.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from solo.backbones import BACKBONES, build_backbone
from solo.config import SMALL_IMAGE_DATASETS
from solo.zoo.resnet_layout import has_cifar_stem, infer_resnet_name

SOURCE_FORMATS = ("solo", "solo-learn", "torchvision", "timm")
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


def _plain(value: Any) -> Any:
    """A config as plain dicts: OmegaConf containers and argparse namespaces converted."""
    if isinstance(value, argparse.Namespace):
        return {k: _plain(v) for k, v in vars(value).items()}
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def read_args_json(checkpoint: Path) -> dict | None:
    """The config in ``args.json`` beside a checkpoint (ours wraps it in ``{"cfg": ...}``)."""
    args_path = checkpoint.parent / "args.json"
    if not args_path.is_file():
        return None
    try:
        with open(args_path) as handle:
            args = json.load(handle)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"'{args_path}' is not valid JSON: {err}") from err
    if isinstance(args, dict) and isinstance(args.get("cfg"), dict):
        return args["cfg"]
    return args if isinstance(args, dict) else None


# ----------------------------------------------------------------------------------------------
# what the config says
# ----------------------------------------------------------------------------------------------
def config_backbone_name(cfg: Mapping[str, Any]) -> str | None:
    """``backbone.name`` (nested), or solo-learn's flat ``backbone`` / older ``encoder``."""
    backbone = cfg.get("backbone")
    if isinstance(backbone, Mapping):
        return backbone.get("name")
    if isinstance(backbone, str):
        return backbone
    encoder = cfg.get("encoder")
    return encoder if isinstance(encoder, str) else None


def config_cifar_stem(cfg: Mapping[str, Any]) -> bool | None:
    """``backbone.cifar_stem`` when set, else whether ``data.dataset`` (or flat ``dataset``) is a
    32x32 one; None when the config names neither."""
    backbone = cfg.get("backbone")
    if isinstance(backbone, Mapping) and backbone.get("cifar_stem") is not None:
        return bool(backbone["cifar_stem"])
    data = cfg.get("data")
    dataset = data.get("dataset") if isinstance(data, Mapping) else cfg.get("dataset")
    return None if dataset is None else dataset in SMALL_IMAGE_DATASETS


# ----------------------------------------------------------------------------------------------
# telling the formats apart
# ----------------------------------------------------------------------------------------------
def _strip(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def split_checkpoint(obj: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Tensor], str,
                                                     dict | None]:
    """(whole model state dict, backbone weights without prefix, source format, config)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"'{path}' holds a {type(obj).__name__}, not a checkpoint dict or "
                              "a state dict")
    state = obj.get("state_dict")
    if _is_state_dict(state):
        prefix = next((p for p in BACKBONE_PREFIXES if any(k.startswith(p) for k in state)), None)
        if prefix is not None:  # a Lightning checkpoint of ours or of solo-learn
            hparams = _plain(obj.get("hyper_parameters") or {})
            if isinstance(hparams.get("cfg"), dict):  # written by solo.methods.BaseMethod
                return dict(state), _strip(state, prefix), "solo", hparams["cfg"]
            cfg = read_args_json(path) or (hparams if hparams else None)
            return dict(state), _strip(state, prefix), "solo-learn", cfg
        plain, fmt = dict(state), "timm" if "arch" in obj else None  # timm's train.py saves arch
    elif _is_state_dict(obj.get("model")):  # torchvision's reference training scripts
        plain, fmt = dict(obj["model"]), "torchvision"
    elif _is_state_dict(obj):
        plain, fmt = dict(obj), "timm" if path.suffix == ".safetensors" else None
    else:
        raise CheckpointError(
            f"'{path}' is not a checkpoint this loader knows: expected a Lightning checkpoint "
            f"('state_dict' with keys under {' or '.join(BACKBONE_PREFIXES)}), or a plain "
            f"ResNet state dict; its top-level keys are {sorted(map(str, obj))[:_SHOWN_KEYS]}")
    if all(k.startswith("module.") for k in plain):  # saved from a DistributedDataParallel
        plain = _strip(plain, "module.")
    # torchvision's and timm's ResNets share one key layout; headless weights are timm's
    # num_classes=0 layout, weights with an fc head are reported as torchvision's
    fmt = fmt or ("torchvision" if any(k.startswith("fc.") for k in plain) else "timm")
    return plain, plain, fmt, None


# ----------------------------------------------------------------------------------------------
# strict loading
# ----------------------------------------------------------------------------------------------
def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_KEYS])
    more = f", ... and {len(items) - _SHOWN_KEYS} more" if len(items) > _SHOWN_KEYS else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def load_weights_strictly(model: nn.Module, weights: Mapping[str, Tensor], what: str) -> None:
    """Load ``weights`` into ``model`` or fail listing missing/unexpected/mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    mismatched = [f"{k} (checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)})"
                  for k, v in weights.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or mismatched:
        message = f"{what} does not fit:"
        if missing:
            message += _listing("missing keys", missing)
        if unexpected:
            message += _listing("unexpected keys", unexpected)
        if mismatched:
            message += _listing("shape mismatches", mismatched)
        raise CheckpointError(message)
    model.load_state_dict(weights, strict=True)


def load_pretrained(path: str | os.PathLike, backbone: str | None = None,
                    cifar_stem: bool | None = None, *, trust_pickle: bool = True) -> Pretrained:
    """Load the backbone of a checkpoint in any of ``SOURCE_FORMATS``, ready for inference.

    ``backbone`` and ``cifar_stem`` override what the checkpoint's config (or, without one, its
    weights: a 3x3 ``conv1`` means the CIFAR stem) says. ``trust_pickle`` allows a full unpickle
    for checkpoints that need one (see ``read_checkpoint_file``); pass False for untrusted files.
    """
    path = Path(path)
    state, weights, source_format, cfg = split_checkpoint(
        read_checkpoint_file(path, trust_pickle=trust_pickle), path)
    # a classifier head is not part of a headless backbone: dropped, as documented
    weights = {k: v for k, v in weights.items() if not k.startswith("fc.")}
    if not weights:
        raise CheckpointError(f"'{path}' has no backbone weights")

    try:
        name = backbone or (cfg and config_backbone_name(cfg)) or infer_resnet_name(weights)
        if cifar_stem is None and cfg:
            cifar_stem = config_cifar_stem(cfg)
        if cifar_stem is None:
            cifar_stem = has_cifar_stem(weights)
    except ValueError as err:
        raise CheckpointError(f"'{path}': {err}") from err
    if name not in BACKBONES:
        raise CheckpointError(f"'{path}': {BACKBONES.unknown(name)}")
    kwargs = {}
    if source_format == "solo" and isinstance(cfg.get("backbone"), Mapping):
        kwargs = dict(cfg["backbone"].get("kwargs") or {})  # our own builder's options
    model = build_backbone(name, small_images=cifar_stem, **kwargs)
    stem = "CIFAR" if cifar_stem else "ImageNet"
    load_weights_strictly(model, weights, f"'{path}' ({source_format} format) for {name} with the "
                                          f"{stem} stem")
    method = cfg.get("method") if cfg else None
    return Pretrained(backbone=model.eval(), backbone_name=name,
                      method=method if isinstance(method, str) else None, cfg=cfg,
                      state_dict=state, source_format=source_format, cifar_stem=cifar_stem)


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Where a checkpoint of ``model``'s architecture keeps its classifier: timm's pretrained
    config says (``head``, ``head.fc``, ``fc``); ``fc.`` and ``head.`` otherwise."""
    config = getattr(model, "pretrained_cfg", None) or {}
    named = config.get("classifier")
    names = [named] if isinstance(named, str) else list(named or [])
    return tuple(f"{name}." for name in names) + ("fc.", "head.")


def load_backbone_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load the backbone weights of checkpoint ``path`` (any of ``SOURCE_FORMATS``) into
    ``model`` strictly, leaving out a classifier head the headless model does not have."""
    path = Path(os.path.expanduser(str(path)))
    _, weights, source_format, _ = split_checkpoint(read_checkpoint_file(path, trust_pickle=True),
                                                    path)
    expected = model.state_dict()
    heads = classifier_prefixes(model)
    weights = {k: v for k, v in weights.items() if k in expected or not k.startswith(heads)}
    load_weights_strictly(model, weights, f"'{path}' ({source_format} format) for "
                                          f"{type(model).__name__}")
