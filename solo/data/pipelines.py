"""Data pipelines: where the views are made. Each is a LightningDataModule built from the config.

The batch contract, the same for every pipeline, so that methods never depend on one:

- training batches reaching the model are ``(indexes, crops, targets)``:
  ``indexes`` (B,) int64, each image's position in the training set (SSL losses match the crops of
  one image by it); ``crops`` a list of (B, 3, H, W) float tensors, normalized, the
  ``cfg.num_large_crops`` large crops first, then the ``cfg.num_small_crops`` small ones;
  ``targets`` (B,) int64, -1 for unlabelled images.
- validation batches are ``(images, targets)``. ``val_dataloader`` returns a list: loader 0 is the
  validation set; loader 1, only when ``knn_eval.enabled``, is the training set with the validation
  transform, the kNN classifier's feature bank (its labelled images only). The list is empty
  when there is no ``val_path`` or ``no_validation`` is set.

A GPU pipeline may load uint8 images and make the views in ``on_after_batch_transfer`` (a
LightningDataModule hook that runs on the device), delivering the same contract.
"""

from __future__ import annotations

from typing import Callable

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from solo.config import ConfigError, ExperimentConfig
from solo.data.augmentations import CIFAR_LIKE, MultiCropTransform, build_val_transform
from solo.data.datasets import build_dataset, check_batch_fits, check_format
from solo.data.epochs import EpochSampler, ResumableData
from solo.utils.registry import Registry, UnknownNameError

PIPELINES: Registry[Callable[[ExperimentConfig], LightningDataModule]] = Registry("pipeline")


@PIPELINES.register("cpu")
class CPUPipeline(ResumableData, LightningDataModule):
    """Decodes and augments on the CPU, in the data loader's worker processes. The training order
    is the epoch's permutation split by rank (solo.data.epochs.EpochSampler) and every image's
    views are drawn from a seed of its own, so a resumed run continues the epoch exactly."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        first = cfg.augmentations[0]
        mean, std = first.normalization
        self.val_transform = build_val_transform(first.crop_size, mean, std, cfg.data.dataset)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        workers = self.cfg.data.num_workers
        sampler = None
        if train:
            trainer = self.trainer
            rank, world = ((trainer.global_rank, trainer.world_size) if trainer is not None
                           else (0, 1))
            sampler = EpochSampler(dataset, self.cfg.optimizer.batch_size, self.cfg.seed, rank,
                                   world, self.current_epoch, self.take_start)
        return DataLoader(
            dataset,
            batch_size=self.cfg.optimizer.batch_size,
            sampler=sampler,
            drop_last=train,  # every step sees a full batch: batch statistics and losses assume B
            num_workers=workers,
            persistent_workers=workers > 0,  # no worker restart (and dataset reload) each epoch
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        dataset = build_dataset(self.cfg.data, "train", MultiCropTransform(self.cfg.augmentations))
        world_size = self.trainer.world_size if self.trainer is not None else 1
        check_batch_fits(len(dataset), self.cfg.optimizer.batch_size, world_size,
                         self.cfg.data.train_path)
        return self._loader(dataset, train=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(build_dataset(self.cfg.data, split, self.val_transform, indexed=False),
                             train=False) for split in validation_splits(self.cfg)]


def validation_splits(cfg: ExperimentConfig) -> list[str]:
    """The splits behind the validation loaders of the contract, in order: "val", then "bank"
    (the labelled training images, read with the validation transform) as the kNN bank when kNN
    is on, unless ``knn_eval.bank_from_training`` takes the bank from the training steps; none
    without a ``val_path`` or with ``no_validation``."""
    if not cfg.data.val_path or cfg.no_validation:
        return []
    bank_pass = cfg.knn_eval.enabled and not cfg.knn_eval.bank_from_training
    return ["val", "bank"] if bank_pass else ["val"]


# Whether "auto" picks the device pipeline for CIFAR and STL-10 on a GPU. Off until
# scripts/benchmark/gpu_check.sh has passed on a real GPU with its figures in hand: no line of the
# gpu pipeline has run on one yet. data.pipeline: gpu selects it by name meanwhile.
GPU_PIPELINE_BY_DEFAULT = False


def resolve_pipeline(cfg: ExperimentConfig) -> str:
    """``data.pipeline``, with "auto" made concrete: DALI for format 'dali'; the device pipeline
    for small-image datasets (CIFAR, STL-10), kept whole on the GPU, when training runs on one and
    ``GPU_PIPELINE_BY_DEFAULT`` is set; the CPU pipeline otherwise."""
    name = cfg.data.pipeline
    if cfg.data.format == "dali" and name in ("auto", "cpu"):
        return "dali"  # format 'dali' with a default pipeline: NVIDIA DALI reads the files
    if name != "auto":
        return name
    accelerator = cfg.trainer.get("accelerator", "auto")
    on_gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    device_pipeline = GPU_PIPELINE_BY_DEFAULT and on_gpu and cfg.data.dataset in CIFAR_LIKE
    return "gpu" if device_pipeline else "cpu"


def build_pipeline(cfg: ExperimentConfig) -> LightningDataModule:
    """The pipeline named by ``cfg.data.pipeline``."""
    check_format(cfg.data)
    name = resolve_pipeline(cfg)
    try:
        pipeline = PIPELINES.get(name)
    except UnknownNameError as error:
        raise ConfigError(f"data.pipeline: {error}") from None
    return pipeline(cfg)
