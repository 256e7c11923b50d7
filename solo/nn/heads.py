"""The MLP builder shared by every projector and predictor."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
        batch_norm: bool = True, last_batch_norm: bool = False) -> nn.Sequential:
    """Linear(-BN)-ReLU blocks then a final Linear (optionally followed by an affine-free BN).

    ``num_layers`` counts the Linear layers: 2 gives SimCLR/BYOL/MoCo v2 heads. The layout is
    solo-learn's, module for module (every Linear with a bias, even before a BN), so the keys
    of its checkpoints (``projector.0.weight``, ``projector.1.running_mean``, ...) are ours.
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)
