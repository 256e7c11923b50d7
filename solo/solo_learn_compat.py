"""What solo-learn's files hold that our schema spells differently, read with solo-learn's meaning.

Two kinds of input, read two ways:

- a user's experiment YAML (strict: every key is honoured or rejected with a reason).
  ``user_layout`` turns solo-learn's older layouts into today's: crop groups and wandb settings
  in separate files named by ``augmentations_cfg`` / ``wandb_cfg``, crop groups under
  ``data.augmentations``, augmentation group files wrapped in ``data: augmentations:``, and the
  older names of keys that moved (ignored, as solo-learn does, beside the new ones; rejected,
  naming the new key, alone);
- the config a run wrote (lenient: ``args.json`` of solo-learn, or of an earlier solo).
  ``prune_saved`` drops the keys solo-learn writes that a config has no use for (its wandb run
  id, the crop counts it derives) and every other unknown key, reporting those in one warning,
  so the checkpoint beside it stays usable.
"""

from __future__ import annotations

import dataclasses
import os
import typing
import warnings
from typing import Any, Mapping, Optional

from solo.utils.schema import ConfigError

# what solo-learn's main_pretrain writes into args.json beyond the experiment's own keys
SOLO_LEARN_WRITTEN = frozenset({"wandb_run_id", "data.num_large_crops", "data.num_small_crops",
                                "checkpoint.save_last"})
# method_kwargs names of solo-learn releases before its momentum section
MOVED_METHOD_KWARGS = {"base_tau_momentum": "momentum.base_tau",
                       "final_tau_momentum": "momentum.final_tau",
                       # its ressl.yaml still writes an empty one
                       "momentum_classifier": "momentum.classifier"}


# ----------------------------------------------------------------------------------------------
# a user's YAML
# ----------------------------------------------------------------------------------------------
def _crop_groups(value: Any, key: str) -> list:
    """A crop-group list from any of the shapes solo-learn's files give it."""
    if isinstance(value, Mapping) and isinstance(value.get("data"), Mapping):
        value = value["data"].get("augmentations")
    elif isinstance(value, Mapping) and "augmentations" in value:
        value = value["augmentations"]
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of crop groups (or a file holding "
                          f"'augmentations:' or 'data: augmentations:'), got {type(value).__name__}")
    return value


def _load_yaml_file(key: str, path: Any) -> Any:
    from omegaconf import OmegaConf

    if not isinstance(path, str):
        raise ConfigError(f"{key}: expected the path of a YAML file, got {path!r}")
    if not os.path.isfile(path):
        raise ConfigError(f"{key}: '{path}' does not exist (solo-learn's older configs read this "
                          "file relative to the folder the command runs in); run from the folder "
                          "that holds it, or write its contents into the config")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def user_layout(raw: dict) -> dict:
    """``raw`` (a user's experiment config) with solo-learn's older layouts made today's."""
    raw = dict(raw)
    data = raw.get("data")
    if isinstance(data, Mapping) and "augmentations" in data:
        if "augmentations" in raw or "augmentations_cfg" in raw:
            raise ConfigError("data.augmentations: the crop groups are given twice (also as "
                              "augmentations or augmentations_cfg); keep one")
        data = dict(data)
        raw["augmentations"] = _crop_groups(data.pop("augmentations"), "data.augmentations")
        raw["data"] = data
    # solo-learn's releases with the augmentations key read it and leave the older *_cfg files
    # unread; some of its YAMLs (imagenet-100/simsiam.yaml) still carry both
    _ignore_beside(raw, "augmentations_cfg", "augmentations", "the crop groups")
    _ignore_beside(raw, "wandb_cfg", "wandb", "the wandb settings")
    if "augmentations_cfg" in raw:
        path = raw.pop("augmentations_cfg")
        raw["augmentations"] = _crop_groups(_load_yaml_file("augmentations_cfg", path),
                                            f"augmentations_cfg ('{path}')")
    elif "augmentations" in raw and not isinstance(raw["augmentations"], list):
        # a group file wrapped in 'data: augmentations:', pulled in by Hydra's defaults list
        raw["augmentations"] = _crop_groups(raw["augmentations"], "augmentations")
    if "wandb_cfg" in raw:
        loaded = _load_yaml_file("wandb_cfg", raw.pop("wandb_cfg"))
        settings = loaded.get("wandb", loaded) if isinstance(loaded, Mapping) else None
        if not isinstance(settings, Mapping):
            raise ConfigError("wandb_cfg: the file must hold the wandb settings (enabled, "
                              "entity, project, ...)")
        raw["wandb"] = {**settings, **(raw.get("wandb") or {})}  # the config's own keys win
    kwargs = raw.get("method_kwargs")
    if isinstance(kwargs, Mapping) and any(old in kwargs for old in MOVED_METHOD_KWARGS):
        raw["method_kwargs"] = _without_moved_kwargs(dict(kwargs), raw.get("momentum"))
    return raw


