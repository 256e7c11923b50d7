"""Data of linear evaluation: transforms, the labelled (sub)set of training images, cached features.

Training images get solo-learn's linear-evaluation recipe (a random resized crop, scale 0.08-1,
and a horizontal flip), optionally followed by timm's RandAugment; validation images the
deterministic transform of pretraining. ``data.fraction`` keeps a class-balanced subset, drawn
with ``data.fraction_seed``, and the run folder records which images it kept. With
``cache_features`` both splits are encoded once by the frozen backbone (validation transform, so
no augmentation) and the head trains on the stored tensors.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Optional

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torchvision.transforms import v2

from solo.config import (
    AugmentationConfig,
    Normalization,
    ProbabilityConfig,
    RandomResizedCropConfig,
    dataset_normalization,
    resolve_normalization,
)
from solo.data import build_dataset, build_transform, build_val_transform
from solo.data.datasets import check_batch_fits, dataset_targets, stratified_subset
from solo.eval.features import extract_features
from solo.eval.linear_config import LinearConfig
from solo.utils.checkpoint import write_json_atomic

SUBSET_FILE = "train_subset.json"  # in the run folder, when data.fraction keeps a subset


def normalization(cfg: LinearConfig) -> Normalization:
    """Mean and std of the config, else the dataset's statistics (as pretraining, and solo-learn)."""
    aug = cfg.data.augmentations
    return resolve_normalization(aug.mean, aug.std, dataset_normalization(cfg.data.dataset))


def train_transform(cfg: LinearConfig) -> Callable:
    """Random resized crop (scale 0.08-1) and flip, RandAugment when configured, normalization."""
    mean, std = normalization(cfg)
    recipe = AugmentationConfig(crop_size=cfg.data.crop_size,
                                rrc=RandomResizedCropConfig(enabled=True, crop_min_scale=0.08,
                                                            crop_max_scale=1.0),
                                horizontal_flip=ProbabilityConfig(prob=0.5),
                                mean=list(mean), std=list(std))
    transform = build_transform(recipe)
    if cfg.rand_augment is None:
        return transform
    from timm.data.auto_augment import rand_augment_transform

    # timm's hparams as its create_transform sets them: translations up to 45% of the crop, and
    # the mean colour (0-255) to fill the pixels that rotations and shears uncover
    hparams = {"translate_const": int(cfg.data.crop_size * 0.45),
               "img_mean": tuple(min(255, round(255 * m)) for m in mean)}
    rand_augment = rand_augment_transform(cfg.rand_augment, hparams)
    # RandAugment works on PIL images: after the crop and flip, before the conversion to a tensor
    ops = list(transform.transforms)
    at = next(i for i, op in enumerate(ops) if isinstance(op, v2.ToImage))
    return v2.Compose(ops[:at] + [rand_augment] + ops[at:])


def val_transform(cfg: LinearConfig) -> Callable:
    """The deterministic transform of pretraining's validation (and of cached features)."""
    mean, std = normalization(cfg)
    return build_val_transform(cfg.data.crop_size, mean, std, cfg.data.dataset)


def labelled_subset(dataset: Dataset, fraction: float, seed: int) -> Optional[list[int]]:
    """Positions of the training images to use, or None for all of them.

    Images without a label (target -1, e.g. STL-10's unlabelled split) are left out; with
    ``0 < fraction < 1`` the rest is reduced to ``fraction`` of every class, drawn with ``seed``.
    """
    targets = dataset_targets(dataset)
    labelled = [i for i, t in enumerate(targets) if t >= 0]
    if not labelled:
        raise ValueError("the training set holds no labelled images")
    keep = None if len(labelled) == len(targets) else labelled
    if 0 < fraction < 1:
        base = dataset if keep is None else Subset(dataset, keep)
        chosen = stratified_subset(base, fraction, seed).indices
        keep = list(chosen) if keep is None else [keep[i] for i in chosen]
    return keep


def _names(dataset: Dataset, indexes: list[int], root: str) -> Optional[list[str]]:
    """The files (or HDF5 keys) of the chosen images, relative to the data folder, when known."""
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return None
    names = [str(samples[i][0]) for i in indexes]
    if os.path.isdir(root):
        names = [os.path.relpath(name, root) for name in names]
    return names


