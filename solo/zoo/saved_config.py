"""What a checkpoint's saved config says about its backbone: name, stem, builder kwargs, crop size.

Configs come nested (ours, solo-learn >= 1.0: ``backbone.name``, ``backbone.kwargs``,
``data.dataset``) or flat (older solo-learn: ``backbone`` / ``encoder``, ``dataset``), from the
checkpoint's hyper-parameters or an ``args.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping

from solo.config import SMALL_IMAGE_DATASETS, without_weight_sources


def plain(value: Any) -> Any:
    """A config as plain dicts: OmegaConf containers and argparse namespaces converted."""
    if isinstance(value, argparse.Namespace):
        return {k: plain(v) for k, v in vars(value).items()}
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def read_args_json(checkpoint: Path) -> dict | None:
    """The config in ``args.json`` beside a checkpoint (ours wraps it in ``{"cfg": ...}``).

    Raises ``json.JSONDecodeError`` for a file that is not JSON.
    """
    args_path = checkpoint.parent / "args.json"
    if not args_path.is_file():
        return None
    with open(args_path) as handle:
        args = json.load(handle)
    if isinstance(args, dict) and isinstance(args.get("cfg"), dict):
        return args["cfg"]
    return args if isinstance(args, dict) else None


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


def config_backbone_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``backbone.kwargs`` (ours and solo-learn's both hand them to the builder), without the
    ones that would fetch weights."""
    backbone = without_weight_sources(cfg).get("backbone")
    kwargs = backbone.get("kwargs") if isinstance(backbone, Mapping) else None
    return dict(kwargs) if isinstance(kwargs, Mapping) else {}


def config_method(cfg: Mapping[str, Any]) -> str | None:
    """The pretraining method: ``method``, or a linear run's ``pretrain_method``. It matters for
    loading: MoCo v3's ViT has other heads than timm's, which its weights do not show."""
    for key in ("method", "pretrain_method"):
        if isinstance(cfg.get(key), str):
            return cfg[key]
    return None


def config_image_size(cfg: Mapping[str, Any]) -> int | None:
    """The largest crop of our config's augmentations: what our methods size ViT and Swin grids
    to (solo-learn did not, so this is read for our checkpoints only)."""
    groups = cfg.get("augmentations")
    sizes = [g["crop_size"] for g in groups or [] if isinstance(g, Mapping)
             and isinstance(g.get("crop_size"), int)] if isinstance(groups, list) else []
    return max(sizes) if sizes else None
