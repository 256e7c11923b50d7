import math

import pytest
import torch

from solo.nn import WeightedKNN
from solo.nn.probe import OnlineProbe, accuracy_at_k


def reference_votes(query, bank, labels, k, temperature, num_classes):
    """Slow weighted kNN: the k most similar bank rows vote exp(sim / T) for their class."""
    sims = [float(torch.nn.functional.cosine_similarity(query, b, dim=0)) for b in bank]
    order = sorted(range(len(bank)), key=lambda i: -sims[i])[:k]
    votes = [0.0] * num_classes
    for i in order:
        votes[int(labels[i])] += math.exp(sims[i] / temperature)
    return votes


def test_votes_match_the_slow_reference_up_to_a_per_query_factor() -> None:
    torch.manual_seed(0)
    bank, labels = torch.randn(50, 8), torch.randint(0, 4, (50,))
    queries = torch.randn(6, 8)
    knn = WeightedKNN(k=7, temperature=0.5, distance="cosine")
    scores = knn.predict(queries, bank, labels, num_classes=4)
    for q, row in zip(queries, scores):
        expected = torch.tensor(reference_votes(q, bank, labels, 7, 0.5, 4))
        # our weights are divided by the best neighbour's: the same vote, no overflow
        torch.testing.assert_close(row / row.sum(), (expected / expected.sum()).float())


def test_fp16_features_at_small_temperature_do_not_overflow() -> None:
    # exp(1 / 0.01) overflows fp16 and fp32; relative weights stay finite and give the right class
    bank = torch.eye(3).repeat(10, 1).half()
    labels = torch.arange(3).repeat(10)
    knn = WeightedKNN(k=10, temperature=0.01, distance="cosine")
    knn.add_bank(bank, labels)
    knn.add_queries(torch.eye(3).half() + 0.01, torch.arange(3))
    acc1, acc5 = knn.compute(num_classes=3)
    assert acc1 == 1.0 and acc5 == 1.0


def test_euclidean_votes_are_inverse_distances_without_temperature() -> None:
    """solo-learn's euclidean weight: 1 / (d + 1e-5); the temperature plays no part."""
    g = torch.Generator().manual_seed(3)
    bank, labels = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    queries = torch.randn(4, 5, generator=g)
    scores = {t: WeightedKNN(k=6, temperature=t, distance="euclidean").predict(queries, bank, labels, 3)
              for t in (0.07, 5.0)}
    torch.testing.assert_close(scores[0.07], scores[5.0])
    for q, row in zip(queries, scores[0.07]):
        distances = [float((q - b).norm()) for b in bank]
        nearest = sorted(range(len(bank)), key=lambda i: distances[i])[:6]
        expected = [0.0] * 3
        for i in nearest:
            expected[int(labels[i])] += 1 / (distances[i] + 1e-5)
        torch.testing.assert_close(row, torch.tensor(expected), rtol=1e-5, atol=0)


def test_unlabelled_bank_rows_are_left_out_of_the_vote() -> None:
    """STL-10's train+unlabeled bank: rows with target -1 must not crash the scatter, nor vote."""
    g = torch.Generator().manual_seed(4)
    labelled, labels = torch.randn(30, 8, generator=g), torch.randint(0, 3, (30,), generator=g)
    unlabelled = torch.randn(50, 8, generator=g)
    queries, targets = torch.randn(10, 8, generator=g), torch.randint(0, 3, (10,), generator=g)
    with_unlabelled, only_labelled = (WeightedKNN(k=5, distance="cosine") for _ in range(2))
    with_unlabelled.add_bank(labelled[:15], labels[:15])
    with_unlabelled.add_bank(unlabelled, torch.full((50,), -1))
    with_unlabelled.add_bank(labelled[15:], labels[15:])
    only_labelled.add_bank(labelled, labels)
    for knn in (with_unlabelled, only_labelled):
        knn.add_queries(queries, targets)
    assert with_unlabelled.compute(3) == only_labelled.compute(3)
    nothing = WeightedKNN(k=5)
    nothing.add_bank(unlabelled, torch.full((50,), -1))
    nothing.add_queries(queries, targets)
    with pytest.raises(ValueError, match="knn_eval.enabled"):
        nothing.compute(3)


def test_euclidean_picks_the_nearest() -> None:
    bank = torch.tensor([[0.0, 0.0], [10.0, 10.0], [0.1, 0.0]])
    labels = torch.tensor([0, 1, 0])
    knn = WeightedKNN(k=1, temperature=1.0, distance="euclidean")
    scores = knn.predict(torch.tensor([[9.0, 9.0], [0.0, 0.2]]), bank, labels, 2)
    assert scores.argmax(1).tolist() == [1, 0]


def test_probe_ignores_unlabelled_rows_and_sees_no_gradient_path() -> None:
    probe = OnlineProbe(4, 3)
    feats = torch.randn(5, 4, requires_grad=True)
    targets = torch.tensor([0, 1, -1, 2, -1])
    loss, logs = probe.loss(feats, targets)
    loss.backward()
    assert feats.grad is None  # detached: the probe never trains the backbone
    logits = probe(feats)
    expected = torch.nn.functional.cross_entropy(logits[[0, 1, 3]], targets[[0, 1, 3]])
    torch.testing.assert_close(loss, expected)


def test_accuracy_at_k() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    acc1, acc2 = accuracy_at_k(logits, torch.tensor([1, 2, 1]), top_k=(1, 2))
    assert math.isclose(float(acc1), 1 / 3, rel_tol=1e-6) and math.isclose(float(acc2), 2 / 3, rel_tol=1e-6)


def test_stored_features_are_copies() -> None:
    """With CUDA graphs a step's outputs are overwritten by the next replay: what the kNN keeps
    across batches must not share their memory (float32 inputs included)."""
    knn = WeightedKNN(k=3)
    features, targets = torch.randn(6, 4), torch.arange(6)
    knn.add_bank(features, targets)
    knn.add_queries(features, targets)
    features.zero_()
    targets.zero_()
    assert knn._bank[0].abs().sum() > 0 and knn._queries[0].abs().sum() > 0
    assert knn._bank_targets[0].tolist() == list(range(6))