def save_subset(path: Path, cfg: LinearConfig, dataset: Dataset, indexes: list[int]) -> None:
    """Record the chosen training images (positions and, where known, files) as JSON."""
    root = os.path.expanduser(str(cfg.data.train_path))
    write_json_atomic(path, {"fraction": cfg.data.fraction, "seed": cfg.data.fraction_seed,
                             "train_path": cfg.data.train_path, "num_images": len(indexes),
                             "indexes": indexes, "files": _names(dataset, indexes, root)})


class LinearDataModule(pl.LightningDataModule):
    """Training and validation loaders of ``(images, targets)``, or of ``(features, targets)``
    when ``cfg.cache_features`` (then ``encoder`` is the frozen backbone to extract them with).

    ``run_dir`` receives ``train_subset.json`` when ``data.fraction`` selects a subset.
    """

    def __init__(self, cfg: LinearConfig, run_dir: Path, encoder: Optional[nn.Module] = None) -> None:
        super().__init__()
        if cfg.cache_features and encoder is None:
            raise ValueError("cache_features needs the encoder that extracts the features")
        self.cfg, self.run_dir, self.encoder = cfg, Path(run_dir), encoder
        self.train_set: Optional[Dataset] = None
        self.val_set: Optional[Dataset] = None

    def _build(self, split: str, transform: Callable) -> Dataset:
        # data.fraction is applied here, with its own seed, not by build_dataset (fixed seed 0)
        data = dataclasses.replace(self.cfg.data, fraction=-1.0)
        return build_dataset(data, split, transform, indexed=False)

    def setup(self, stage: str) -> None:
        if self.train_set is not None:
            return
        cached = self.cfg.cache_features
        train = self._build("train", val_transform(self.cfg) if cached else train_transform(self.cfg))
        keep = labelled_subset(train, self.cfg.data.fraction, self.cfg.data.fraction_seed)
        if keep is not None:
            if 0 < self.cfg.data.fraction < 1 and self._is_global_zero():
                self.run_dir.mkdir(parents=True, exist_ok=True)
                save_subset(self.run_dir / SUBSET_FILE, self.cfg, train, keep)
            train = Subset(train, keep)
        val = self._build("val", val_transform(self.cfg))
        if cached:
            train, val = self._encode(train), self._encode(val)
        self.train_set, self.val_set = train, val

    def _is_global_zero(self) -> bool:
        return self.trainer is None or self.trainer.is_global_zero

    def _encode(self, dataset: Dataset) -> TensorDataset:
        assert self.encoder is not None
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        precision = str(self.cfg.trainer.get("precision", "32"))
        # extract_features runs fp32 or bf16; fp16 recipes extract in fp32 (features stay fp32)
        precision = precision if precision.startswith("bf16") else "32"
        was_training = self.encoder.training
        self.encoder.to(device).eval()
        features, targets = extract_features(self.encoder, self._loader(dataset, train=False),
                                             device, precision)
        self.encoder.train(was_training)
        # inference-mode tensors cannot be saved for backward: clone them into normal tensors
        return TensorDataset(features.clone(), targets.clone())

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        tensors = isinstance(dataset, TensorDataset)
        workers = 0 if tensors else self.cfg.data.num_workers  # tensors need no worker processes
        return DataLoader(dataset, batch_size=self.cfg.optimizer.batch_size, shuffle=train,
                          # mixup pairs images within a batch and BN in training mode fails on a
                          # batch of one: full training batches for those; else every image counts
                          drop_last=train and (self.cfg.mixes or self.cfg.finetune),
                          num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=torch.cuda.is_available() and not tensors)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "setup() builds the datasets"
        if self.cfg.mixes or self.cfg.finetune:  # full batches only (see _loader)
            world_size = self.trainer.world_size if self.trainer is not None else 1
            check_batch_fits(len(self.train_set), self.cfg.optimizer.batch_size, world_size,
                             self.cfg.data.train_path)
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "setup() builds the datasets"
        return self._loader(self.val_set, train=False)

    def sizes(self) -> dict[str, Any]:
        """Numbers of training and validation items, for reports."""
        return {"train_images": len(self.train_set or []), "val_images": len(self.val_set or [])}
