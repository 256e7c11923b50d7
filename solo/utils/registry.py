"""A name -> object registry shared by methods, backbones, datasets and pipelines."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")


def closest_match(name: str, options: Iterable[str]) -> str | None:
    """The option most similar to ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(str(name), list(options), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """' (did you mean "x"?)' when a close option exists, else ''."""
    match = closest_match(name, options)
    return f' (did you mean "{match}"?)' if match else ""


class UnknownNameError(KeyError):
    """A registry lookup of a name that is not registered; prints its message unquoted."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects; ``get`` fails with the valid names and the closest match."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def unknown(self, name: str) -> str:
        """The message for a name that is not registered: closest match and valid names."""
        return (f"unknown {self.kind} '{name}'{did_you_mean(name, self._items)}; "
                f"valid: {', '.join(sorted(self._items))}")

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(self.unknown(name))
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
