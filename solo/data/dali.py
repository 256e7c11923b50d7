"""The DALI pipeline (``data.format: dali``): NVIDIA DALI decodes and augments the images.

On a GPU (``dali.device: gpu`` and a CUDA trainer) JPEGs are decoded by nvJPEG ("mixed") and every
op runs on the GPU; otherwise the same graph runs on the CPU, in DALI's own threads. It reads
image files only: class folders (imagenet, imagenet100, custom, and cifar10/cifar100/stl10 stored
as class folders of images) or, for custom ``no_labels`` data, every image below a folder.

Batches follow the contract of ``solo.data.pipelines``. The reader's "label" of a file is the
file's position in the training set (its index; ``dali.encode_indexes_into_labels`` is thus always
on); the loader maps it back to the class through a lookup table. NVIDIA DALI is imported only
when the pipeline is built, so ``import solo`` works without it.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Iterator, Optional

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor

from solo.config import ConfigError, DataConfig, ExperimentConfig
from solo.data.augmentations import CIFAR_LIKE, order_crop_groups
from solo.data.datasets import build_dataset, dataset_files
from solo.data.pipelines import PIPELINES, validation_splits
from solo.data.torchvision_files import STL10_FOLDER, find_folder

INSTALL_HINT = "pip install 'solo[dali]' (the nvidia-dali-cuda130 package)"
# the folders of torchvision's binary files, which DALI's decoders cannot read
TORCHVISION_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python",
                       "stl10": STL10_FOLDER}


def import_dali() -> Any:
    """The ``nvidia.dali`` module, or a ConfigError that says how to install it."""
    try:
        import nvidia.dali
    except ImportError as error:
        raise ConfigError(f"data.format 'dali' needs NVIDIA DALI, which is not installed ({error}): "
                          f"{INSTALL_HINT}; or use data.format 'image_folder'") from None
    return nvidia.dali


def check_not_empty(key: str, path: Optional[str]) -> None:
    """A set path must exist and not be an empty folder: said here, before DALI starts."""
    if not path:
        return
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise ConfigError(f"{key}: '{path}' does not exist")
    if os.path.isdir(path):
        with os.scandir(path) as entries:
            if next(entries, None) is None:
                raise ConfigError(f"{key}: '{path}' is an empty folder; point it at class folders "
                                  "of images")


def check_readable(cfg: ExperimentConfig) -> None:
    """Fail early for data that DALI's file reader cannot read, naming the alternatives."""
    data = cfg.data
    if data.format == "h5":
        raise ConfigError("data.format: 'h5' is read by the 'cpu' pipeline only; DALI reads image "
                          "files: set data.pipeline to 'cpu', or point the paths at class folders "
                          "of images with data.format 'dali'")
    if data.skip_corrupt:
        raise ConfigError("data.skip_corrupt: DALI's reader cannot skip unreadable files; use "
                          "data.pipeline 'cpu' or 'gpu' (data.format 'image_folder'), or remove "
                          "the files")
    folder_name = TORCHVISION_FOLDERS.get(data.dataset)
    for key in ("train_path", "val_path"):
        path = getattr(data, key)
        check_not_empty(f"data.{key}", path)
        if folder_name and path and find_folder(os.path.expanduser(str(path)), folder_name):
            raise ConfigError(
                f"data.{key}: '{path}' holds torchvision's binary {data.dataset} files "
                f"('{folder_name}'), which DALI cannot decode; use data.format 'image_folder' "
                "(pipeline 'cpu'), or store the images as class folders of JPEGs for DALI")
    dali = import_dali()
    from solo.data.dali_ops import equalize_op

    for i, aug in enumerate(cfg.augmentations):
        if aug.equalization.prob > 0 and equalize_op() is None:
            raise ConfigError(f"augmentations[{i}].equalization.prob: NVIDIA DALI "
                              f"{dali.__version__} has no equalize op; set it to 0, upgrade "
                              "DALI, or use data.pipeline 'cpu'")


def image_list(data: DataConfig, split: str) -> tuple[list[str], Tensor]:
    """The image files of ``split`` ("train", "val" or "bank", see ``build_dataset``) in dataset
    order, and their targets (N,) int64, -1 for unlabelled images. ``data.fraction`` applies to
    the training images, as for the CPU."""
    dataset = build_dataset(data, split, transform=None, indexed=False)
    samples = dataset_files(dataset)
    if samples is None:
        key = "data.val_path" if split == "val" else "data.train_path"
        raise ConfigError(f"{key}: DALI reads image files, but {data.dataset} here is a "
                          f"{type(dataset).__name__}; use data.format 'image_folder' (pipeline "
                          "'cpu'), or store the images as class folders")
    files = [path for path, _ in samples]
    return files, torch.tensor([target for _, target in samples], dtype=torch.int64)


