"""Building typed dataclasses from plain mappings, with errors that name the offending key.

The generic half of the config system: ``build(Schema, mapping)`` rejects unknown keys (naming the
closest valid one), missing required keys and values of the wrong type; a dataclass's own
``__post_init__`` checks raise ConfigError, which gets the full dotted key prepended.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from typing import Any, Mapping, Union

from solo.utils.registry import did_you_mean


class ConfigError(ValueError):
    """An invalid experiment config; the message names the offending key."""


def required() -> Any:
    """Marks a dataclass field that the user must set."""
    return field(default=None, metadata={"required": True})


def check(condition: bool, key: str, message: str) -> None:
    """Raise a ConfigError about ``key`` when ``condition`` is false."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def check_positive(section: object, *keys: str) -> None:
    """Every named field of ``section`` must be > 0."""
    for key in keys:
        value = getattr(section, key)
        check(value > 0, key, f"must be > 0, got {value}")


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked (and, for numbers in strings, converted) against type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if _is_optional(tp):
        # YAML 'None' is a string; solo-learn's configs write it for "no value"
        if value is None or value == "None":
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        check(isinstance(value, Mapping), key, f"must be a mapping, got {value!r}")
        return build(tp, value, key)
    if origin is list:
        check(isinstance(value, (list, tuple)), key, f"must be a list, got {value!r}")
        return [convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        check(isinstance(value, Mapping), key, f"must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        check(ok, key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        check(ok, key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        check(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    return value


def build(schema: type, raw: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``schema`` from ``raw``; unknown, missing or bad keys raise ConfigError."""
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    dotted = (prefix + ".") if prefix else ""
    for key in raw:
        if key not in fields:
            raise ConfigError(f"unknown key '{dotted}{key}'{did_you_mean(key, fields)}; valid keys"
                              f"{' in ' + prefix if prefix else ''}: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = convert(raw[name], hints[name], dotted + name)
        elif f.metadata.get("required"):
            raise ConfigError(f"missing required key '{dotted}{name}'")
    try:
        return schema(**values)
    except ConfigError as error:
        raise ConfigError(f"{dotted}{error}") from None
