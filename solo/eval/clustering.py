"""k-means on features and the scores of a clustering against the labels: NMI, AMI, ARI, accuracy.

k-means runs in torch on the features' device (k-means++ seeding, Lloyd iterations, the best of
several restarts). NMI and ARI come from torchmetrics; AMI is computed here because torchmetrics'
expected mutual information loops in Python over every cell and count (minutes for CIFAR-10's
test set); accuracy maps clusters to classes with a Hungarian assignment written here, so that
scipy is not needed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.clustering import adjusted_rand_score, normalized_mutual_info_score


# ----------------------------------------------------------------------------------------------
# k-means
# ----------------------------------------------------------------------------------------------
@dataclass
class KMeansResult:
    assignments: Tensor  # (N,) int64 cluster of each point
    centroids: Tensor  # (K, F)
    inertia: float  # sum of squared distances of points to their centroid


def _squared_distances(x: Tensor, centroids: Tensor, chunk_size: int = 8192) -> Tensor:
    """(N, K) squared euclidean distances, computed in row chunks to bound memory."""
    c_norm = centroids.pow(2).sum(1)
    out = [(xc.pow(2).sum(1, keepdim=True) - 2 * xc @ centroids.T + c_norm).clamp_min_(0)
           for xc in x.split(chunk_size)]
    return torch.cat(out)


def _kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Seeds drawn one by one with probability proportional to the squared distance to the
    nearest seed so far (Arthur & Vassilvitskii, 2007)."""
    first = torch.randint(len(x), (1,), generator=generator, device=x.device)
    centroids = x[first]
    closest = _squared_distances(x, centroids).squeeze(1)
    for _ in range(1, k):
        if closest.sum() <= 0:  # fewer distinct points than clusters: any point will do
            pick = torch.randint(len(x), (1,), generator=generator, device=x.device)
        else:
            pick = torch.multinomial(closest, 1, generator=generator)
        centroids = torch.cat([centroids, x[pick]])
        closest = torch.minimum(closest, _squared_distances(x, x[pick]).squeeze(1))
    return centroids


def _lloyd(x: Tensor, centroids: Tensor, max_iters: int, tol: float) -> KMeansResult:
    k = len(centroids)
    # stop when centroids move less than tol times the data's mean variance (scale-free)
    threshold = tol * x.var(dim=0).mean()
    for _ in range(max_iters):
        distances = _squared_distances(x, centroids)
        assignments = distances.argmin(1)
        counts = torch.bincount(assignments, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assignments, x)
        updated = sums / counts.clamp_min(1).unsqueeze(1)
        empty = counts == 0
        if empty.any():  # re-seed empty clusters at the points farthest from their centroid
            farthest = distances.gather(1, assignments.unsqueeze(1)).squeeze(1)
            updated[empty] = x[farthest.topk(int(empty.sum())).indices]
        shift = (updated - centroids).pow(2).sum(1).max()
        centroids = updated
        if shift <= threshold:
            break
    distances = _squared_distances(x, centroids)
    best, assignments = distances.min(1)
    return KMeansResult(assignments, centroids, float(best.sum()))


@torch.no_grad()
def kmeans(features: Tensor, num_clusters: int, num_restarts: int = 5, max_iters: int = 100,
           tol: float = 1e-4, seed: int = 0) -> KMeansResult:
    """k-means of ``features`` (N, F) on their device; the restart with the lowest inertia wins."""
    if features.ndim != 2 or len(features) < num_clusters:
        raise ValueError(f"need (N, F) features with N >= num_clusters={num_clusters}, "
                         f"got shape {tuple(features.shape)}")
    if num_clusters < 1 or num_restarts < 1 or max_iters < 1:
        raise ValueError(f"num_clusters, num_restarts and max_iters must be >= 1, got "
                         f"{num_clusters}, {num_restarts}, {max_iters}")
    x = features.float()
    generator = torch.Generator(device=x.device).manual_seed(seed)
    best: KMeansResult | None = None
    for _ in range(num_restarts):
        result = _lloyd(x, _kmeans_plus_plus(x, num_clusters, generator), max_iters, tol)
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best


