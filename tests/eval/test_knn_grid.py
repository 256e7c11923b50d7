"""The offline kNN grid against a slow, obviously-correct loop; the projector rebuilt from a method."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from solo.eval.features import extract_features, load_projector, pick_device, project
from solo.eval.knn import KnnRow, format_table, knn_sweep
from solo.methods import BYOL
from solo.nn import WeightedKNN
from solo.zoo import CheckpointError, Pretrained
from tests.helpers import shipped_config


def reference_votes(query: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, k: int,
                    temperature: float | None, distance: str, num_classes: int) -> list[float]:
    """One query, element by element: the k nearest bank rows vote exp(cos / T) (cosine) or
    1 / (d + 1e-5) (euclidean, solo-learn's weight, no temperature)."""
    sims = []
    for row in bank:
        if distance == "cosine":
            dot = sum(float(a) * float(b) for a, b in zip(query, row))
            sims.append(dot / (math.sqrt(sum(float(a) ** 2 for a in query))
                               * math.sqrt(sum(float(b) ** 2 for b in row))))
        else:
            sims.append(-math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(query, row))))
    nearest = sorted(range(len(bank)), key=lambda i: -sims[i])[:k]
    votes = [0.0] * num_classes
    for i in nearest:
        if distance == "cosine":
            votes[int(labels[i])] += math.exp(sims[i] / temperature)
        else:
            votes[int(labels[i])] += 1 / (-sims[i] + 1e-5)
    return votes


def reference_accuracies(bank, labels, queries, targets, k, temperature, distance, num_classes):
    """acc@1, and bounds on acc@5: a target with no vote may or may not be among the top five
    when fewer than five classes got votes (any order of the zero-vote classes is right)."""
    acc1, acc5_low, ambiguous = 0, 0, 0
    for query, target in zip(queries, targets):
        votes = reference_votes(query, bank, labels, k, temperature, distance, num_classes)
        mine = votes[int(target)]
        acc1 += int(mine == max(votes))
        if mine > 0:
            acc5_low += int(sum(v > mine for v in votes) < 5)
        elif sum(v > 0 for v in votes) < 5:
            ambiguous += 1
    n = len(queries)
    return acc1 / n, acc5_low / n, (acc5_low + ambiguous) / n


def test_grid_matches_the_slow_reference_for_every_setting() -> None:
    g = torch.Generator().manual_seed(0)
    num_classes = 7
    bank, labels = torch.randn(60, 6, generator=g) * 0.5, torch.randint(0, num_classes, (60,), generator=g)
    queries = torch.randn(25, 6, generator=g) * 0.5
    targets = torch.randint(0, num_classes, (25,), generator=g)
    ks, temperatures = [1, 4, 15, 60], [0.05, 0.2, 1.0]
    rows = knn_sweep(bank, labels, queries, targets, ks, temperatures, ["euclidean", "cosine"],
                     num_classes, feature="backbone", chunk_size=7)  # several query chunks
    # cosine: every (k, T); euclidean: one row per k, without a temperature
    assert len(rows) == len(ks) * len(temperatures) + len(ks)
    assert {r.temperature for r in rows if r.distance == "euclidean"} == {None}
    for row in rows:
        acc1, acc5_low, acc5_high = reference_accuracies(bank, labels, queries, targets, row.k,
                                                         row.temperature, row.distance, num_classes)
        assert row.acc1 == pytest.approx(acc1), row
        assert acc5_low - 1e-9 <= row.acc5 <= acc5_high + 1e-9, row
        if row.k == 60:  # every bank entry votes: every class has a vote, no ambiguity
            assert row.acc5 == pytest.approx(acc5_low), row
    assert {row.feature for row in rows} == {"backbone"}


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_grid_agrees_with_the_online_knn(distance: str) -> None:
    g = torch.Generator().manual_seed(1)
    bank, labels = torch.randn(200, 16, generator=g), torch.randint(0, 10, (200,), generator=g)
    queries, targets = torch.randn(50, 16, generator=g), torch.randint(0, 10, (50,), generator=g)
    online = WeightedKNN(k=20, temperature=0.07, distance=distance)
    online.add_bank(bank, labels)
    online.add_queries(queries, targets)
    acc1, acc5 = online.compute(10)
    [row] = knn_sweep(bank, labels, queries, targets, [20], [0.07], [distance], 10)
    assert (row.acc1, row.acc5) == pytest.approx((float(acc1), float(acc5)))


