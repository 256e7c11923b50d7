"""Datasets by name (``data.dataset``) and on-disk format (``data.format``).

A builder in ``DATASETS`` returns a dataset of ``(image, target)``. ``build_dataset`` reads the
path of the split, applies ``data.fraction`` to the training set and, for training, wraps the
dataset so that its items are ``(index, views, target)``: SSL losses use the index to tell which
crops come from the same image.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision.datasets import ImageFolder

from solo.config import ConfigError, DataConfig
from solo.data.decoding import SkipUnreadable, load_rgb
from solo.data.h5 import H5Images, image_files
from solo.data.torchvision_files import STL10_FOLDER, find_folder, read_cifar, read_stl10
from solo.utils.registry import Registry

Transform = Callable[[Image.Image], Any]
# (path, train split?, transform, the data config) -> dataset of (image, target)
DatasetBuilder = Callable[[str, bool, Optional[Transform], DataConfig], Dataset]
DATASETS: Registry[DatasetBuilder] = Registry("dataset")

SPLITS = ("train", "val", "bank")


def _has_class_folders(path: str) -> bool:
    if not os.path.isdir(path):
        return False
    with os.scandir(path) as entries:
        return any(entry.is_dir() for entry in entries)


def image_folder(path: str, transform: Optional[Transform],
                 folder_class: type[ImageFolder] = ImageFolder) -> ImageFolder:
    """Class folders of images; labels are the folder names' sorted positions. An empty class
    folder is an error that names it."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"'{path}' is not a directory")
    try:
        return folder_class(path, transform=transform, loader=load_rgb)
    except FileNotFoundError:  # torchvision's message lists class names, not the folder
        with os.scandir(path) as entries:
            folders = sorted(entry.path for entry in entries if entry.is_dir())
        empty = [folder for folder in folders if not image_files(folder)]
        if not empty:
            raise
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise FileNotFoundError(f"class folder '{empty[0]}'{more} holds no image files; add "
                                "images to it or remove it") from None


class UnlabeledImages(Dataset):
    """Every image file below a folder, at any depth, each with target -1."""

    def __init__(self, path: str, transform: Optional[Transform] = None) -> None:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"'{path}' is not a directory")
        self.files = [os.path.join(path, name) for name in image_files(path)]
        if not self.files:
            raise FileNotFoundError(f"'{path}' holds no image files")
        self.targets = [-1] * len(self.files)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = load_rgb(self.files[index])
        return (self.transform(image) if self.transform else image), -1


@lru_cache(maxsize=1)
def imagenet100_classes() -> tuple[str, ...]:
    """The 100 WordNet ids of ImageNet-100 (the subset of CMC, arXiv:1906.05849)."""
    path = os.path.join(os.path.dirname(__file__), "imagenet100_classes.txt")
    with open(path) as f:
        return tuple(line.strip() for line in f if line.strip())


class ImageNet100Folder(ImageFolder):
    """ImageFolder that keeps only ImageNet-100's classes when given all of ImageNet."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes, _ = super().find_classes(directory)
        if len(classes) > 100:  # a full ImageNet folder: pick the standard subset
            wanted = set(imagenet100_classes())
            missing = sorted(wanted - set(classes))
            if missing:
                raise FileNotFoundError(f"'{directory}' has {len(classes)} class folders but lacks "
                                        f"{len(missing)} ImageNet-100 classes, e.g. {missing[:3]}")
            classes = [name for name in classes if name in wanted]
        return classes, {name: i for i, name in enumerate(classes)}


def _torchvision_files_or_folder(folder_name: str, reader: Callable) -> DatasetBuilder:
    """A dataset stored as torchvision's files (``folder_name`` in the path) or as class folders."""

    def build(path: str, train: bool, transform: Optional[Transform], data: DataConfig) -> Dataset:
        folder = find_folder(path, folder_name)
        if folder is not None:
            return reader(folder, train, transform)
        if not _has_class_folders(path):
            raise FileNotFoundError(f"'{path}' holds neither torchvision's '{folder_name}' folder "
                                    "nor class folders of images")
        return image_folder(path, transform)

    return build


DATASETS.register("cifar10")(_torchvision_files_or_folder("cifar-10-batches-py", read_cifar))
DATASETS.register("cifar100")(_torchvision_files_or_folder("cifar-100-python", read_cifar))
DATASETS.register("stl10")(_torchvision_files_or_folder(STL10_FOLDER, read_stl10))


@DATASETS.register("imagenet")
def _imagenet(path: str, train: bool, transform: Optional[Transform], data: DataConfig) -> Dataset:
    return image_folder(path, transform)


@DATASETS.register("imagenet100")
def _imagenet100(path: str, train: bool, transform: Optional[Transform],
                 data: DataConfig) -> Dataset:
    return image_folder(path, transform, ImageNet100Folder)


@DATASETS.register("custom")
def _custom(path: str, train: bool, transform: Optional[Transform], data: DataConfig) -> Dataset:
    return UnlabeledImages(path, transform) if data.no_labels else image_folder(path, transform)