def _ignore_beside(raw: dict, old: str, new: str, what: str) -> None:
    """Drop the older key ``old`` when ``new`` is there too, as solo-learn does, with a warning."""
    if old in raw and new in raw:
        warnings.warn(f"{old} ({raw.pop(old)!r}) is ignored, as solo-learn ignores it: {new} "
                      f"gives {what}", stacklevel=4)


def _without_moved_kwargs(kwargs: dict, momentum: Any) -> dict:
    """Older solo-learn YAMLs set the momentum schedule (or probe) in method_kwargs as well as in the
    momentum section; solo-learn reads only the section, so with one those keys are ignored
    (said in a warning). Without it they are rejected: the new key is the one to set."""
    for old, new in MOVED_METHOD_KWARGS.items():
        if old not in kwargs:
            continue
        value = kwargs.pop(old)
        if not isinstance(momentum, Mapping):
            raise ConfigError(f"method_kwargs.{old}: an older solo-learn name of {new}; set "
                              f"{new} instead")
        what = "the momentum probe" if new == "momentum.classifier" else "the momentum schedule"
        warnings.warn(f"method_kwargs.{old} ({value}) is ignored, as solo-learn ignores it: {new} "
                      f"sets {what}", stacklevel=4)
    return kwargs


# ----------------------------------------------------------------------------------------------
# a saved config
# ----------------------------------------------------------------------------------------------
def _schema_of(tp: Any) -> tuple[Optional[type], bool]:
    """(the dataclass a value of type ``tp`` is built as, whether it is a list of them)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is list and args and dataclasses.is_dataclass(args[0]):
        return args[0], True
    if dataclasses.is_dataclass(tp):
        return tp, False
    if args and dataclasses.is_dataclass(args[0]) and typing.get_origin(tp) is not list:
        return args[0], False  # Optional[Section]
    return None, False


def _prune(raw: Mapping[str, Any], schema: type, prefix: str, extra: frozenset[str],
           dropped: list[str]) -> dict:
    hints = typing.get_type_hints(schema)
    fields = {f.name for f in dataclasses.fields(schema)}
    kept = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields and key not in extra:
            dropped.append(dotted)
            continue
        inner, is_list = _schema_of(hints.get(key)) if key in fields else (None, False)
        if inner is not None and is_list and isinstance(value, list):
            value = [_prune(v, inner, f"{dotted}[{i}].", frozenset(), dropped)
                     if isinstance(v, Mapping) else v for i, v in enumerate(value)]
        elif inner is not None and isinstance(value, Mapping):
            value = _prune(value, inner, f"{dotted}.", frozenset(), dropped)
        kept[key] = value
    return kept


def prune_saved(raw: Mapping[str, Any], schema: type, method_config: Optional[type],
                allowed_top_level: frozenset[str], source: str) -> dict:
    """``raw`` without the keys ``schema`` (and the method's ``method_config``) does not know.

    Keys solo-learn writes (SOLO_LEARN_WRITTEN) go silently; any other is reported in one
    warning naming ``source``. ``allowed_top_level`` are further top-level keys to keep (the
    Lightning Trainer's).
    """
    dropped: list[str] = []
    pruned = _prune(raw, schema, "", allowed_top_level, dropped)
    kwargs = pruned.get("method_kwargs")
    if method_config is not None and isinstance(kwargs, Mapping):
        pruned["method_kwargs"] = _prune(kwargs, method_config, "method_kwargs.", frozenset(),
                                         dropped)
    unknown = [key for key in dropped if key not in SOLO_LEARN_WRITTEN]
    if unknown:
        warnings.warn(f"{source}: ignored {len(unknown)} key(s) that solo does not know: "
                      f"{', '.join(unknown)}", stacklevel=3)
    return pruned
