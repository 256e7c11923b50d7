"""Shared fixtures: the CIFAR-10 subset shipped in the repository and the full shared archive."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CIFAR_MINI = ROOT / "data" / "cifar10-mini"
SHARED_CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10.tgz"


@pytest.fixture(scope="session")
def cifar_mini() -> Path:
    """200 train / 100 test real CIFAR-10 JPEGs per class, ImageFolder layout."""
    assert (CIFAR_MINI / "train").is_dir(), f"missing {CIFAR_MINI}"
    return CIFAR_MINI


@pytest.fixture(scope="session")
def cifar10_full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole CIFAR-10 from ../shared, unpacked once per test session."""
    if not SHARED_CIFAR10.exists():
        pytest.skip(f"{SHARED_CIFAR10} not found")
    target = tmp_path_factory.mktemp("cifar10_full")
    with tarfile.open(SHARED_CIFAR10) as archive:
        archive.extractall(target, filter="data")
    return target / "cifar10"