class DALILoader:
    """One epoch of batches per ``iter()``, in the batch contract, from a built DALI pipeline.

    Training batches are ``(indexes, crops, targets)``, validation batches ``(images, targets)``.
    An epoch left unfinished (Lightning's sanity check stops after two batches) is drained before
    the next begins: DALI iterators cannot be reset mid-epoch.
    """

    def __init__(self, pipeline: Any, num_crops: Optional[int], targets: Tensor) -> None:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        from solo.data.dali_ops import READER

        self.train = num_crops is not None
        self.crop_names = [f"crop{i}" for i in range(num_crops)] if self.train else ["image"]
        self.targets = targets  # (N,) class of each index
        pipeline.build()
        # training drops the short last batch (every step sees B images); validation keeps it
        policy = LastBatchPolicy.DROP if self.train else LastBatchPolicy.PARTIAL
        self._iterator = DALIGenericIterator(
            [pipeline], [*self.crop_names, "index"], reader_name=READER,
            last_batch_policy=policy, auto_reset=True, prepare_first_batch=False)
        self._in_epoch = False

    def __len__(self) -> int:
        return len(self._iterator)

    @property
    def num_samples(self) -> int:
        """Images of the whole split, all shards together."""
        return len(self.targets)

    def __iter__(self) -> Iterator[tuple]:
        if self._in_epoch:
            for _ in self._epoch():  # the rest of the unfinished epoch
                pass
        self._in_epoch = True
        for (outputs,) in self._epoch():
            yield self._batch(outputs)
        self._in_epoch = False

    def _epoch(self) -> Iterator[list[dict[str, Tensor]]]:
        # next() only: iter() on a DALI iterator mid-epoch asks for a reset it refuses
        while True:
            try:
                yield next(self._iterator)
            except StopIteration:  # auto_reset has rewound the iterator to the next epoch
                return

    def _batch(self, outputs: dict[str, Tensor]) -> tuple:
        views = [outputs[name] for name in self.crop_names]
        device = views[0].device
        indexes = outputs["index"].reshape(-1).long()  # the reader's labels, (B, 1) int32
        targets = self.targets[indexes.cpu()].to(device, non_blocking=True)
        if not self.train:
            return views[0], targets
        return indexes.to(device, non_blocking=True), views, targets


@PIPELINES.register("dali")
class DALIPipeline(LightningDataModule):
    """NVIDIA DALI decodes and augments: on the GPU when ``dali.device`` is "gpu" and the trainer
    runs on CUDA, else on the CPU. Shards each epoch by the trainer's rank and world size."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        super().__init__()
        check_readable(cfg)
        self.cfg = cfg
        self.groups = order_crop_groups(cfg.augmentations)

    # placement -------------------------------------------------------------------------------
    def device_id(self) -> Optional[int]:
        """The CUDA device DALI runs on, or None for a CPU-only pipeline."""
        if self.cfg.dali.device != "gpu":
            return None
        trainer = self.trainer
        if trainer is not None:
            device = trainer.strategy.root_device
            on_gpu = device.type == "cuda"
        else:
            on_gpu = torch.cuda.is_available()
            device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else None
        if not on_gpu:
            warnings.warn("dali.device is 'gpu' but training does not run on a CUDA device; DALI "
                          "decodes and augments on the CPU (set dali.device: cpu to silence this)",
                          stacklevel=2)
            return None
        return device.index if device.index is not None else torch.cuda.current_device()

    def shard(self) -> tuple[int, int]:
        """(this process's rank, number of processes): each reads its own part of an epoch."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _run_options(self, shard_id: int, device_id: Optional[int]) -> dict:
        return {"batch_size": self.cfg.optimizer.batch_size,
                "num_threads": max(1, self.cfg.data.num_workers),
                "device_id": device_id,
                # a different stream of augmentation parameters in every process
                "seed": self.cfg.seed + shard_id}

    # loaders ---------------------------------------------------------------------------------
    def train_loader(self, shard_id: int = 0, num_shards: int = 1,
                     device_id: Optional[int] = None) -> DALILoader:
        """The training loader of one shard; ``train_dataloader`` picks the trainer's."""
        from solo.data.dali_ops import train_graph

        files, targets = image_list(self.cfg.data, "train")
        batch_size = self.cfg.optimizer.batch_size
        if len(files) // num_shards < batch_size:
            raise ConfigError(f"optimizer.batch_size: {batch_size} is more than the "
                              f"{len(files) // num_shards} training images of each of the "
                              f"{num_shards} processes; lower it")
        pipeline = train_graph(files, list(range(len(files))), self.groups, shard_id, num_shards,
                               self.cfg.seed, device_id is not None,
                               **self._run_options(shard_id, device_id))
        return DALILoader(pipeline, sum(g.num_crops for g in self.groups), targets)

    def val_loader(self, split: str, shard_id: int = 0, num_shards: int = 1,
                   device_id: Optional[int] = None) -> DALILoader:
        """``split`` ("val", or "bank" for the kNN bank) in file order, seen through the
        validation transform."""
        from solo.data.dali_ops import val_graph

        files, targets = image_list(self.cfg.data, split)
        first = self.groups[0]
        pipeline = val_graph(files, list(range(len(files))), first.crop_size,
                             self.cfg.data.dataset in CIFAR_LIKE, first.normalization, shard_id,
                             num_shards, device_id is not None,
                             **self._run_options(shard_id, device_id))
        return DALILoader(pipeline, None, targets)

    def train_dataloader(self) -> DALILoader:
        return self.train_loader(*self.shard(), device_id=self.device_id())

    def val_dataloader(self) -> list[DALILoader]:
        splits = validation_splits(self.cfg)
        if not splits:
            return []
        placement = (*self.shard(), self.device_id())
        return [self.val_loader(split, *placement) for split in splits]
