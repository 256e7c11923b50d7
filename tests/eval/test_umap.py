"""UMAP plots of real CIFAR-10 images: the PNG and .npz written, offline and during pretraining."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from solo.config import ConfigError
from solo.eval.umap import build_auto_umap, require_umap, save_umap, umap_embedding
from solo.pretrain import pretrain
from tests.helpers import shipped_config

pytest.importorskip("umap", reason="the umap extra (umap-learn) is not installed")
pytest.importorskip("matplotlib", reason="the umap extra (matplotlib) is not installed")
pytestmark = pytest.mark.slow  # umap-learn compiles its numba kernels once per process (~25 s)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def pixel_features(folder: Path, per_class: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """8x8 average-pooled pixels of the first ``per_class`` images of every class: real image
    statistics, cheap enough that the test measures UMAP and the files, not a backbone."""
    dataset = ImageFolder(str(folder), transform=v2.Compose([v2.ToImage(),
                                                             v2.ToDtype(torch.float32, scale=True)]))
    keep = [i for c in range(len(dataset.classes))
            for i in [j for j, t in enumerate(dataset.targets) if t == c][:per_class]]
    images = torch.stack([dataset[i][0] for i in keep])  # (N, 3, 32, 32)
    features = torch.nn.functional.avg_pool2d(images, 4).flatten(1)  # (N, 192)
    return features, torch.tensor([dataset.targets[i] for i in keep]), dataset.classes


def test_png_and_npz_of_a_few_hundred_images(cifar_mini: Path, tmp_path: Path) -> None:
    features, labels, classes = pixel_features(cifar_mini / "test", per_class=30)
    coords = umap_embedding(features, n_neighbors=10, seed=0)
    assert coords.shape == (300, 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    # a seed makes the embedding repeat exactly
    np.testing.assert_array_equal(coords, umap_embedding(features, n_neighbors=10, seed=0))

    files = save_umap(tmp_path / "plots" / "cifar-test", coords, labels, classes, title="test set")
    assert files.png == tmp_path / "plots" / "cifar-test.png"
    assert files.png.read_bytes()[:8] == PNG_MAGIC
    from matplotlib.image import imread

    assert imread(files.png).shape[:2] == (900, 900)  # 9 x 9 inches at 100 dpi
    saved = np.load(files.npz)
    np.testing.assert_array_equal(saved["coords"], coords)
    np.testing.assert_array_equal(saved["labels"], labels.numpy())
    assert saved["class_names"].tolist() == classes == ["airplane", "automobile", "bird", "cat",
                                                         "deer", "dog", "frog", "horse", "ship",
                                                         "truck"]
    assert sorted(p.name for p in files.png.parent.iterdir()) == ["cifar-test.npz", "cifar-test.png"]

    # images of one class lie closer to each other than to the rest, even from raw pixels: the
    # mean distance to a same-class point is below the mean distance to any point
    distances = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    same = labels.numpy()[:, None] == labels.numpy()[None]
    assert distances[same].mean() < distances.mean()


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs more than 15 points"):
        umap_embedding(torch.randn(10, 4))
    with pytest.raises(ValueError, match=r"\(N, 2\) coordinates for N=5"):
        save_umap(tmp_path / "x", np.zeros((4, 2), np.float32), np.zeros(5))


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch,
                                                 cifar_mini: Path) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # what Python does when a package is absent
    with pytest.raises(ImportError, match=r"umap-learn.*pip install 'solo\[umap\]'"):
        require_umap()
    cfg = shipped_config("byol", cifar_mini, ["++auto_umap.enabled=True"])
    with pytest.raises(ConfigError, match=r"auto_umap.enabled: .*pip install 'solo\[umap\]'"):
        build_auto_umap(cfg, "run1")


def test_auto_umap_needs_a_validation_set_and_a_frequency(cifar_mini: Path) -> None:
    cfg = shipped_config("byol", cifar_mini, ["++auto_umap.enabled=True", "++data.val_path=null"])
    with pytest.raises(ConfigError, match="auto_umap.enabled: plots the validation set"):
        build_auto_umap(cfg, "run1")
    cfg = shipped_config("byol", cifar_mini, ["++auto_umap.enabled=True", "++auto_umap.frequency=0"])
    with pytest.raises(ConfigError, match="auto_umap.frequency: must be >= 1, got 0"):
        build_auto_umap(cfg, "run1")


def test_auto_umap_during_pretraining(cifar_mini: Path, tmp_path: Path) -> None:
    umap_dir = tmp_path / "umap"
    cfg = shipped_config("byol", cifar_mini, [
        "++auto_umap.enabled=True", f"++auto_umap.dir={umap_dir}", "++auto_umap.frequency=2",
        "++max_epochs=3", "++limit_train_batches=1", "++limit_val_batches=3",
        "++optimizer.batch_size=8", "++knn_eval.enabled=False", "++enable_progress_bar=False",
        "++enable_model_summary=False", f"++checkpoint.dir={tmp_path / 'ckpt'}",
        "++method_kwargs.proj_hidden_dim=32", "++method_kwargs.pred_hidden_dim=32"])
    result = pretrain(cfg)
    run_id = result.run_dir.name
    out = umap_dir / "byol" / run_id
    # every second epoch from the first, and the last: epochs 0 and 2
    assert sorted(p.name for p in out.iterdir()) == ["ep=0.npz", "ep=0.png", "ep=2.npz", "ep=2.png"]
    # the validation loader's first 3 batches of 8, in order: ImageFolder sorts by class, so the
    # 24 images are the first 24 of class 0 ("airplane")
    val = ImageFolder(str(cifar_mini / "test"))
    for epoch in (0, 2):
        saved = np.load(out / f"ep={epoch}.npz")
        assert saved["coords"].shape == (24, 2) and np.isfinite(saved["coords"]).all()
        np.testing.assert_array_equal(saved["labels"], np.asarray(val.targets[:24]))
        assert saved["class_names"].tolist() == val.classes
        assert (out / f"ep={epoch}.png").read_bytes()[:8] == PNG_MAGIC