# ----------------------------------------------------------------------------------------------
# Hungarian assignment
# ----------------------------------------------------------------------------------------------
def linear_sum_assignment(cost: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a minimum-cost matching of a (R, C) cost matrix, min(R, C) pairs,
    sorted by row (the interface of scipy.optimize.linear_sum_assignment).

    Shortest augmenting paths with row and column potentials (the O(n^3) Hungarian method), one
    row added per round; the inner loop over columns is vectorized with numpy.
    """
    a = np.asarray(cost.cpu() if isinstance(cost, Tensor) else cost, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"cost must be a matrix, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("cost must hold finite values")
    transposed = a.shape[0] > a.shape[1]
    if transposed:
        a = a.T
    n, m = a.shape  # n <= m: every row gets a column
    u, v = np.zeros(n + 1), np.zeros(m + 1)  # potentials; index 0 is a virtual row/column
    match = np.zeros(m + 1, dtype=np.int64)  # match[j]: the row (1-based) holding column j, 0 if free
    way = np.zeros(m + 1, dtype=np.int64)  # previous column on the shortest path
    for row in range(1, n + 1):
        match[0], j0 = row, 0
        min_slack = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            free = ~used
            free[0] = False
            slack = a[i0 - 1] - u[i0] - v[1:]  # reduced costs of row i0, columns 1..m
            cols = np.flatnonzero(free[1:]) + 1
            better = slack[cols - 1] < min_slack[cols]
            min_slack[cols[better]] = slack[cols - 1][better]
            way[cols[better]] = j0
            j1 = cols[np.argmin(min_slack[cols])]
            delta = min_slack[j1]
            u[match[used]] += delta
            v[used] -= delta
            min_slack[cols] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:  # flip the augmenting path
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    cols = np.flatnonzero(match[1:]) + 1
    rows, cols = match[cols] - 1, cols - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return rows[order], cols[order]


# ----------------------------------------------------------------------------------------------
# scores
# ----------------------------------------------------------------------------------------------
def contingency_matrix(preds: Tensor, target: Tensor) -> Tensor:
    """(clusters, classes) counts of points in each cluster with each label, float64 on the CPU;
    labels are renumbered so that only values that occur get a row or column."""
    preds, target = preds.long().cpu(), target.long().cpu()
    if preds.shape != target.shape or preds.ndim != 1:
        raise ValueError(f"need two (N,) label vectors, got {tuple(preds.shape)} and "
                         f"{tuple(target.shape)}")
    _, p = preds.unique(return_inverse=True)
    _, t = target.unique(return_inverse=True)
    rows, cols = int(p.max()) + 1, int(t.max()) + 1
    counts = torch.bincount(p * cols + t, minlength=rows * cols)
    return counts.reshape(rows, cols).double()


def _entropy(counts: Tensor) -> Tensor:
    p = counts[counts > 0] / counts.sum()
    return -(p * p.log()).sum()


def _mutual_info(table: Tensor) -> Tensor:
    n = table.sum()
    a, b = table.sum(1, keepdim=True), table.sum(0, keepdim=True)
    nz = table > 0
    return (table[nz] / n * (table[nz] * n / (a * b).expand_as(table)[nz]).log()).sum()


def expected_mutual_info(table: Tensor, max_elements: int = 1 << 24) -> Tensor:
    """Expected mutual information of two random labelings with the table's row and column sums
    (the hypergeometric model of Vinh, Epps & Bailey, 2010), vectorized over cells and counts."""
    n = table.sum()  # float64 scalar tensor
    a, b = table.sum(1), table.sum(0)  # (R,), (C,)
    if len(a) == 1 or len(b) == 1:
        return torch.zeros((), dtype=torch.float64)
    lg = torch.lgamma
    nij = torch.arange(1, int(min(a.max(), b.max())) + 1, dtype=torch.float64)  # (M,)
    total = torch.zeros((), dtype=torch.float64)
    chunk_rows = max(1, max_elements // (len(b) * len(nij)))  # bounds the (r, C, M) tensors
    for a_rows in a.split(chunk_rows):
        ai = a_rows[:, None, None]  # (r, 1, 1)
        bj = b[None, :, None]  # (1, C, 1)
        k = nij[None, None, :]  # (1, 1, M)
        # nij runs from max(1, ai + bj - n) to min(ai, bj); outside that the probability is 0
        valid = (k >= (ai + bj - n).clamp_min(1)) & (k <= torch.minimum(ai, bj))
        log_prob = (lg(ai + 1) + lg(bj + 1) + lg(n - ai + 1) + lg(n - bj + 1) - lg(n + 1)
                    - lg(k + 1) - lg((ai - k).clamp_min(0) + 1) - lg((bj - k).clamp_min(0) + 1)
                    - lg((n - ai - bj + k).clamp_min(0) + 1))
        term = k / n * (n * k / (ai * bj)).log() * log_prob.exp()
        total = total + torch.where(valid, term, torch.zeros(())).sum()
    return total


def adjusted_mutual_info(preds: Tensor, target: Tensor) -> float:
    """AMI with the arithmetic mean of the two entropies as normalizer (sklearn's default)."""
    table = contingency_matrix(preds, target)
    h_pred, h_true = _entropy(table.sum(1)), _entropy(table.sum(0))
    if table.shape[0] == table.shape[1] == 1 or (h_pred == 0 and h_true == 0):
        return 1.0  # both labelings put everything in one group: identical
    mi, emi = _mutual_info(table), expected_mutual_info(table)
    denominator = (h_pred + h_true) / 2 - emi
    # a tiny denominator means both labelings are nearly constant; keep its sign, avoid 0/0
    eps = torch.finfo(torch.float64).eps
    denominator = denominator.clamp_min(eps) if denominator >= 0 else denominator.clamp_max(-eps)
    return float((mi - emi) / denominator)


def cluster_accuracy(preds: Tensor, target: Tensor) -> float:
    """Fraction of points whose cluster maps to their class under the best one-to-one mapping."""
    table = contingency_matrix(preds, target)
    rows, cols = linear_sum_assignment(-table.numpy())
    return float(table[rows, cols].sum() / table.sum())


@dataclass(frozen=True)
class ClusteringScores:
    nmi: float
    ami: float
    ari: float
    acc: float


def clustering_scores(preds: Tensor, target: Tensor) -> ClusteringScores:
    """NMI (arithmetic normalization), AMI, ARI and Hungarian accuracy of a clustering."""
    preds, target = preds.long().cpu(), target.long().cpu()
    with warnings.catch_warnings():
        # torchmetrics builds its contingency table as a sparse tensor, which makes torch warn
        # once that it skips the sparse invariant checks
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        nmi = float(normalized_mutual_info_score(preds, target, average_method="arithmetic"))
        ari = float(adjusted_rand_score(preds, target))
    if len(preds.unique()) == len(target.unique()) == 1:
        nmi = 1.0  # one group each: identical labelings (torchmetrics divides 0 by 0 here)
    return ClusteringScores(nmi=nmi, ami=adjusted_mutual_info(preds, target), ari=ari,
                            acc=cluster_accuracy(preds, target))
