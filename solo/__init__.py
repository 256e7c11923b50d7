"""solo: self-supervised visual representation learning on PyTorch Lightning and Hydra.

``solo.Learner`` (byol-pytorch's interface for every method) and ``solo.fit`` (a Learner trained
by a Lightning Trainer) are imported on first use, so ``import solo`` alone (and ``solo.config``)
loads neither torch nor Lightning.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Learner", "fit"]

_LAZY = {"Learner": "solo.learner", "fit": "solo.learner_fit"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'solo' has no attribute '{name}'")
