"""Every pipeline, every loader and every evaluation normalizes with the dataset's own channel
statistics (solo-learn's values), unless the config sets mean and std itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from solo.config import ExperimentConfig, build, dataset_normalization
from solo.data import build_pipeline
from solo.eval.eval_config import EvalDataConfig
from solo.eval.features import eval_transform
from solo.eval.linear_config import LinearAugmentationsConfig, LinearConfig
from solo.eval.linear_data import normalization as linear_normalization

MINI = Path(__file__).resolve().parents[2] / "data" / "cifar10-mini"
BATCH = 8
CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100 = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
STL10 = ((0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PIPELINES = ["cpu", "gpu"] + (["dali"] if importlib.util.find_spec("nvidia.dali") else [])


def config(dataset: str, pipeline: str, **group: object) -> ExperimentConfig:
    """One 32 px crop group without any random op: every view is the image itself, normalized."""
    return build(ExperimentConfig, {
        "name": "normalization", "method": "simclr",
        "augmentations": [{"crop_size": 32, "num_crops": 2, "rrc": {"enabled": False}, **group}],
        "optimizer": {"name": "sgd", "batch_size": BATCH, "lr": 0.1, "weight_decay": 0.0},
        "data": {"dataset": dataset, "train_path": str(MINI / "train"),
                 "val_path": str(MINI / "test"), "num_workers": 0, "pipeline": pipeline,
                 "num_classes": 10},
        "knn_eval": {"enabled": True}, "dali": {"device": "cpu"}, "seed": 0})


def next_batch(loader) -> tuple:
    return next(iter(loader))


def expected_views(split: str, mean, std, count: int = BATCH) -> torch.Tensor:
    """The first ``count`` images of ``split`` in folder order, (x / 255 - mean) / std."""
    files = sorted((MINI / split).rglob("*.jpg"))[:count]
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255
                       for f in files])
    views = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(views).permute(0, 3, 1, 2)


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("dataset, statistics", [("cifar10", CIFAR10), ("cifar100", CIFAR100)])
def test_training_validation_and_bank_views(pipeline: str, dataset: str, statistics) -> None:
    cfg = config(dataset, pipeline)
    assert cfg.augmentations[0].normalization == statistics
    assert cfg.to_dict()["augmentations"][0]["mean"] is None  # the saved config says "unset"
    datamodule = build_pipeline(cfg)
    val, bank = datamodule.val_dataloader()
    images, _ = next_batch(val)
    # two JPEG decoders (PIL, DALI's): a pixel level or two apart
    tolerance = 0.05 if pipeline == "dali" else 1e-4
    torch.testing.assert_close(images, expected_views("test", *statistics), atol=tolerance, rtol=0)
    images, _ = next_batch(bank)
    torch.testing.assert_close(images, expected_views("train", *statistics), atol=tolerance, rtol=0)
    indexes, crops, _ = next_batch(datamodule.train_dataloader())
    every = expected_views("train", *statistics, count=2000)
    torch.testing.assert_close(crops[0], every[indexes.cpu()], atol=tolerance, rtol=0)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_an_explicit_mean_and_std_win(pipeline: str) -> None:
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    cfg = config("cifar10", pipeline, mean=mean, std=std)
    images, _ = next_batch(build_pipeline(cfg).val_dataloader()[0])
    tolerance = 0.05 if pipeline == "dali" else 1e-4
    torch.testing.assert_close(images, expected_views("test", mean, std), atol=tolerance, rtol=0)


def test_dataset_statistics_table() -> None:
    assert dataset_normalization("cifar10") == CIFAR10
    assert dataset_normalization("cifar100") == CIFAR100
    assert dataset_normalization("stl10") == STL10
    for other in ("imagenet", "imagenet100", "custom"):
        assert dataset_normalization(other) == IMAGENET


def eval_view(dataset: str, pretrained_cfg: dict | None, **augmentations: object) -> torch.Tensor:
    data = EvalDataConfig(dataset=dataset, train_path=str(MINI / "train"),
                          augmentations=LinearAugmentationsConfig(**augmentations))
    image = Image.open(sorted((MINI / "test").rglob("*.jpg"))[0]).convert("RGB")
    return eval_transform(data, pretrained_cfg)(image)


def test_main_knn_and_main_umap_normalize_with_the_dataset_statistics() -> None:
    # a solo-learn checkpoint's config names no mean/std: the dataset's statistics, as solo-learn
    solo_learn_cfg = {"augmentations": [{"crop_size": 32}], "data": {"dataset": "cifar10"}}
    for dataset, statistics in (("cifar10", CIFAR10), ("cifar100", CIFAR100)):
        torch.testing.assert_close(eval_view(dataset, solo_learn_cfg),
                                   expected_views("test", *statistics, count=1)[0], atol=1e-4, rtol=0)
    # what pretraining set explicitly is kept; what the evaluation sets wins over both
    explicit = {"augmentations": [{"crop_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}]}
    torch.testing.assert_close(eval_view("cifar10", explicit),
                               expected_views("test", [0.5] * 3, [0.25] * 3, count=1)[0],
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(eval_view("cifar10", explicit, mean=[0.1] * 3, std=[0.5] * 3),
                               expected_views("test", [0.1] * 3, [0.5] * 3, count=1)[0],
                               atol=1e-4, rtol=0)


def linear_config(dataset: str, **augmentations: object) -> LinearConfig:
    return build(LinearConfig, {
        "name": "linear", "pretrained_feature_extractor": "unused.ckpt",
        "data": {"dataset": dataset, "train_path": str(MINI / "train"),
                 "val_path": str(MINI / "test"), "augmentations": augmentations},
        "optimizer": {"name": "sgd", "batch_size": BATCH, "lr": 0.1, "weight_decay": 0.0}})


def test_main_linear_normalizes_with_the_dataset_statistics() -> None:
    assert linear_normalization(linear_config("cifar10")) == CIFAR10
    assert linear_normalization(linear_config("stl10")) == STL10
    assert linear_normalization(linear_config("imagenet")) == IMAGENET
    explicit = linear_config("cifar10", mean=[0.5] * 3, std=[0.2] * 3)
    assert linear_normalization(explicit) == ((0.5,) * 3, (0.2,) * 3)
