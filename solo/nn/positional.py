"""The sinusoidal position code that All4One (arXiv:2303.15860) adds to its sequences of
neighbours before its transformer, with the buffer layout of solo-learn's
``Summer(PositionalEncodingPermute1D(channels))`` (key ``penc.penc.inv_freq``), so that
solo-learn's All4One checkpoints load whole.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class SinusoidalTable(nn.Module):
    """(length, channels) table: column 2j holds sin(pos * f_j), column 2j+1 cos(pos * f_j), with
    f_j = 10000^(-2j / C) (C = channels rounded up to even) and pos = 0 .. length - 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        even = channels + channels % 2
        self.register_buffer("inv_freq", 10000.0 ** (-torch.arange(0, even, 2).float() / even))
        # solo-learn's module caches its last output in a buffer, which its checkpoints then hold;
        # a cache only (a function of the input's shape), so it is dropped on load
        self._register_load_state_dict_pre_hook(self._drop_cache)

    @staticmethod
    def _drop_cache(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        state_dict.pop(prefix + "cached_penc", None)

    def forward(self, length: int) -> Tensor:
        positions = torch.arange(length, device=self.inv_freq.device, dtype=self.inv_freq.dtype)
        angles = positions[:, None] * self.inv_freq[None, :]  # (length, C / 2)
        table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)  # sin, cos interleaved
        return table[:, : self.channels]


class PositionalEncodingSum(nn.Module):
    """x (B, S, D) plus a code that varies along D, one sinusoid pair per sequence slot s < S:
    out[b, s, d] = x[b, s, d] + table[d, s] (solo-learn's "permuted" 1D encoding, whose
    positions run over the feature dimension and whose channels are the S slots)."""

    def __init__(self, slots: int) -> None:
        super().__init__()
        self.slots = slots
        self.penc = nn.Module()  # solo-learn's nesting: Summer.penc (Permute1D).penc (1D)
        self.penc.penc = SinusoidalTable(slots)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.slots:
            raise ValueError(f"expected (B, {self.slots}, D), got {tuple(x.shape)}")
        return x + self.penc.penc(x.shape[2]).T.to(x.dtype)
