"""TWIST's losses against slow references written from the official code's equations, on one and
on two processes."""

from __future__ import annotations

import math

import pytest
import torch

from solo.losses.twist import (batch_mean_entropy, confidence_threshold, self_label_loss,
                               twist_loss)
from tests.multiprocess import run_processes

EPS = 1e-5


def softmax_row(row: list[float], tau: float = 1.0) -> list[float]:
    exps = [math.exp(x / tau) for x in row]
    return [e / sum(exps) for e in exps]


def kl_ref(p: list[list[float]], q: list[list[float]]) -> float:
    return sum(sum(a * math.log(a + EPS) - a * math.log(b + EPS) for a, b in zip(pr, qr))
               for pr, qr in zip(p, q)) / len(p)


def eh_ref(s: list[list[float]]) -> float:
    return sum(-sum(a * math.log(a + EPS) for a in row) for row in s) / len(s)


def he_ref(s: list[list[float]]) -> float:
    mean = [sum(row[k] for row in s) / len(s) for k in range(len(s[0]))]
    return -sum(m * math.log(m + EPS) for m in mean)


def reference(views: list[torch.Tensor], lam1: float, lam2: float, tau: float,
              teacher: list[torch.Tensor] | None = None) -> float:
    """engine.py's loss, one row and one class at a time."""
    rows = [v.tolist() for v in views]
    p = [[softmax_row(r) for r in v] for v in rows]
    s = [[softmax_row(r, tau) for r in v] for v in rows]
    if teacher is None:  # EntLoss over the pairs (large i, later j)
        total = []
        for i in range(2):
            for j in range(i + 1, len(views)):
                kl = 0.5 * (kl_ref(p[i], p[j]) + kl_ref(p[j], p[i]))
                eh = 0.5 * (eh_ref(s[i]) + eh_ref(s[j]))
                he = 0.5 * (he_ref(s[i]) + he_ref(s[j]))
                total.append(kl + (1 + lam1) * eh - lam2 * he)
        return sum(total) / len(total)
    t = [[softmax_row(r, tau) for r in v.tolist()] for v in teacher]
    kls = [kl_ref(t[i], s[j]) for i in range(len(t)) for j in range(len(s)) if i != j]
    eh = sum(eh_ref(x) for x in s) / len(s)
    he = sum(he_ref(x) for x in s) / len(s)
    return sum(kls) / len(kls) + (1 + lam1) * eh - lam2 * he


def random_views(n: int, batch: int = 6, classes: int = 5, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, classes, generator=g, dtype=torch.float64) * 2 for _ in range(n)]


@pytest.mark.parametrize("num_views", [2, 4])  # 2 large crops, then 2 small ones
@pytest.mark.parametrize("lam1,lam2,tau", [(0.0, 1.0, 1.0), (-0.6, 1.0, 0.5), (0.3, 2.0, 2.0)])
def test_loss_matches_the_equations(num_views: int, lam1: float, lam2: float, tau: float) -> None:
    views = random_views(num_views)
    loss, logs = twist_loss(views, lam1, lam2, tau, EPS)
    assert float(loss) == pytest.approx(reference(views, lam1, lam2, tau), rel=1e-5)
    assert float(logs["kl"] + (1 + lam1) * logs["eh"] - lam2 * logs["he"]) == pytest.approx(
        float(loss), rel=1e-5)


@pytest.mark.parametrize("lam1,tau", [(0.0, 1.0), (-0.6, 0.7)])
def test_momentum_teacher_loss_matches_the_equations(lam1: float, tau: float) -> None:
    views, teacher = random_views(4), random_views(2, seed=1)
    loss, _ = twist_loss(views, lam1, 1.0, tau, EPS, teacher_logits=teacher)
    assert float(loss) == pytest.approx(reference(views, lam1, 1.0, tau, teacher), rel=1e-5)


def test_small_crops_are_compared_with_the_large_ones_only() -> None:
    # two small crops swapped with each other: pairs (small, small) do not exist, so nothing moves
    views = random_views(4)
    loss, _ = twist_loss(views)
    swapped, _ = twist_loss([views[0], views[1], views[3], views[2]])
    assert float(loss) == pytest.approx(float(swapped), rel=1e-12)
    # one small crop: the pairs are (0, 1), (0, 2) and (1, 2)
    only_large, _ = twist_loss(views[:2] + views[2:3])
    assert float(only_large) == pytest.approx(reference(views[:3], 0.0, 1.0, 1.0), rel=1e-5)


