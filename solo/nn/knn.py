"""Weighted k-nearest-neighbour classifier (Wu et al., arXiv:1805.01978) for online evaluation.

As in solo-learn: with the cosine distance a neighbour votes with weight exp(sim / T); with the
euclidean distance with weight 1 / (d + 1e-5), and the temperature plays no part.

Features and similarities are kept in float32 whatever the training precision: fp16 features and
exp(sim / T) in fp16 overflow (1 / 0.07 > 14, e^14 is close to fp16's maximum), which drives the
votes to inf/nan and the accuracy to chance.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

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


@torch.no_grad()
def nearest_neighbours(queries: Tensor, blocks: Iterable[tuple[Tensor, Tensor]], k: int,
                       distance: str, chunk_size: int) -> tuple[Tensor, Tensor]:
    """The (Q, k) similarities, best first, and labels of each query's k nearest bank rows.

    The bank comes as ``blocks`` of (features, labels), each moved to the queries' device in turn
    (a bank kept on the host is streamed); each block is compared with ``chunk_size`` queries at a
    time and merged into a running top-k, so the largest similarity matrix is chunk_size x block
    rows. Columns that no bank row filled (fewer than k rows) hold -inf and label 0: they get
    weight 0 in ``vote``.
    """
    device = queries.device
    best = torch.full((len(queries), k), float("-inf"), device=device)  # (Q, k)
    best_targets = torch.zeros(len(queries), k, dtype=torch.long, device=device)
    for features, targets in blocks:
        if len(features) == 0:
            continue
        bank = prepare_bank(features.to(device, non_blocking=True), distance)  # (b, F)
        targets = targets.to(device, non_blocking=True)
        for start in range(0, len(queries), chunk_size):
            rows = slice(start, start + chunk_size)
            sim, idx = similarity(queries[rows], bank, distance).topk(min(k, len(bank)), dim=1)
            merged = torch.cat([best[rows], sim], dim=1)  # (q, k + min(k, b))
            merged_targets = torch.cat([best_targets[rows], targets[idx]], dim=1)
            best[rows], order = merged.topk(k, dim=1)
            best_targets[rows] = merged_targets.gather(1, order)
    return best, best_targets


class WeightedKNN:
    """Accumulates a labelled feature bank and query features, then votes.

    Each of the k nearest bank entries votes for its class (``neighbour_weights``). Bank rows
    without a label (target -1: STL-10's unlabelled images) have no class to vote for and are
    left out.

    Memory: similarities are computed ``chunk_size`` queries at a time. With
    ``max_bank_on_device`` set, the bank's rows move to the host (pinned when CUDA is there) in
    blocks of about that many rows as they accumulate, and are streamed back one block at a time
    by ``compute``: the device then holds at most ~2 blocks of the bank and chunk_size x block
    similarities. ``bank_dtype`` is how bank rows are stored (float16 halves the bank); votes are
    computed in float32 all the same.
    """

    def __init__(self, k: int = 20, temperature: float = 0.07, distance: str = "cosine",
                 chunk_size: int = 512, max_bank_on_device: Optional[int] = None,
                 bank_dtype: torch.dtype = torch.float32) -> None:
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got '{distance}'")
        self.k, self.temperature, self.distance, self.chunk_size = k, temperature, distance, chunk_size
        self.max_bank_on_device, self.bank_dtype = max_bank_on_device, bank_dtype
        self.reset()

    def reset(self, bank: bool = True) -> None:
        """Forget the queries, and the bank too unless ``bank`` is False."""
        if bank:
            self._bank: list[Tensor] = []  # rows not yet moved to the host
            self._bank_targets: list[Tensor] = []
            self._host_blocks: list[tuple[Tensor, Tensor]] = []  # (features, targets) on the host
        self._queries: list[Tensor] = []
        self._query_targets: list[Tensor] = []

    # copies: with CUDA graphs (compile_mode reduce-overhead) a step's outputs are overwritten by
    # the next replay, so features kept across batches must not alias them
    def add_bank(self, features: Tensor, targets: Tensor) -> None:
        self._bank.append(features.detach().to(self.bank_dtype, copy=True))
        self._bank_targets.append(targets.detach().clone())
        on_device = sum(len(x) for x in self._bank)  # shapes only: no sync
        if self.max_bank_on_device is not None and on_device >= self.max_bank_on_device:
            self._move_to_host()

    def _move_to_host(self) -> None:
        # one copy (and one sync) per block of max_bank_on_device rows, not one per batch
        pin = torch.cuda.is_available()
        features, targets = torch.cat(self._bank), torch.cat(self._bank_targets)
        self._host_blocks.append((features.to("cpu").pin_memory() if pin else features.to("cpu"),
                                  targets.to("cpu")))
        self._bank, self._bank_targets = [], []

    def add_queries(self, features: Tensor, targets: Tensor) -> None:
        self._queries.append(features.detach().to(torch.float32, copy=True))
        self._query_targets.append(targets.detach().clone())

    @property
    def ready(self) -> bool:
        return bool(self._bank or self._host_blocks) and bool(self._queries)

    @property
    def bank_size(self) -> int:
        """Rows in this process's bank, labelled or not."""
        return sum(len(x) for x in self._bank) + sum(len(f) for f, _ in self._host_blocks)

    def bank_blocks(self) -> list[tuple[Tensor, Tensor]]:
        """This process's bank as (features, targets) blocks, the host ones first; the rows
        still on the device form one block."""
        blocks = list(self._host_blocks)
        if self._bank:
            blocks.append((torch.cat(self._bank), torch.cat(self._bank_targets)))
        return blocks

    @torch.no_grad()
    def predict(self, queries: Tensor, bank: Tensor, bank_targets: Tensor,
                num_classes: int) -> Tensor:
        """Class scores (Q, num_classes) of each query against one bank (all rows labelled)."""
        sim, neighbour_targets = nearest_neighbours(queries, [(bank, bank_targets)],
                                                    min(self.k, len(bank)), self.distance,
                                                    self.chunk_size)
        return vote(sim, neighbour_targets, num_classes, self.distance, self.temperature)

    @torch.no_grad()
    def compute(self, num_classes: int | None = None,
                gather: Callable[[Tensor, float], Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """acc@1 and acc@5 of the accumulated queries against the accumulated bank.

        ``gather(x, fill)`` (``gather_padded``) makes it cross-process without moving the bank:
        the queries of every process are gathered (padded with ``fill`` rows, target -1, which
        are not scored), each process finds their k nearest rows in its own bank, and those
        (Q, k) candidates are gathered and merged. Every process then reports the accuracy of all
        queries against the whole bank: what one process holding everything would report.
        """
        queries, targets = torch.cat(self._queries), torch.cat(self._query_targets)
        if gather is not None:
            queries, targets = gather(queries, 0.0), gather(targets, -1)
        counts = [0, -1]  # labelled rows, largest label

        def labelled_blocks() -> Iterator[tuple[Tensor, Tensor]]:
            # one block at a time, so a host bank is never copied whole
            for features, bank_targets in self.bank_blocks():
                keep = bank_targets >= 0  # indexing syncs with the host: once per block
                counts[0] += int(keep.sum())
                counts[1] = max(counts[1], int(bank_targets.max()))
                yield features[keep], bank_targets[keep]

        sim, neighbour_targets = nearest_neighbours(queries, labelled_blocks(), self.k,
                                                    self.distance, self.chunk_size)
        counts = torch.tensor(counts, device=queries.device)
        if gather is not None:
            counts = gather(counts.unsqueeze(0), 0).view(-1, 2)
            sim, neighbour_targets = (merge_candidates(gather(sim, float("-inf")), len(queries)),
                                      merge_candidates(gather(neighbour_targets, 0), len(queries)))
            sim, order = sim.topk(self.k, dim=1)
            neighbour_targets = neighbour_targets.gather(1, order)
        counts = counts.view(-1, 2)
        if int(counts[:, 0].sum()) == 0:
            raise ValueError("the kNN bank has no labelled images (all targets are -1); turn kNN "
                             "off with knn_eval.enabled: False")
        num_classes = num_classes or max(int(counts[:, 1].max()), int(targets.max())) + 1
        scored = targets >= 0  # the padding of gathered queries is not scored
        scores = vote(sim[scored], neighbour_targets[scored], num_classes, self.distance,
                      self.temperature)
        top = scores.topk(min(5, num_classes), dim=1).indices
        hits = top.eq(targets[scored].unsqueeze(1))
        return hits[:, :1].any(dim=1).float().mean(), hits.any(dim=1).float().mean()


def merge_candidates(gathered: Tensor, num_queries: int) -> Tensor:
    """(world * Q, k) candidates gathered from every process, as (Q, world * k): each query's
    candidates side by side."""
    world = len(gathered) // num_queries
    return gathered.view(world, num_queries, -1).permute(1, 0, 2).reshape(num_queries, -1)
