"""DINO's projection head (arXiv:2104.14294, section 3.1 and its official code): an MLP to a
bottleneck, L2 normalization, then a weight-normalized linear layer to the prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo.nn.heads import mlp


class WeightNormLinear(nn.Module):
    """A bias-free Linear whose weight is ``weight_g * weight_v / ||weight_v||`` row by row.

    The parameters are those of torch's ``nn.utils.weight_norm`` (dim 0): ``weight_g`` (out, 1)
    and ``weight_v`` (out, in), so solo-learn's and DINO's checkpoint keys
    (``head.last_layer.weight_g``, ``.weight_v``) load unchanged, without the deprecated helper.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        # v starts as a default nn.Linear weight and g at 1: DINO builds the layer, wraps it in
        # weight_norm, then fills g with 1
        self.weight_v = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach().clone())
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))

    @property
    def weight(self) -> Tensor:
        """The effective (out, in) weight: each row of v rescaled to norm g."""
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """``mlp`` (num_layers Linear layers, GELU, optional BN) to ``bottleneck_dim``, L2
    normalization, then ``last_layer`` to ``num_prototypes`` logits.

    The MLP's Linears start from a truncated normal (std 0.02) with zero biases, as DINO's
    ``_init_weights``; ``norm_last_layer`` freezes ``weight_g`` at 1, so every prototype keeps unit
    norm and the logits are cosine similarities. Module names are solo-learn's and DINO's
    (``mlp.0``, ``mlp.3``, ..., ``last_layer``).
    """

    def __init__(self, in_dim: int, num_prototypes: int, use_bn: bool = False,
                 norm_last_layer: bool = True, num_layers: int = 3, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256) -> None:
        super().__init__()
        self.mlp = mlp(in_dim, hidden_dim, bottleneck_dim, num_layers=num_layers,
                       batch_norm=use_bn, activation=nn.GELU)
        for layer in self.mlp.modules():
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02, a=-2.0, b=2.0)  # DINO's bounds
                nn.init.zeros_(layer.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, num_prototypes)
        self.last_layer.weight_g.requires_grad = not norm_last_layer

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.mlp(x), dim=-1)  # (B, bottleneck_dim), unit rows
        return self.last_layer(x)  # (B, num_prototypes)
