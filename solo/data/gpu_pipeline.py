"""The device pipeline (``data.pipeline: gpu``): images live on the training device and the views
of a whole batch are made there at once (solo/data/batch_augment.py).

- A dataset whose decoded images fit in ``data.resident_max_gb`` (CIFAR, STL-10, small image
  folders) is decoded once into one uint8 tensor on the device; batches are drawn from it with a
  permutation made on the device: no worker processes and no host-to-device copy per step.
- A larger image folder is streamed: worker processes only read the files' bytes, and the JPEGs of
  a batch are decoded on the device (``torchvision.io.decode_jpeg``), then cropped there.

Batches follow the contract of solo/data/pipelines.py. The same code runs on the CPU, slower, so
it is tested without a GPU. Each process reads its own share of every epoch (the permutation is
seeded by the epoch and shared by all ranks), so no DistributedSampler is involved.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Optional

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from solo.config import ConfigError, ExperimentConfig
from solo.data.augmentations import CIFAR_LIKE
from solo.data.batch_augment import BatchMultiCrop
from solo.data.batch_ops import resize_center_crop
from solo.data.datasets import build_dataset, check_batch_fits, dataset_files
from solo.data.decoding import SkipUnreadable, UnreadableImageError, report_skipped
from solo.data.device_images import (
    EncodedFiles,
    FileImages,
    collate_encoded,
    decode_all,
    decode_on_device,
    pad_batch,
    shrink_oversized,
)
from solo.data.epochs import ResumableData, Start, batches_per_epoch, epoch_order
from solo.data.pipelines import PIPELINES, validation_splits
from solo.utils.random_state import mix_seed

Batch = tuple[Tensor, ...]
GIB = 1024**3


# ----------------------------------------------------------------------------------------------
# iterables of batches (what the LightningDataModule hands to the trainer)
# ----------------------------------------------------------------------------------------------
class ResidentBatches:
    """Batches drawn from a split held on the device; ``make_batch`` turns positions and the
    batch's key (epoch, batch index in it) into a batch. ``start`` (training only) gives, once
    after a resume, the (epoch, batches already trained) to continue from."""

    def __init__(self, num_items: int, make_batch: Callable[[Tensor, tuple[int, int]], Batch],
                 batch_size: int, train: bool, seed: int, epoch: Callable[[], int], rank: int,
                 world_size: int, device: torch.device,
                 start: Callable[[], Start] = lambda: None) -> None:
        self.num_items, self.make_batch, self.batch_size = num_items, make_batch, batch_size
        self.train, self.seed, self.epoch, self.start = train, seed, epoch, start
        self.rank, self.world_size, self.device = rank, world_size, device

    @property
    def num_samples(self) -> int:
        """Items of the whole split, all processes together."""
        return self.num_items

    def __len__(self) -> int:
        return batches_per_epoch(self.num_items, self.batch_size, self.train, self.world_size)

    def __iter__(self) -> Iterator[Batch]:
        start = self.start()
        epoch, skip = start if start is not None else (self.epoch(), 0)
        order = epoch_order(self.num_items, self.train, self.train, self.seed, epoch,
                            self.rank, self.world_size, self.device)
        for step in range(skip, len(self)):
            yield self.make_batch(order[step * self.batch_size: (step + 1) * self.batch_size],
                                  (epoch, step))


class _EpochBatchSampler:
    """This process's batches of file positions, the epoch's order computed when iterated, from
    batch ``skip`` of epoch ``epoch`` as set by ``StreamedBatches`` just before."""

    def __init__(self, num_items: int, batch_size: int, train: bool, seed: int, rank: int,
                 world_size: int) -> None:
        self.num_items, self.batch_size, self.train, self.seed = num_items, batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0

    def __len__(self) -> int:
        return batches_per_epoch(self.num_items, self.batch_size, self.train, self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.num_items, self.train, self.train, self.seed, self.epoch,
                            self.rank, self.world_size, torch.device("cpu")).tolist()
        for step in range(self.skip, len(self)):
            yield order[step * self.batch_size: (step + 1) * self.batch_size]


class StreamedBatches:
    """Batches of image files read by persistent worker processes and decoded on the device;
    ``make_batch`` gets the batch's images as a list, their sizes differ. With ``skip_key``
    (data.skip_corrupt; the key of the split's path) an unreadable file is replaced by the next
    readable one, as on the CPU pipeline, but with that file's index (the CPU keeps the
    position asked for)."""

    def __init__(self, files: list[tuple[str, int]], make_batch: Callable[..., Batch],
                 batch_size: int, train: bool, seed: int, epoch: Callable[[], int], rank: int,
                 world_size: int, num_workers: int, device: torch.device,
                 skip_key: Optional[str] = None, start: Callable[[], Start] = lambda: None) -> None:
        self.make_batch, self.device, self.files = make_batch, device, files
        self.epoch, self.start = epoch, start
        self.num_samples = len(files)  # the whole split, all processes together
        self.sampler = sampler = _EpochBatchSampler(len(files), batch_size, train, seed, rank,
                                                    world_size)
        encoded, self.replacements = EncodedFiles(files), None
        if skip_key is not None:  # PIL failures are replaced in the workers, JPEG ones here
            encoded = SkipUnreadable(encoded, skip_key)
            self.replacements = SkipUnreadable(FileImages(files), skip_key)
        self.loader = DataLoader(encoded,
                                 batch_sampler=sampler, num_workers=num_workers,
                                 collate_fn=collate_encoded, persistent_workers=num_workers > 0,
                                 pin_memory=device.type == "cuda")

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        start = self.start()
        epoch, skip = start if start is not None else (self.epoch(), 0)
        self.sampler.epoch, self.sampler.skip = epoch, skip  # read when the loader iterates
        for step, (indexes, encoded, is_jpeg, targets) in enumerate(self.loader, start=skip):
            def name_of(position: int) -> str:  # read only when a file fails to decode
                return self.files[int(indexes[position])][0]

            def replace(position: int, error: UnreadableImageError) -> Tensor:
                assert self.replacements is not None
                report_skipped(error.path, error.reason)
                # the served file's index and target, as for a file the workers replaced
                indexes[position], image, targets[position] = self.replacements[
                    int(indexes[position]) + 1]
                return image

            images = decode_on_device(encoded, is_jpeg, self.device, name_of,  # sizes differ
                                      None if self.replacements is None else replace)
            yield self.make_batch(indexes.to(self.device, non_blocking=True), images,
                                  targets.to(self.device, non_blocking=True), (epoch, step))


# ----------------------------------------------------------------------------------------------
# the data module
# ----------------------------------------------------------------------------------------------
@PIPELINES.register("gpu")
class GPUPipeline(ResumableData, LightningDataModule):
    """Views made on the training device in batches; see the module docstring. The views of a
    batch are drawn with a generator seeded by (seed, epoch, batch, rank), and a resumed run
    continues the epoch's order where the checkpoint was written (solo/data/epochs.py)."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__()
        if cfg.data.format != "image_folder" and cfg.data.format != "h5":
            raise ConfigError(f"data.format: pipeline 'gpu' reads 'image_folder' or 'h5', "
                              f"not '{cfg.data.format}'")
        self.cfg = cfg
        self.multicrop = BatchMultiCrop(cfg.augmentations)
        first = cfg.augmentations[0]
        self.val_crop = first.crop_size
        # streamed images larger than this (shorter side) are shrunk before padding: still large
        # enough that the smallest random crop of any group is downsampled, never upsampled
        self.max_short_side = max(
            math.ceil(aug.crop_size / math.sqrt(aug.rrc.crop_min_scale if aug.rrc.enabled else 1))
            for aug in cfg.augmentations)
        self.mean = torch.tensor(first.normalization[0]).view(1, 3, 1, 1)
        self.std = torch.tensor(first.normalization[1]).view(1, 3, 1, 1)
        self._splits: dict[str, tuple[Tensor, Tensor] | list[tuple[str, int]]] = {}
        self.generator: Optional[torch.Generator] = None

    # -- the process's place -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _place(self) -> dict:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        epoch = (lambda: trainer.current_epoch) if trainer is not None else (lambda: 0)
        return {"seed": self.cfg.seed, "epoch": epoch, "rank": rank, "world_size": world,
                "device": self.device}

    def _augment_generator(self, key: tuple[int, int]) -> torch.Generator:
        """The views' generator, seeded for the batch ``key`` (epoch, batch index): keyed, not a
        stream, so a resumed run draws the uninterrupted run's views."""
        if self.generator is None or self.generator.device != self.device:
            self.generator = torch.Generator(self.device)
        rank = self.trainer.global_rank if self.trainer is not None else 0
        return self.generator.manual_seed(mix_seed(self.cfg.seed, 0x69B, *key, rank))

    # -- reading a split once --------------------------------------------------------------------
    def _split(self, split: str) -> tuple[Tensor, Tensor] | list[tuple[str, int]]:
        """A split kept on the device (images, targets), or its files when it is streamed. The kNN
        bank ("bank") is the labelled part of the training split, taken from it: not read twice."""
        if split == "bank" and split not in self._splits:
            train = self._split("train")
            if isinstance(train, list):
                self._splits[split] = [(path, target) for path, target in train if target >= 0]
            else:
                images, targets = train
                labelled = targets >= 0  # one host sync, once per run
                self._splits[split] = train if bool(labelled.all()) else (images[labelled],
                                                                        targets[labelled])
        if split not in self._splits:
            data = self.cfg.data
            dataset = build_dataset(data, split, None, indexed=False)
            key = "data.val_path" if split == "val" else "data.train_path"
            if self._resident(dataset):
                self._splits[split] = decode_all(dataset, data.num_workers, self.device, key)
            else:
                files = dataset_files(dataset)
                if files is None:
                    raise ConfigError(
                        f"data.format: {type(dataset).__name__} is not a folder of image files, so "
                        "data.pipeline 'gpu' cannot stream it; raise data.resident_max_gb to keep "
                        "it on the device, or use pipeline 'cpu'")
                self._splits[split] = files
        return self._splits[split]

    def _resident(self, dataset: Dataset) -> bool:
        if self.cfg.data.resident_max_gb <= 0:
            return False
        first, _ = dataset[0]
        width, height = first.size
        return len(dataset) * 3 * width * height <= self.cfg.data.resident_max_gb * GIB

    # -- batches -----------------------------------------------------------------------------------
    def _train_batch(self, indexes: Tensor, images: Tensor | list[Tensor], targets: Tensor,
                     key: tuple[int, int] = (0, 0)) -> Batch:
        sizes = None
        if isinstance(images, list):  # streamed, sizes differ: padded into one tensor
            images, sizes = pad_batch(shrink_oversized(images, self.max_short_side))
        return indexes, self.multicrop(images, sizes, self._augment_generator(key)), targets

    def _val_images(self, images: Tensor | list[Tensor]) -> Tensor:
        if self.cfg.data.dataset in CIFAR_LIKE:  # resized to the crop, as build_val_transform
            resize = lambda x: resize_center_crop(x, (self.val_crop, self.val_crop), self.val_crop)  # noqa: E731
        else:
            resize = lambda x: resize_center_crop(x, round(self.val_crop * 256 / 224), self.val_crop)  # noqa: E731
        if isinstance(images, list):  # images of different sizes: one at a time, unpadded
            views = torch.cat([resize(image[None]) for image in images])
        else:
            views = resize(images)
        views = (views / 255).clamp(0, 1)
        if self.mean.device != views.device:  # moved once, not at every batch
            self.mean, self.std = self.mean.to(views.device), self.std.to(views.device)
        return (views - self.mean) / self.std

    def _val_batch(self, indexes: Tensor, images: Tensor | list[Tensor], targets: Tensor,
                   key: tuple[int, int] = (0, 0)) -> Batch:
        return self._val_images(images), targets

    def _batches(self, split: str, make: Callable[..., Batch], train: bool):
        source = self._split(split)
        size = self.cfg.optimizer.batch_size
        place = self._place()
        resume = {"start": self.take_start} if train else {}
        if train:
            check_batch_fits(len(source) if isinstance(source, list) else len(source[0]), size,
                             place["world_size"], self.cfg.data.train_path)
        if isinstance(source, list):
            key = "data.val_path" if split == "val" else "data.train_path"
            return StreamedBatches(source, make, size, train, num_workers=self.cfg.data.num_workers,
                                   skip_key=key if self.cfg.data.skip_corrupt else None, **place,
                                   **resume)
        images, targets = source

        def from_positions(positions: Tensor, key: tuple[int, int]) -> Batch:
            return make(positions, images[positions], targets[positions], key)

        return ResidentBatches(len(images), from_positions, size, train, **place, **resume)

    def train_dataloader(self):
        return self._batches("train", self._train_batch, train=True)

    def val_dataloader(self):
        return [self._batches(split, self._val_batch, train=False)
                for split in validation_splits(self.cfg)]

