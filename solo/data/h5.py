"""Images in one HDF5 file: a group per class, a dataset per image holding the encoded file's bytes.

One file instead of a million small ones suits shared and network file systems. Classes are the
top-level groups sorted by name (label = position); images inside a class are sorted by name and may
sit in nested groups. ``convert_image_folder_to_h5`` writes such a file from a class-folder tree.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from solo.data.decoding import open_rgb

if TYPE_CHECKING:
    import h5py


def _h5py() -> Any:
    # h5py is the optional `h5` extra: import it only when an HDF5 file is used
    try:
        import h5py
    except ImportError:
        raise ImportError("the h5 format needs h5py: pip install 'solo[h5]'") from None
    return h5py


def image_files(folder: str) -> list[str]:
    """Paths (relative to ``folder``, '/'-separated, sorted) of every image file below it."""
    found = []
    for root, _, names in os.walk(folder, followlinks=True):
        for name in names:
            if name.lower().endswith(IMG_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return sorted(found)


def convert_image_folder_to_h5(folder: str, out_file: str) -> int:
    """Write the class folders of ``folder`` (ImageFolder layout) to ``out_file``; returns the
    number of images. The encoded bytes are stored as they are, so pixels decode identically."""
    with os.scandir(folder) as entries:
        classes = sorted(entry.name for entry in entries if entry.is_dir())
    if not classes:
        raise FileNotFoundError(f"'{folder}' has no class folders to convert")
    count = 0
    with _h5py().File(out_file, "w") as f:
        for name in classes:
            group = f.create_group(name)
            for relative in image_files(os.path.join(folder, name)):
                with open(os.path.join(folder, name, relative), "rb") as image:
                    group.create_dataset(relative, data=np.frombuffer(image.read(), dtype=np.uint8))
                count += 1
    return count


def _dataset_keys(group: Any, dataset_type: type) -> list[str]:
    """Paths of every dataset below an HDF5 group, nested groups included."""
    keys: list[str] = []
    group.visititems(lambda key, obj: keys.append(key) if isinstance(obj, dataset_type) else None)
    return keys


class H5Images(Dataset):
    """``(image, target)`` from a file written by ``convert_image_folder_to_h5``."""

    def __init__(self, path: str, transform: Optional[Callable] = None) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"'{path}' is not an HDF5 file")
        self.path = path
        self.transform = transform
        self.samples: list[tuple[str, int]] = []  # (dataset path inside the file, label)
        h5py = _h5py()
        with h5py.File(path, "r") as f:
            self.classes = sorted(key for key in f if isinstance(f[key], h5py.Group))
            for label, name in enumerate(self.classes):
                keys = _dataset_keys(f[name], h5py.Dataset)
                self.samples += [(f"{name}/{key}", label) for key in sorted(keys)]
        self.targets = [label for _, label in self.samples]
        self._file: Optional["h5py.File"] = None
        self._pid: Optional[int] = None

    def _open(self) -> "h5py.File":
        # an h5py handle does not survive a fork: each data loader worker opens its own
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = _h5py().File(self.path, "r"), os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, None  # handles cannot be pickled (spawned workers)
        return state

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[object, int]:
        key, label = self.samples[index]
        encoded = self._open()[key][()].tobytes()
        image = open_rgb(io.BytesIO(encoded), f"{self.path}:{key}")
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m solo.data.h5 FOLDER OUT_FILE``: convert a class-folder tree to HDF5."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", help="ImageFolder root: one sub-folder of images per class")
    parser.add_argument("out_file", help="the .h5 file to write")
    args = parser.parse_args(argv)
    print(f"wrote {convert_image_folder_to_h5(args.folder, args.out_file)} images to {args.out_file}")


if __name__ == "__main__":
    main()
