"""Readers for the files torchvision downloads for CIFAR-10/100 and STL-10.

torchvision's own dataset classes hash every file when they are built (160 MB for CIFAR, 2.6 GB for
STL-10): seconds lost per run and per data loader, and any copy that is not byte-identical to the
original release is refused. These read the same folder layouts directly.
"""

from __future__ import annotations

import bisect
import os
import pickle
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

# folder name -> (train files, test files, meta file, key of the class names, key of the labels)
CIFAR_LAYOUTS = {
    "cifar-10-batches-py": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                            "batches.meta", "label_names", "labels"),
    "cifar-100-python": (["train"], ["test"], "meta", "fine_label_names", "fine_labels"),
}
STL10_FOLDER = "stl10_binary"


class ArrayImages(Dataset):
    """``(image, target)`` from uint8 image arrays of shape (N, H, W, 3), as RGB PIL images.

    ``parts`` lets a split span several arrays (STL-10's labelled + unlabelled files) without
    copying them into one; ``channels_first_wh`` reads STL-10's (N, 3, W, H) storage order.
    """

    def __init__(self, parts: Sequence[np.ndarray], targets: Sequence[int], classes: list[str],
                 transform: Optional[Callable] = None, channels_first_wh: bool = False) -> None:
        self.parts = list(parts)
        self.offsets = list(np.cumsum([0] + [len(p) for p in self.parts]))
        self.targets = [int(t) for t in targets]
        self.classes = classes
        self.transform = transform
        self.channels_first_wh = channels_first_wh
        assert self.offsets[-1] == len(self.targets), "one target per image"

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[object, int]:
        part = bisect.bisect_right(self.offsets, index) - 1
        pixels = np.asarray(self.parts[part][index - self.offsets[part]])
        if self.channels_first_wh:
            pixels = pixels.transpose(2, 1, 0)  # (3, W, H) -> (H, W, 3)
        image = Image.fromarray(np.ascontiguousarray(pixels))
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def find_folder(path: str, name: str) -> Optional[str]:
    """``path/name`` when ``path`` holds it, ``path`` itself when it is that folder, else None."""
    if os.path.isdir(os.path.join(path, name)):
        return os.path.join(path, name)
    if os.path.basename(os.path.normpath(path)) == name and os.path.isdir(path):
        return path
    return None


def _unpickle(path: str) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")  # the files were written by Python 2


def read_cifar(folder: str, train: bool, transform: Optional[Callable] = None) -> ArrayImages:
    """CIFAR-10 or CIFAR-100 from a ``cifar-10-batches-py`` or ``cifar-100-python`` folder."""
    train_files, test_files, meta_file, names_key, labels_key = CIFAR_LAYOUTS[
        os.path.basename(os.path.normpath(folder))]
    images, targets = [], []
    for name in train_files if train else test_files:
        batch = _unpickle(os.path.join(folder, name))
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        targets.extend(batch[labels_key])
    pixels = np.ascontiguousarray(np.concatenate(images).transpose(0, 2, 3, 1))  # (N, 32, 32, 3)
    classes = list(_unpickle(os.path.join(folder, meta_file))[names_key])
    return ArrayImages([pixels], targets, classes, transform)


def _stl10_images(folder: str, name: str) -> np.ndarray:
    # memory-mapped: the unlabelled file is 2.6 GB and workers only read the images they need
    return np.memmap(os.path.join(folder, name), dtype=np.uint8, mode="r").reshape(-1, 3, 96, 96)


def read_stl10(folder: str, train: bool, transform: Optional[Callable] = None) -> ArrayImages:
    """STL-10 from an ``stl10_binary`` folder: "train+unlabeled" for training (unlabelled
    images get target -1), "test" for validation."""
    prefix = "train" if train else "test"
    parts = [_stl10_images(folder, f"{prefix}_X.bin")]
    targets = list(np.fromfile(os.path.join(folder, f"{prefix}_y.bin"), dtype=np.uint8) - 1)
    if train:
        parts.append(_stl10_images(folder, "unlabeled_X.bin"))
        targets += [-1] * len(parts[-1])
    classes: list[str] = []
    names_file = os.path.join(folder, "class_names.txt")
    if os.path.exists(names_file):
        with open(names_file) as f:
            classes = f.read().split()
    return ArrayImages(parts, targets, classes, transform, channels_first_wh=True)
