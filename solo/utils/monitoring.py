"""Values logged to watch a run's representations, computed without gradient."""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from solo.utils.distributed import rank


@torch.no_grad()
def normalized_std(z: Tensor) -> Tensor:
    """The mean per-dimension std of the L2-normalized rows of z (B, D): 0 when the embeddings
    collapse to one point, about 1/sqrt(D) when they spread over the sphere (SimSiam, figure 2;
    solo-learn logs it as ``z_std``)."""
    return F.normalize(z.detach().float(), dim=-1).std(dim=0).mean()


RANKME_EPSILON = 1e-7  # RankMe (arXiv:2210.02885, eq. 1): added to each p_k, so log(0) never occurs
# Collapse thresholds. A complete collapse gives RankMe ~1 and std 0; a randomly initialized
# ResNet-18 on CIFAR-10 gives RankMe ~22 of min(N, D) = 256 and std ~0.08 / sqrt(D), so neither
# fires at initialization.
RANK_COLLAPSE_FRACTION = 0.01  # RankMe below 1% of the largest rank possible, min(N, D)
STD_COLLAPSE_FRACTION = 0.01  # normalized_std below 1% of 1 / sqrt(D), its value on the sphere


@torch.no_grad()
def rankme(z: Tensor, epsilon: float = RANKME_EPSILON) -> Tensor:
    """RankMe (Garrido et al., arXiv:2210.02885) of the rows of z (N, D): exp of the entropy of
    the singular values normalized to sum 1 (each plus ``epsilon``), a smooth rank between ~1
    (every row on one line) and min(N, D). The paper uses N = 25 600 rows; fewer rows bound it by
    N, so compare values computed on the same number of rows."""
    singular = torch.linalg.svdvals(z.detach().float())  # (min(N, D),)
    p = singular / singular.sum() + epsilon
    return torch.exp(-(p * p.log()).sum())


def collapse_message(name: str, rank: float, std: float, rows: int, dim: int) -> str | None:
    """Why the embedding ``name`` (``rows`` x ``dim``) looks collapsed, or None when it does not:
    RankMe below ``RANK_COLLAPSE_FRACTION`` of min(rows, dim), or normalized_std below
    ``STD_COLLAPSE_FRACTION`` of 1 / sqrt(dim)."""
    largest = min(rows, dim)
    if rank < RANK_COLLAPSE_FRACTION * largest:
        return (f"{name}_rankme = {rank:.3g}, below {RANK_COLLAPSE_FRACTION:.0%} of "
                f"min(N, D) = {largest}: the {name} embedding looks collapsed")
    spread = dim ** -0.5
    if std < STD_COLLAPSE_FRACTION * spread:
        return (f"{name}_std = {std:.3g}, below {STD_COLLAPSE_FRACTION:.0%} of 1/sqrt(D) = "
                f"{spread:.3g}: the {name} embedding looks collapsed")
    return None


class CollapseMonitor:
    """The first ``max_rows`` validation embeddings of each kind (backbone features, normalized
    projections), gathered across processes, turned into ``<name>_rankme`` and ``<name>_std``;
    ``check`` warns the first time one looks collapsed, and never again in the run."""

    def __init__(self, max_rows: int = 4096) -> None:
        self.max_rows = max_rows
        self.warned = False
        self.shapes: dict[str, tuple[int, int]] = {}
        self.reset()

    def reset(self) -> None:
        self._rows: dict[str, list[Tensor]] = {}

    def room(self, name: str, world_size: int = 1) -> int:
        """How many more rows of ``name`` this process keeps: each keeps its first
        ceil(max_rows / world_size), so the gathered total stays under max_rows + world_size."""
        kept = sum(len(z) for z in self._rows.get(name, []))
        return -(-self.max_rows // world_size) - kept

    def add(self, name: str, z: Tensor, world_size: int = 1) -> None:
        """Keep (a copy of) the rows of z (B, D) that the cap leaves room for."""
        room = self.room(name, world_size)
        if room > 0:
            self._rows.setdefault(name, []).append(z[:room].detach().to(torch.float32, copy=True))

    @torch.no_grad()
    def compute(self, gather: Callable[[Tensor, float], Tensor] | None = None) -> dict[str, Tensor]:
        """``<name>_rankme`` and ``<name>_std`` of every kind added since ``reset``. ``gather(x,
        fill)`` (``gather_padded``) collects the rows of every process; padded rows (NaN) are
        dropped, so every process computes the same values."""
        metrics = {}
        self.shapes = {}  # (N, D) behind each kind's values
        for name, parts in self._rows.items():
            z = torch.cat(parts)
            if gather is not None:
                z = gather(z, float("nan"))
                z = z[~z.isnan().any(dim=1)]  # one host sync per validation
            self.shapes[name] = (len(z), z.shape[1])
            metrics[f"{name}_rankme"] = rankme(z)
            metrics[f"{name}_std"] = normalized_std(z)
        return metrics

    def check(self, metrics: dict[str, Tensor]) -> str | None:
        """The collapse message of the first collapsed kind in ``compute``'s ``metrics``, warned
        (``CollapseWarning``) once per run; None when nothing (new) is to be said."""
        if self.warned:
            return None
        for name, (rows, dim) in self.shapes.items():
            message = collapse_message(name, float(metrics[f"{name}_rankme"]),
                                       float(metrics[f"{name}_std"]), rows, dim)
            if message is not None:
                self.warned = True
                if rank() == 0:  # every process knows; one prints
                    warnings.warn(message + " (warned once per run)", CollapseWarning,
                                  stacklevel=2)
                return message
        return None


class CollapseWarning(UserWarning):
    """An embedding's RankMe or normalized std says it collapsed."""
