"""Weighted k-nearest-neighbour classifier (Wu et al., arXiv:1805.01978) for online evaluation.

As in solo-learn: with the cosine distance a neighbour votes with weight exp(sim / T); with the
euclidean distance with weight 1 / (d + 1e-5), and the temperature plays no part.

Features and similarities are kept in float32 whatever the training precision: fp16 features and
exp(sim / T) in fp16 overflow (1 / 0.07 > 14, e^14 is close to fp16's maximum), which drives the
votes to inf/nan and the accuracy to chance.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from solo.config import KNN_DISTANCES as DISTANCES
from solo.utils.precision import full_float32

EUCLIDEAN_EPSILON = 1e-5  # solo-learn's: keeps an exact duplicate's weight finite


def prepare_bank(bank: Tensor, distance: str) -> Tensor:
    """The bank as ``similarity`` takes it: float32, and L2-normalized for the cosine distance
    (once for all queries, not once per chunk of them)."""
    bank = bank.float()
    return F.normalize(bank, dim=1) if distance == "cosine" else bank


def similarity(queries: Tensor, bank: Tensor, distance: str) -> Tensor:
    """(Q, N) cosine similarities, or negative euclidean distances, of queries to the entries of
    a ``prepare_bank``-ed bank: larger is nearer for both, so ``topk`` finds the neighbours."""
    with full_float32(queries.device.type):
        if distance == "cosine":
            return F.normalize(queries.float(), dim=1) @ bank.T
        return -torch.cdist(queries.float(), bank)


def neighbour_weights(sim: Tensor, distance: str, temperature: Optional[float]) -> Tensor:
    """The vote of each of a query's k nearest neighbours, from their (Q, k) ``similarity``,
    sorted best first. Cosine: exp(sim / T), computed as exp((sim - best) / T), which scales a
    query's votes by one constant (the same winner) and cannot overflow. Euclidean:
    1 / (d + 1e-5) with d = -sim; no temperature."""
    if distance == "cosine":
        assert temperature is not None, "cosine votes need a temperature"
        return ((sim - sim[:, :1]) / temperature).exp()
    return 1 / (-sim + EUCLIDEAN_EPSILON)


def vote(sim: Tensor, neighbour_targets: Tensor, num_classes: int, distance: str,
         temperature: Optional[float]) -> Tensor:
    """Class scores (Q, num_classes) from the (Q, k) similarities of each query's k nearest
    neighbours, sorted best first, and their labels."""
    weights = neighbour_weights(sim, distance, temperature)
    votes = torch.zeros(len(sim), num_classes, device=sim.device)
    return votes.scatter_add_(1, neighbour_targets, weights)


class WeightedKNN:
    """Accumulates a labelled feature bank and query features, then votes.

    Each of the k nearest bank entries votes for its class (``neighbour_weights``). Bank rows
    without a label (target -1: STL-10's unlabelled images) have no class to vote for and are
    left out.
    """

    def __init__(self, k: int = 20, temperature: float = 0.07, distance: str = "cosine",
                 chunk_size: int = 512) -> None:
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got '{distance}'")
        self.k, self.temperature, self.distance, self.chunk_size = k, temperature, distance, chunk_size
        self.reset()

    def reset(self) -> None:
        self._bank: list[Tensor] = []
        self._bank_targets: list[Tensor] = []
        self._queries: list[Tensor] = []
        self._query_targets: list[Tensor] = []

    # copies: with CUDA graphs (compile_mode reduce-overhead) a step's outputs are overwritten by
    # the next replay, so features kept across batches must not alias them
    def add_bank(self, features: Tensor, targets: Tensor) -> None:
        self._bank.append(features.detach().to(torch.float32, copy=True))
        self._bank_targets.append(targets.detach().clone())

    def add_queries(self, features: Tensor, targets: Tensor) -> None:
        self._queries.append(features.detach().to(torch.float32, copy=True))
        self._query_targets.append(targets.detach().clone())

    @property
    def ready(self) -> bool:
        return bool(self._bank) and bool(self._queries)

    @torch.no_grad()
    def predict(self, queries: Tensor, bank: Tensor, bank_targets: Tensor,
                num_classes: int) -> Tensor:
        """Class scores (Q, num_classes) of each query."""
        bank = prepare_bank(bank, self.distance)
        k = min(self.k, len(bank))
        scores = []
        for chunk in queries.split(self.chunk_size):
            sim, idx = similarity(chunk, bank, self.distance).topk(k, dim=1)  # (q, k)
            scores.append(vote(sim, bank_targets[idx], num_classes, self.distance,
                               self.temperature))
        return torch.cat(scores)

    @torch.no_grad()
    def compute(self, num_classes: int | None = None,
                gather: Callable[[Tensor, float], Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """acc@1 and acc@5 of the accumulated queries against the accumulated bank.

        ``gather(x, fill)`` collects the bank from every process (``gather_padded``: banks of
        different lengths are padded with ``fill`` rows, target -1, left out of the vote), so
        each one votes with the whole bank and reports on its own share of the queries.
        """
        bank, bank_targets = torch.cat(self._bank), torch.cat(self._bank_targets)
        if gather is not None:
            bank, bank_targets = gather(bank, 0.0), gather(bank_targets, -1)
        labelled = bank_targets >= 0  # indexing syncs with the host: once per validation
        bank, bank_targets = bank[labelled], bank_targets[labelled]
        if len(bank) == 0:
            raise ValueError("the kNN bank has no labelled images (all targets are -1); turn kNN "
                             "off with knn_eval.enabled: False")
        queries, targets = torch.cat(self._queries), torch.cat(self._query_targets)
        num_classes = num_classes or int(max(bank_targets.max(), targets.max())) + 1
        scores = self.predict(queries, bank, bank_targets, num_classes)
        top = scores.topk(min(5, num_classes), dim=1).indices
        hits = top.eq(targets.unsqueeze(1))
        return hits[:, :1].any(dim=1).float().mean(), hits.any(dim=1).float().mean()
