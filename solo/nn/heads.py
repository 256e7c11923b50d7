"""The MLP builder shared by every projector and predictor."""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
        batch_norm: bool = True, last_batch_norm: bool = False,
        activation: Callable[[], nn.Module] = partial(nn.ReLU, inplace=True),
        bias: bool = True, last_bias: bool = True) -> nn.Sequential:
    """Linear(-BN)-ReLU blocks then a final Linear (optionally followed by an affine-free BN).

    ``num_layers`` counts the Linear layers: 2 gives SimCLR/BYOL/MoCo v2 heads. The layout is
    solo-learn's, module for module (every Linear with a bias, even before a BN), so the keys
    of its checkpoints (``projector.0.weight``, ``projector.1.running_mean``, ...) are ours.
    ``bias: False`` drops the bias of the hidden Linears, ``last_bias: False`` that of the last
    (solo-learn's SimSiam and MoCo v3 heads, whose checkpoints have no such keys).
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=bias))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(activation())  # ReLU; VIbCReg's GELU (no parameters: same keys)
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=last_bias))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)
