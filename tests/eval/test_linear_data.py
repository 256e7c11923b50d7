"""Linear-evaluation data: the class-balanced, seeded subset and the training transforms."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import RandAugment
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from solo.eval.linear_config import LinearConfig, parse_linear_config
from solo.eval.linear_data import (
    SUBSET_FILE,
    LinearDataModule,
    labelled_subset,
    train_transform,
    val_transform,
)
from tests.eval.linear_fixtures import LINEAR_CONFIGS, linear_overrides
from tests.helpers import load_raw


def linear_config(cifar_mini: Path, tmp_path: Path, *extra: str) -> LinearConfig:
    weights = tmp_path / "weights.ckpt"
    weights.touch()
    overrides = linear_overrides(weights, cifar_mini, tmp_path / "ckpt") + list(extra)
    return parse_linear_config(load_raw(LINEAR_CONFIGS, "linear.yaml", overrides))


def subset_of(cifar_mini: Path, tmp_path: Path, run: str, *extra: str) -> tuple[dict, Subset]:
    cfg = linear_config(cifar_mini, tmp_path, *extra)
    datamodule = LinearDataModule(cfg, tmp_path / run)
    datamodule.setup("fit")
    assert isinstance(datamodule.train_set, Subset)
    return json.loads((tmp_path / run / SUBSET_FILE).read_text()), datamodule.train_set


def test_fraction_is_class_balanced_seeded_and_recorded(cifar_mini: Path, tmp_path: Path) -> None:
    saved, subset = subset_of(cifar_mini, tmp_path, "a", "++data.fraction=0.1")
    # 10% of 200 training images in each of the 10 classes
    assert saved["num_images"] == len(subset) == 200 and saved["seed"] == 0
    assert saved["indexes"] == sorted(subset.indices)
    classes = Counter(name.split("/")[0] for name in saved["files"])
    assert len(classes) == 10 and set(classes.values()) == {20}
    # the recorded files are the images the subset yields, in order
    base = subset.dataset
    assert [base.samples[i][0] for i in subset.indices] == [
        str(cifar_mini / "train" / name) for name in saved["files"]]
    assert all((cifar_mini / "train" / name).is_file() for name in saved["files"])

    again, _ = subset_of(cifar_mini, tmp_path, "b", "++data.fraction=0.1")
    assert again["indexes"] == saved["indexes"]  # same seed, same images
    other, _ = subset_of(cifar_mini, tmp_path, "c", "++data.fraction=0.1", "++data.fraction_seed=7")
    assert other["indexes"] != saved["indexes"]
    assert set(Counter(name.split("/")[0] for name in other["files"]).values()) == {20}


def test_whole_training_set_writes_no_subset_file(cifar_mini: Path, tmp_path: Path) -> None:
    cfg = linear_config(cifar_mini, tmp_path)
    datamodule = LinearDataModule(cfg, tmp_path / "run")
    datamodule.setup("fit")
    assert datamodule.sizes() == {"train_images": 2000, "val_images": 1000}
    assert not (tmp_path / "run" / SUBSET_FILE).exists()


class Labels(Dataset):
    """Items that are only their labels; -1 marks an unlabelled image (as in STL-10)."""

    def __init__(self, targets: list[int]) -> None:
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[int, int]:
        return index, self.targets[index]


def test_unlabelled_images_are_left_out_before_the_fraction() -> None:
    targets = [0] * 10 + [-1] * 30 + [1] * 10
    assert labelled_subset(Labels(targets), -1, 0) == list(range(10)) + list(range(40, 50))
    keep = labelled_subset(Labels(targets), 0.5, 0)
    assert keep is not None and len(keep) == 10
    assert sorted(targets[i] for i in keep) == [0] * 5 + [1] * 5
    assert labelled_subset(Labels([0, 1, 1]), -1, 0) is None  # all labelled: no subset
    with pytest.raises(ValueError, match="no labelled images"):
        labelled_subset(Labels([-1, -1]), -1, 0)


def test_train_transform_with_rand_augment(cifar_mini: Path, tmp_path: Path) -> None:
    cfg = linear_config(cifar_mini, tmp_path, "++auto_augment=rand-m9-mstd0.5-inc1")
    transform = train_transform(cfg)
    kinds = [type(op) for op in transform.transforms]
    # crop and flip, then RandAugment on the PIL image, then the conversion to a tensor
    assert kinds[:4] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip, RandAugment, v2.ToImage]
    image = Image.open(next((cifar_mini / "train" / "cat").iterdir())).convert("RGB")
    torch.manual_seed(0)
    views = torch.stack([transform(image) for _ in range(4)])
    assert views.shape == (4, 3, 32, 32) and views.dtype == torch.float32
    assert not torch.equal(views[0], views[1])  # random
    plain = linear_config(cifar_mini, tmp_path, "++auto_augment=False")
    assert RandAugment not in [type(op) for op in train_transform(plain).transforms]
    # validation: deterministic, the image's own pixels normalized with CIFAR-10's statistics
    val = val_transform(cfg)(image)
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255  # (3, 32, 32)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)
    torch.testing.assert_close(val, (pixels - mean) / std)
