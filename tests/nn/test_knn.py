import math

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
