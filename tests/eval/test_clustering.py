"""k-means, the Hungarian assignment and the clustering scores, against values worked by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.clustering import adjusted_mutual_info_score

from solo.eval.clustering import (
    adjusted_mutual_info,
    cluster_accuracy,
    clustering_scores,
    kmeans,
    linear_sum_assignment,
)


def brute_force_min_cost(cost: np.ndarray) -> float:
    """Minimum total cost over every way of giving each row of the shorter side its own column."""
    if cost.shape[0] > cost.shape[1]:
        cost = cost.T
    rows, cols = cost.shape
    return min(sum(cost[r, c] for r, c in zip(range(rows), perm))
               for perm in itertools.permutations(range(cols), rows))


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 4), (5, 5), (6, 6), (3, 5), (5, 2), (6, 4)])
def test_hungarian_matches_brute_force(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for trial in range(20):
        # integer costs make ties (several optimal matchings) common, real ones make them rare
        cost = rng.integers(-5, 6, size=shape).astype(float) if trial % 2 else rng.normal(size=shape)
        rows, cols = linear_sum_assignment(cost)
        assert len(rows) == min(shape)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert list(rows) == sorted(rows)
        assert cost[rows, cols].sum() == pytest.approx(brute_force_min_cost(cost), abs=1e-9)


def test_hungarian_known_assignment_and_bad_input() -> None:
    cost = np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    rows, cols = linear_sum_assignment(cost)  # 1 + 2 + 2 = 5 is the unique optimum
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match="finite"):
        linear_sum_assignment(np.array([[1.0, np.inf], [0.0, 1.0]]))


# target [0,0,1,1], clusters [0,0,1,2]: the clusters split class 1 in two.
# MI = ln 2 (a cluster determines the class); H(target) = ln 2, H(clusters) = 1.5 ln 2
#   NMI = ln 2 / ((ln 2 + 1.5 ln 2) / 2) = 0.8
# pairs: same cluster & same class 1, same cluster 1, same class 2, of C(4,2) = 6
#   ARI = (1 - 1 * 2 / 6) / ((1 + 2) / 2 - 1 * 2 / 6) = 4/7
# expected MI under the hypergeometric model: (2 ln 2) / 3
#   AMI = (ln 2 - 2/3 ln 2) / (1.25 ln 2 - 2/3 ln 2) = 4/7
# best mapping: cluster 0 -> class 0 (2 points), cluster 1 or 2 -> class 1 (1 point): acc 3/4
SPLIT_TARGET, SPLIT_CLUSTERS = [0, 0, 1, 1], [0, 0, 1, 2]


def test_scores_match_hand_computed_values() -> None:
    scores = clustering_scores(torch.tensor(SPLIT_CLUSTERS), torch.tensor(SPLIT_TARGET))
    assert scores.nmi == pytest.approx(0.8, abs=1e-6)
    assert scores.ari == pytest.approx(4 / 7, abs=1e-6)
    assert scores.ami == pytest.approx(4 / 7, abs=1e-9)
    assert scores.acc == pytest.approx(3 / 4)

    # target [0,0,0,1,1,1], clusters [0,0,1,1,2,2]: pairs together in both 2, in the clusters 3,
    # in the classes 6, of 15: ARI = (2 - 18/15) / (4.5 - 18/15) = 8/33; acc (2 + 2) / 6
    second = clustering_scores(torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 0, 1, 1, 1]))
    assert second.ari == pytest.approx(8 / 33, abs=1e-6)
    assert second.acc == pytest.approx(2 / 3)


def test_perfect_and_independent_clusterings() -> None:
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    perfect = clustering_scores(torch.tensor([5, 5, 3, 3, 9, 9]), target)  # any label values
    assert (perfect.nmi, perfect.ami, perfect.ari, perfect.acc) == pytest.approx((1, 1, 1, 1))
    # every cluster holds one point of each class: no information at all
    independent = clustering_scores(torch.tensor([0, 1, 0, 1, 0, 1]), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert independent.nmi == pytest.approx(0, abs=1e-6)
    assert independent.ami < 0 and independent.ari < 0  # worse than the chance expectation


def test_scores_are_invariant_to_renaming_clusters_and_classes() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (300,), generator=g)
    clusters = torch.where(torch.rand(300, generator=g) < 0.6, target,
                           torch.randint(0, 6, (300,), generator=g))
    reference = clustering_scores(clusters, target)
    renamed = clustering_scores(torch.randperm(6, generator=g)[clusters],
                                torch.randperm(5, generator=g)[target] + 10)
    for name in ("nmi", "ami", "ari", "acc"):
        assert getattr(renamed, name) == pytest.approx(getattr(reference, name), abs=1e-6)
    # NMI, AMI and ARI are symmetric; accuracy is too, as the mapping is one-to-one
    swapped = clustering_scores(target, clusters)
    for name in ("nmi", "ami", "ari", "acc"):
        assert getattr(swapped, name) == pytest.approx(getattr(reference, name), abs=1e-6)


def test_ami_equals_torchmetrics_slow_reference() -> None:
    g = torch.Generator().manual_seed(1)
    for n, k in ((40, 3), (120, 5), (200, 4)):
        target = torch.randint(0, k, (n,), generator=g)
        clusters = torch.where(torch.rand(n, generator=g) < 0.5, target,
                               torch.randint(0, k + 1, (n,), generator=g))
        expected = float(adjusted_mutual_info_score(clusters, target, "arithmetic"))
        assert adjusted_mutual_info(clusters, target) == pytest.approx(expected, abs=1e-5)


def test_cluster_accuracy_with_more_clusters_than_classes() -> None:
    # 3 clusters, 2 classes: only two clusters can be mapped; the third's points count as wrong
    assert cluster_accuracy(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([1, 1, 0, 0, 0])) == 0.8


def blobs(num_blobs: int, per_blob: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_blobs, dim, generator=g) * 10
    labels = torch.arange(num_blobs).repeat_interleave(per_blob)
    points = centers[labels] + torch.randn(len(labels), dim, generator=g)
    order = torch.randperm(len(labels), generator=g)
    return points[order], labels[order]


def test_kmeans_recovers_well_separated_blobs() -> None:
    points, labels = blobs(num_blobs=6, per_blob=80, dim=16, seed=0)
    result = kmeans(points, 6, num_restarts=3, seed=0)
    scores = clustering_scores(result.assignments, labels)
    assert scores.acc == 1.0 and scores.ari == pytest.approx(1.0)
    # each centroid is its blob's mean, and the inertia is the points' spread around them
    for cluster in range(6):
        members = points[result.assignments == cluster]
        torch.testing.assert_close(result.centroids[cluster], members.mean(0), atol=1e-4, rtol=0)
    inertia = sum(float((points[result.assignments == c] - result.centroids[c]).pow(2).sum())
                  for c in range(6))
    assert result.inertia == pytest.approx(inertia, rel=1e-4)
    assert result.assignments.dtype == torch.int64 and result.assignments.shape == (480,)


def test_kmeans_restarts_keep_the_lowest_inertia_and_seed_repeats() -> None:
    points, _ = blobs(num_blobs=8, per_blob=30, dim=4, seed=3)
    # the first of six restarts is the single run with the same seed; the best can only be lower
    single = kmeans(points, 8, num_restarts=1, seed=0).inertia
    assert kmeans(points, 8, num_restarts=6, seed=0).inertia <= single + 1e-3
    again = kmeans(points, 8, num_restarts=2, seed=5)
    assert torch.equal(again.assignments, kmeans(points, 8, num_restarts=2, seed=5).assignments)


def test_kmeans_with_repeated_points_and_bad_arguments() -> None:
    # three distinct points, ten copies each: three clusters fit them exactly
    points = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-3.0, 4.0]]).repeat(10, 1)
    result = kmeans(points, 3, num_restarts=2)
    assert result.inertia == pytest.approx(0.0, abs=1e-6)
    assert len(result.assignments.unique()) == 3
    with pytest.raises(ValueError, match="N >= num_clusters"):
        kmeans(torch.randn(3, 2), 5)
    assert math.isfinite(kmeans(torch.randn(20, 3), 1).inertia)
