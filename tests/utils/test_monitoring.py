"""RankMe and the collapse warning against the paper's formula, on real and collapsed features."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from solo.utils.monitoring import CollapseMonitor, CollapseWarning, normalized_std, rankme


def paper_rankme(z: np.ndarray) -> float:
    """Garrido et al. (arXiv:2210.02885), eq. 1-2: p_k = sigma_k / ||sigma||_1 + 1e-7,
    RankMe = exp(-sum_k p_k log p_k), in float64."""
    sigma = np.linalg.svd(z.astype(np.float64), compute_uv=False)
    p = sigma / np.abs(sigma).sum() + 1e-7
    return math.exp(-(p * np.log(p)).sum())


def real_features(root: Path, n: int = 300) -> torch.Tensor:
    """(n, 768) real CIFAR-10 images as vectors: 16 x 16 x 3 pixels."""
    paths = sorted((root / "train").rglob("*.jpg"))[::7][:n]
    images = [np.asarray(Image.open(p).convert("RGB").resize((16, 16)), dtype=np.float32) / 255
              for p in paths]
    return torch.from_numpy(np.stack(images).reshape(len(images), -1))


def test_rankme_matches_the_papers_formula_on_real_and_collapsed_features(cifar_mini: Path) -> None:
    real = real_features(cifar_mini)
    torch.testing.assert_close(float(rankme(real)), paper_rankme(real.numpy()), rtol=1e-4, atol=0)
    # every row a multiple of one vector: rank 1, RankMe ~1 (the epsilons add ~D * 1e-7 * 16)
    collapsed = torch.rand(300, 1) * real[:1]
    # float32's SVD leaves singular values ~1e-7 of the first where float64's are ~1e-16
    assert float(rankme(collapsed)) == pytest.approx(paper_rankme(collapsed.numpy()), abs=1e-3)
    assert float(rankme(collapsed)) < 1.01
    # rows on a 5-dimensional subspace, equally spread: RankMe close to 5 (and never above)
    subspace = torch.randn(2000, 5, generator=torch.Generator().manual_seed(0)) @ torch.linalg.qr(
        torch.randn(64, 5, generator=torch.Generator().manual_seed(1)))[0].T
    assert 4.5 < float(rankme(subspace)) <= 5.01
    assert float(rankme(subspace)) == pytest.approx(paper_rankme(subspace.numpy()), rel=1e-4)


def test_normalized_std_is_about_one_over_sqrt_d_on_the_sphere_and_zero_when_collapsed() -> None:
    spread = torch.randn(4000, 256, generator=torch.Generator().manual_seed(0))
    assert float(normalized_std(spread)) == pytest.approx(256 ** -0.5, rel=0.02)
    assert float(normalized_std(torch.ones(100, 256) * 3)) == 0


def test_collapse_warns_once_naming_the_metric_and_its_value(cifar_mini: Path) -> None:
    monitor = CollapseMonitor(max_rows=256)
    real = real_features(cifar_mini)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real features: no warning at all
        monitor.add("feats", real)
        metrics = monitor.compute()
        assert monitor.check(metrics) is None
    assert monitor.shapes["feats"] == (256, 768)  # capped to max_rows
    collapsed = real[:1].repeat(300, 1) + 1e-4 * torch.randn(300, 768)
    with pytest.warns(CollapseWarning) as caught:
        for _ in range(3):  # three validations: one warning
            monitor.reset()
            monitor.add("feats", collapsed[:100])
            monitor.add("feats", collapsed[100:])
            metrics = monitor.compute()
            monitor.check(metrics)
    assert len(caught) == 1
    message = str(caught[0].message)
    value = float(metrics["feats_rankme"])
    assert message.startswith("feats_rankme = ") and f"{value:.3g}" in message and value < 2.56


def test_collapse_to_one_point_trips_the_std_threshold_too() -> None:
    # a point with tiny noise: RankMe counts the noise's directions, the std sees the collapse
    z = torch.ones(64, 32) + 1e-5 * torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    monitor = CollapseMonitor()
    monitor.add("proj", z)
    metrics = monitor.compute()
    assert float(metrics["proj_rankme"]) > 0.01 * 32
    with pytest.warns(CollapseWarning, match=r"proj_std = .* below 1% of 1/sqrt\(D\)"):
        monitor.check(metrics)
