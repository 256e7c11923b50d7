"""Weighted k-nearest-neighbour classifier (Wu et al., arXiv:1805.01978) for online evaluation.

Features and similarities are kept in float32 whatever the training precision: fp16 features and
exp(sim / T) in fp16 overflow (1 / 0.07 > 14, e^14 is close to fp16's maximum), which drives the
votes to inf/nan and the accuracy to chance.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def similarity(queries: Tensor, bank: Tensor, distance: str) -> Tensor:
    """(Q, N) cosine similarities, or negative euclidean distances, of queries to bank entries."""
    if distance == "cosine":
        return F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).T
    return -torch.cdist(queries, bank)


def vote(sim: Tensor, neighbour_targets: Tensor, temperature: float, num_classes: int) -> Tensor:
    """Class scores (Q, num_classes) from the (Q, k) similarities of each query's k nearest
    neighbours, sorted best first, and their labels."""
    weights = ((sim - sim[:, :1]) / temperature).exp()  # best neighbour weighs 1
    votes = torch.zeros(len(sim), num_classes, device=sim.device)
    return votes.scatter_add_(1, neighbour_targets, weights)


class WeightedKNN:
    """Accumulates a labelled feature bank and query features, then votes.

    Each of the k nearest bank entries votes for its class with weight exp(sim / T), where sim is
    the cosine similarity or the negative euclidean distance. Weights are computed relative to the
    best neighbour of each query, which leaves the vote unchanged and cannot overflow.
    """

    def __init__(self, k: int = 20, temperature: float = 0.07, distance: str = "cosine",
                 chunk_size: int = 512) -> None:
        if distance not in ("cosine", "euclidean"):
            raise ValueError(f"distance must be 'cosine' or 'euclidean', got '{distance}'")
        self.k, self.temperature, self.distance, self.chunk_size = k, temperature, distance, chunk_size
        self.reset()

    def reset(self) -> None:
        self._bank: list[Tensor] = []
        self._bank_targets: list[Tensor] = []
        self._queries: list[Tensor] = []
        self._query_targets: list[Tensor] = []

    def add_bank(self, features: Tensor, targets: Tensor) -> None:
        self._bank.append(features.detach().float())
        self._bank_targets.append(targets.detach())

    def add_queries(self, features: Tensor, targets: Tensor) -> None:
        self._queries.append(features.detach().float())
        self._query_targets.append(targets.detach())

    @property
    def ready(self) -> bool:
        return bool(self._bank) and bool(self._queries)

    def _similarity(self, queries: Tensor, bank: Tensor) -> Tensor:
        return similarity(queries, bank, self.distance)

    @torch.no_grad()
    def predict(self, queries: Tensor, bank: Tensor, bank_targets: Tensor,
                num_classes: int) -> Tensor:
        """Class scores (Q, num_classes) of each query."""
        queries, bank = queries.float(), bank.float()
        k = min(self.k, len(bank))
        scores = []
        for chunk in queries.split(self.chunk_size):
            sim, idx = self._similarity(chunk, bank).topk(k, dim=1)  # (q, k)
            scores.append(vote(sim, bank_targets[idx], self.temperature, num_classes))
        return torch.cat(scores)

    @torch.no_grad()
    def compute(self, num_classes: int | None = None,
                gather: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """acc@1 and acc@5 of the accumulated queries against the accumulated bank.

        ``gather`` collects the bank from every process, so each one votes with the whole bank
        and reports on its own share of the queries.
        """
        bank, bank_targets = torch.cat(self._bank), torch.cat(self._bank_targets)
        if gather is not None:
            bank, bank_targets = gather(bank), gather(bank_targets)
        queries, targets = torch.cat(self._queries), torch.cat(self._query_targets)
        num_classes = num_classes or int(max(bank_targets.max(), targets.max())) + 1
        scores = self.predict(queries, bank, bank_targets, num_classes)
        top = scores.topk(min(5, num_classes), dim=1).indices
        hits = top.eq(targets.unsqueeze(1))
        return hits[:, :1].any(dim=1).float().mean(), hits.any(dim=1).float().mean()