def dataset_targets(dataset: Dataset) -> list[int]:
    """The label of every item, read without decoding any image."""
    if isinstance(dataset, Subset):
        targets = dataset_targets(dataset.dataset)
        return [targets[i] for i in dataset.indices]
    if not hasattr(dataset, "targets"):
        raise TypeError(f"{type(dataset).__name__} has no .targets to stratify data.fraction by")
    return [int(t) for t in dataset.targets]


def stratified_subset(dataset: Dataset, fraction: float, seed: int = 0) -> Subset:
    """``fraction`` of every class (at least one image each), drawn with a fixed seed so that
    every run and every process sees the same subset; kept in dataset order."""
    targets = np.asarray(dataset_targets(dataset))
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        count = max(1, int(round(fraction * len(members))))
        keep.extend(rng.choice(members, size=count, replace=False).tolist())
    return Subset(dataset, sorted(keep))


def dataset_files(dataset: Dataset) -> Optional[list[tuple[str, int]]]:
    """(path, target) of every item, in dataset order, through any Subset (target -1 for
    unlabelled images); None when the items are not image files (HDF5, torchvision's files)."""
    if isinstance(dataset, Subset):
        files = dataset_files(dataset.dataset)
        return None if files is None else [files[i] for i in dataset.indices]
    if isinstance(dataset, SkipUnreadable):
        return dataset_files(dataset.dataset)
    if isinstance(dataset, ImageFolder):
        return [(path, int(target)) for path, target in dataset.samples]
    if isinstance(dataset, UnlabeledImages):
        return [(path, -1) for path in dataset.files]
    return None


class seeded_torch:
    """Torch's CPU generator seeded for the block, then put back as it was: the torchvision
    transforms of solo/data/augmentations.py draw from it (and nothing else: no python
    ``random``, no numpy), so a seed per image fixes its views."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self.state = torch.default_generator.get_state()
        torch.default_generator.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        torch.default_generator.set_state(self.state)


class IndexedDataset(Dataset):
    """Training items as ``(index, views, target)``; ``index`` is the item's position here.

    A key ``(index, seed)`` (solo.data.epochs.EpochSampler's) makes the item's views with torch's
    generator seeded by ``seed``: the same views in any worker process, and in a resumed run."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[int, Any, int]:
        if isinstance(key, tuple):
            index, seed = key
            with seeded_torch(seed):
                views, target = self.dataset[index]
            return index, views, target
        views, target = self.dataset[key]
        return key, views, target


def check_format(data: DataConfig) -> None:
    """Fail early for a format that the chosen pipeline cannot read."""
    if data.format == "dali" and data.pipeline not in ("auto", "cpu", "dali"):
        # format 'dali' turns the default ("auto", or solo-learn's implied "cpu") into DALI
        raise ConfigError(f"data.format: 'dali' is read by the DALI pipeline, not by pipeline "
                          f"'{data.pipeline}'; leave data.pipeline at its default (or set 'dali'), "
                          f"or use format 'image_folder' with pipeline '{data.pipeline}'")


def check_batch_fits(num_items: int, batch_size: int, world_size: int, path: str) -> None:
    """Fail when training, which drops incomplete batches, would have no batch at all."""
    per_process = num_items // world_size
    if per_process < batch_size:
        share = f", {per_process} for each of {world_size} processes" if world_size > 1 else ""
        raise ConfigError(f"optimizer.batch_size: {batch_size} is more than the {num_items} "
                          f"training images of data.train_path '{path}'{share}, so training "
                          "would have no full batch; lower optimizer.batch_size or add images")


def labelled_items(dataset: Dataset) -> Subset:
    """The items of ``dataset`` that have a label (target >= 0), read from the targets alone."""
    targets = dataset_targets(dataset)
    return Subset(dataset, [i for i, target in enumerate(targets) if target >= 0])


def build_dataset(data: DataConfig, split: str, transform: Optional[Transform],
                  indexed: Optional[bool] = None) -> Dataset:
    """The ``split`` of ``data``, each image passed through ``transform``.

    Splits: "train" and "val"; "bank" is the labelled part of the training set, the feature bank
    that kNN votes with (STL-10's unlabelled images and custom images without labels have no
    class to vote for). Items are ``(index, views, target)`` for "train" and ``(image, target)``
    for the others; ``indexed`` overrides that. ``data.fraction`` applies to "train" and "bank".
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
    check_format(data)
    from_train = split != "val"
    key, path = (("data.train_path", data.train_path) if from_train
                 else ("data.val_path", data.val_path))
    if not path:
        raise ConfigError(f"{key} is not set")
    path = os.path.expanduser(str(path))
    try:
        if data.format == "h5":
            dataset = H5Images(path, transform)
        else:
            dataset = DATASETS.get(data.dataset)(path, from_train, transform, data)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{key}: {error}") from None
    if data.skip_corrupt:
        dataset = SkipUnreadable(dataset, key)
    if from_train and 0 < data.fraction < 1:
        dataset = stratified_subset(dataset, data.fraction)
    if split == "bank":
        dataset = labelled_items(dataset)
        if len(dataset) == 0:
            raise ConfigError(f"{key}: '{path}' holds no labelled images, so there is no kNN "
                              "bank; turn kNN off (knn_eval.enabled: False)")
    if indexed is None:
        indexed = split == "train"
    return IndexedDataset(dataset) if indexed else dataset