def test_separated_classes_are_classified_perfectly_and_repeats_count_once() -> None:
    g = torch.Generator().manual_seed(2)
    centers = torch.randn(4, 32, generator=g) * 20
    labels, targets = torch.arange(4).repeat(25), torch.arange(4).repeat(5)
    bank = centers[labels] + torch.randn(100, 32, generator=g)
    queries = centers[targets] + torch.randn(20, 32, generator=g)
    rows = knn_sweep(bank, labels, queries, targets, [5, 5, 10], [0.1], ["cosine", "euclidean"])
    assert [(r.distance, r.k) for r in rows] == [("cosine", 5), ("cosine", 10), ("euclidean", 5),
                                                  ("euclidean", 10)]
    assert all(r.acc1 == 1.0 and r.acc5 == 1.0 for r in rows)


def test_bad_arguments_are_rejected() -> None:
    bank, labels = torch.randn(10, 4), torch.randint(0, 3, (10,))
    with pytest.raises(ValueError, match="distance must be one of"):
        knn_sweep(bank, labels, bank, labels, [5], [0.1], ["manhattan"])
    with pytest.raises(ValueError, match="feature size"):
        knn_sweep(bank, labels, torch.randn(3, 5), labels[:3], [5], [0.1], ["cosine"])
    with pytest.raises(ValueError, match="temperature"):
        knn_sweep(bank, labels, bank, labels, [5], [0.0], ["cosine"])


def test_table_has_one_line_per_setting() -> None:
    rows = [KnnRow("backbone", "cosine", 20, 0.07, 0.5, 0.875),
            KnnRow("projector", "euclidean", 200, None, 0.25, 1.0)]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["feature", "distance", "k", "T", "acc@1", "acc@5"]
    assert lines[2].split() == ["backbone", "cosine", "20", "0.07", "50.00", "87.50"]
    assert lines[3].split() == ["projector", "euclidean", "200", "-", "25.00", "100.00"]


def test_extract_features_keeps_order_and_dtypes() -> None:
    images = torch.randn(10, 3, 4, 4)
    loader = torch.utils.data.DataLoader(list(zip(images, range(10))), batch_size=4)
    feats, targets = extract_features(lambda x: x.mean(dim=(2, 3)), loader, pick_device("cpu"))
    torch.testing.assert_close(feats, images.mean(dim=(2, 3)))
    assert feats.dtype == torch.float32 and targets.dtype == torch.int64
    assert targets.tolist() == list(range(10))
    bf16, _ = extract_features(lambda x: x.mean(dim=(2, 3)), loader, "cpu", precision="bf16")
    assert bf16.dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        extract_features(lambda x: x, loader, "cpu", precision="16")


# ----------------------------------------------------------------------------------------------
# projector features
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def byol(cifar_mini: Path) -> BYOL:
    cfg = shipped_config("byol", cifar_mini, ["++method_kwargs.proj_hidden_dim=32",
                                              "++method_kwargs.pred_hidden_dim=32",
                                              "++method_kwargs.proj_output_dim=16"])
    torch.manual_seed(0)
    model = BYOL(cfg)
    with torch.no_grad():  # BN statistics that differ from the defaults, so loading them matters
        model.projector[1].running_mean.uniform_(-1, 1)
        model.projector[1].running_var.uniform_(0.5, 2)
    return model.eval()


def as_pretrained(model: BYOL, state: dict, method: str | None = "byol") -> Pretrained:
    return Pretrained(backbone=model.backbone, backbone_name="resnet18", method=method,
                      cfg=model.cfg.to_dict(), state_dict=state, source_format="solo")


def test_projector_is_rebuilt_with_the_checkpoint_weights(byol: BYOL) -> None:
    projector = load_projector(as_pretrained(byol, byol.state_dict()))
    assert not projector.training
    features = torch.randn(12, byol.num_features)
    with torch.no_grad():
        expected = byol.projector(features)
    torch.testing.assert_close(project(projector, features, torch.device("cpu"), batch_size=5),
                               expected)


def test_checkpoint_without_projector_fails_clearly(byol: BYOL) -> None:
    backbone_only = {k: v for k, v in byol.state_dict().items() if not k.startswith("projector.")}
    with pytest.raises(CheckpointError, match=r"no 'projector\.\*' keys.*feature_type=\[backbone\]"):
        load_projector(as_pretrained(byol, backbone_only))
    with pytest.raises(CheckpointError, match="records no method and config"):
        load_projector(as_pretrained(byol, byol.state_dict(), method=None))
    with pytest.raises(CheckpointError, match="projector for byol does not fit"):
        wrong = {**byol.state_dict(), "projector.0.weight": torch.zeros(3, 3)}
        load_projector(as_pretrained(byol, wrong))