def test_teacher_predictions_are_the_small_crops_targets() -> None:
    # KL(t || softmax(x)) has the gradient softmax(x) - t per row: the small crop is pulled
    # toward the mean of the two teacher distributions, and the teacher gets no gradient
    views = [v.clone().requires_grad_() for v in random_views(3)]
    teacher = [t.clone().requires_grad_() for t in random_views(2, seed=3)]
    lam1, lam2 = -1.0, 0.0  # leave the consistency term alone
    loss, _ = twist_loss(views, lam1, lam2, 1.0, 0.0, teacher_logits=teacher)
    loss.backward()
    assert all(t.grad is None for t in teacher)
    count = 2 * 3 - 2  # teacher i with every student view j != i
    batch = len(views[2])
    t0, t1 = (torch.softmax(t.detach(), -1) for t in teacher)
    expected = (2 * torch.softmax(views[2].detach(), -1) - t0 - t1) / count / batch
    torch.testing.assert_close(views[2].grad, expected)


def test_loss_invariant_to_permuting_the_batch() -> None:
    views = random_views(3)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    loss, _ = twist_loss(views, -0.6, 1.0, 0.5)
    permuted, _ = twist_loss([v[order] for v in views], -0.6, 1.0, 0.5)
    # float32: the sums over a permuted batch round in another order
    assert float(loss) == pytest.approx(float(permuted), rel=1e-6)


def _distributed(rank: int, world: int, views: list[torch.Tensor]) -> dict:
    mine = [v.chunk(world)[rank].clone().requires_grad_() for v in views]
    loss, logs = twist_loss(mine, -0.6, 1.0, 0.5)
    loss.backward()
    he = batch_mean_entropy(torch.softmax(mine[0].detach(), -1))
    return {"loss": loss.detach(), "he": he, "grads": [m.grad for m in mine]}


def test_two_processes_equal_one_on_the_global_batch() -> None:
    views = random_views(3, batch=8)
    results = run_processes(_distributed, views)
    single = [v.clone().requires_grad_() for v in views]
    loss, _ = twist_loss(single, -0.6, 1.0, 0.5)
    loss.backward()
    he = batch_mean_entropy(torch.softmax(views[0], -1))
    # the diversity term is that of the global batch on every process
    for r in results:
        torch.testing.assert_close(r["he"], he)
    # the per-row terms are local means: their average over processes is the global mean
    torch.testing.assert_close(sum(r["loss"] for r in results) / 2, loss.detach())
    # gradients: DDP averages the parameter gradients over the 2 processes, so each row's
    # gradient on its process, halved, must be its gradient in the one-process loss
    for v, view in enumerate(single):
        gathered = torch.cat([r["grads"][v] for r in results]) / 2
        torch.testing.assert_close(gathered, view.grad)


def self_label_reference(views: list[torch.Tensor], anchors: list[torch.Tensor],
                         quantile: float) -> float:
    """engine.py's self-labeling loss (ConfidenceBasedCE), one image at a time."""
    a = [[softmax_row(r) for r in x.tolist()] for x in anchors]
    batch = len(a[0])
    confidences = sorted((max(max(a[0][b]), max(a[1][b])) for b in range(batch)), reverse=True)
    threshold = confidences[min(int(quantile * batch), batch - 1)]
    total = 0.0
    students = [x.tolist() for x in views]
    for v in range(1, len(views)):
        terms = []
        for b in range(batch):
            first = max(a[0][b]) > max(a[1][b])
            weak = a[0][b] if first else a[1][b]
            if max(weak) <= threshold:
                continue
            label = weak.index(max(weak))
            strong = students[(1 if first else 0) if v == 1 else v][b]
            terms.append(-math.log(softmax_row(strong)[label]))
        total += sum(terms) / len(terms) if terms else 0.0
    return total / (len(views) - 1)


@pytest.mark.parametrize("quantile", [0.25, 0.5, 1.0])
def test_self_label_loss_matches_the_equations(quantile: float) -> None:
    views, anchors = random_views(4, batch=8), random_views(2, batch=8, seed=5)
    loss, logs = self_label_loss(views, anchors, quantile)
    assert float(loss) == pytest.approx(self_label_reference(views, anchors, quantile), rel=1e-6)
    confident = min(int(quantile * 8), 7)  # the images ranked above the threshold's
    assert float(logs["confident_fraction"]) == pytest.approx(confident / 8)


def test_self_label_weak_anchor_gets_no_gradient() -> None:
    views = [v.clone().requires_grad_() for v in random_views(2, batch=8)]
    loss, _ = self_label_loss(views, views, 0.5)  # the student's own large crops as anchors
    loss.backward()
    # the image's more confident view is the anchor, its logits get nothing
    conf = [torch.softmax(v.detach(), -1).amax(1) for v in views]
    first = conf[0] > conf[1]
    assert (views[0].grad[first] == 0).all() and (views[1].grad[~first] == 0).all()
    assert views[0].grad.abs().sum() > 0 or views[1].grad.abs().sum() > 0


def test_confidence_threshold_is_the_ranked_value() -> None:
    confidence = torch.tensor([0.1, 0.9, 0.5, 0.7])
    assert float(confidence_threshold(confidence, 0.5)) == pytest.approx(0.5)  # sorted[2]
    assert float(confidence_threshold(confidence, 1.0)) == pytest.approx(0.1)  # the last
