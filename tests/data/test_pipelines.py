"""The CPU pipeline on real CIFAR-10 images delivers the batch contract of solo.data.pipelines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule

from solo.config import ConfigError, ExperimentConfig, build
from solo.data import PIPELINES, CPUPipeline, build_pipeline

MINI = Path(__file__).resolve().parents[2] / "data" / "cifar10-mini"
BATCH = 24


def experiment(**overrides: dict) -> ExperimentConfig:
    raw = {
        "name": "pipeline-test",
        "method": "simclr",
        "augmentations": [
            {"crop_size": 32, "num_crops": 2, "color_jitter": {"prob": 0.8, "brightness": 0.4},
             "grayscale": {"prob": 0.2}, "horizontal_flip": {"prob": 0.5}},
            {"crop_size": 16, "num_crops": 3},
        ],
        "optimizer": {"name": "lars", "batch_size": BATCH, "lr": 0.3, "weight_decay": 1e-4},
        "data": {"dataset": "cifar10", "train_path": str(MINI / "train"),
                 "val_path": str(MINI / "test"), "num_workers": 0},
    }
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return build(ExperimentConfig, raw)


def test_train_batch_contract() -> None:
    cfg = experiment()
    pipeline = build_pipeline(cfg)
    assert isinstance(pipeline, CPUPipeline) and isinstance(pipeline, LightningDataModule)
    loader = pipeline.train_dataloader()
    assert len(loader) == 2000 // BATCH  # drop_last: no short batch

    indexes, crops, targets = next(iter(loader))
    assert indexes.shape == (BATCH,) and indexes.dtype == torch.int64
    assert len(set(indexes.tolist())) == BATCH and 0 <= indexes.min() and indexes.max() < 2000
    assert len(crops) == cfg.num_large_crops + cfg.num_small_crops == 5
    assert [tuple(c.shape) for c in crops] == [(BATCH, 3, 32, 32)] * 2 + [(BATCH, 3, 16, 16)] * 3
    assert all(c.dtype == torch.float32 for c in crops)
    # the targets are those of the images at the indexes
    dataset_targets = loader.dataset.dataset.targets
    assert targets.dtype == torch.int64
    assert targets.tolist() == [dataset_targets[i] for i in indexes.tolist()]


def test_train_batches_are_shuffled() -> None:
    loader = build_pipeline(experiment()).train_dataloader()
    indexes, _, _ = next(iter(loader))
    assert indexes.tolist() != list(range(BATCH))


def test_val_loaders() -> None:
    (val,) = build_pipeline(experiment()).val_dataloader()
    images, targets = next(iter(val))
    assert images.shape == (BATCH, 3, 32, 32) and images.dtype == torch.float32
    assert targets.tolist() == [0] * BATCH  # not shuffled: the first class comes first
    assert len(val.dataset) == 1000

    val, bank = build_pipeline(experiment(knn_eval={"enabled": True})).val_dataloader()
    assert len(bank.dataset) == 2000  # the training set, seen through the validation transform
    images, targets = next(iter(bank))
    assert images.shape == (BATCH, 3, 32, 32) and targets.tolist() == [0] * BATCH
    again, _ = next(iter(bank))
    assert torch.equal(images, again)  # deterministic, unlike the training views


def test_no_validation() -> None:
    assert build_pipeline(experiment(data={"val_path": None})).val_dataloader() == []
    assert build_pipeline(experiment(no_validation=True)).val_dataloader() == []


def test_with_worker_processes() -> None:
    cfg = experiment(data={"num_workers": 2, "fraction": 0.1})
    loader = build_pipeline(cfg).train_dataloader()
    assert loader.persistent_workers and len(loader) == 200 // BATCH
    seen = torch.cat([indexes for indexes, _, _ in loader])
    assert len(set(seen.tolist())) == len(seen) == 200 // BATCH * BATCH


def test_unknown_pipeline() -> None:
    assert "cpu" in PIPELINES
    with pytest.raises(ConfigError, match=r"data\.pipeline: unknown pipeline 'cpuu'.*\"cpu\""):
        build_pipeline(experiment(data={"pipeline": "cpuu"}))


def test_auto_pipeline_resolves_by_device_and_format() -> None:
    from solo.data.pipelines import GPU_PIPELINE_BY_DEFAULT, resolve_pipeline

    # the device pipeline is the default on a GPU only once gpu_check.sh has passed on one
    expected = "gpu" if torch.cuda.is_available() and GPU_PIPELINE_BY_DEFAULT else "cpu"
    assert experiment().data.pipeline == "auto"
    assert resolve_pipeline(experiment()) == expected
    on_cpu = experiment()
    on_cpu.trainer["accelerator"] = "cpu"
    assert resolve_pipeline(on_cpu) == "cpu"  # a CPU run on a GPU machine
    assert resolve_pipeline(experiment(data={"format": "dali"})) == "dali"
    assert resolve_pipeline(experiment(data={"pipeline": "gpu"})) == "gpu"
    imagenet = experiment(data={"dataset": "imagenet100"})  # large images: streamed only if asked
    assert resolve_pipeline(imagenet) == "cpu"
