"""Reading a dataset's images onto the training device: all at once (decoded by worker processes
into one uint8 tensor), or batch by batch (workers read file bytes, the device decodes JPEGs)."""

from __future__ import annotations

import io
from typing import Callable, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2.functional import pil_to_tensor, resize

from solo.config import ConfigError
from solo.data.decoding import UnreadableImageError, load_rgb, open_rgb


# ----------------------------------------------------------------------------------------------
class _Decoded(Dataset):
    """(uint8 image (3, H, W), target) of every item, decoded by the data loader's workers."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, target = self.dataset[index]
        return pil_to_tensor(image), int(target)


def _as_list(items: list) -> list:
    # a module-level function, not a lambda: workers started by spawn or forkserver pickle it
    return items


def decode_all(dataset: Dataset, num_workers: int, device: torch.device,
               key: str) -> tuple[Tensor, Tensor]:
    """Every image of ``dataset`` as one uint8 tensor (N, 3, H, W) on ``device``, with its targets.

    Decoding happens once, in parallel worker processes; all images must share one size."""
    loader = DataLoader(_Decoded(dataset), batch_size=512, num_workers=num_workers,
                        collate_fn=_as_list)
    images: Optional[Tensor] = None
    targets = torch.empty(len(dataset), dtype=torch.long)
    position = 0
    for items in loader:
        for image, target in items:
            if images is None:
                images = torch.empty((len(dataset), *image.shape), dtype=torch.uint8)
            if image.shape != images.shape[1:]:
                raise ConfigError(
                    f"{key}: data.pipeline 'gpu' keeps a dataset on the device as one tensor, so its "
                    f"images must share one size; item {position} is {tuple(image.shape[1:])}, the "
                    f"first was {tuple(images.shape[2:])}. Set data.resident_max_gb=0 to stream and "
                    "decode JPEG batches on the device instead")
            images[position] = image
            targets[position] = target
            position += 1
    if images is None:
        raise ConfigError(f"{key}: the dataset is empty")
    return images.to(device), targets.to(device)


JPEG_START = b"\xff\xd8"  # the start-of-image marker every JPEG file begins with


class EncodedFiles(Dataset):
    """(index, JPEG bytes or, for other formats, the image decoded here, target): the workers
    only read files, the device decodes. Other formats are decoded by PIL as on the CPU
    pipeline (solo.data.decoding: 16-bit images scaled, every mode made RGB)."""

    def __init__(self, files: list[tuple[str, int]]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, Tensor, bool, int]:
        path, target = self.files[index]
        try:
            with open(path, "rb") as handle:
                encoded = handle.read()
        except OSError as error:
            raise UnreadableImageError.of(path, error) from None
        if len(encoded) > 2 and encoded.startswith(JPEG_START):
            return index, torch.frombuffer(bytearray(encoded), dtype=torch.uint8), True, target
        return index, pil_to_tensor(open_rgb(io.BytesIO(encoded), path)), False, target


class FileImages(Dataset):
    """(index, uint8 image (3, H, W), target) of image files, decoded on the CPU."""

    def __init__(self, files: list[tuple[str, int]]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, Tensor, int]:
        path, target = self.files[index]
        return index, pil_to_tensor(load_rgb(path)), target


def collate_encoded(items: list[tuple[int, Tensor, bool, int]]) -> tuple[Tensor, list[Tensor],
                                                                          list[bool], Tensor]:
    """A streamed batch as (indexes, encoded or decoded images, which are JPEGs, targets), with
    the numbers as tensors built here, in the worker: the DataLoader pins them, so they reach the
    device with a non-blocking copy, not a host sync per batch."""
    indexes, encoded, is_jpeg, targets = zip(*items)
    return torch.tensor(indexes), list(encoded), list(is_jpeg), torch.tensor(targets)


# (position in the batch, the error) -> an image to use instead, for data.skip_corrupt
Replace = Callable[[int, UnreadableImageError], Tensor]


def _decode_one(data: Tensor, device: torch.device, name: str, position: int,
                replace: Optional[Replace]) -> Tensor:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        pass
    try:  # nvJPEG refuses some JPEGs that libjpeg reads (CMYK: about 22 in ImageNet)
        image = decode_jpeg(data.cpu(), mode=ImageReadMode.RGB)
    except RuntimeError as error:  # libjpeg too: a truncated or corrupt file
        unreadable = UnreadableImageError.of(name, error)
        if replace is None:
            raise unreadable from None
        image = replace(position, unreadable)
    return image.to(device, non_blocking=True)


def decode_on_device(encoded: list[Tensor], is_jpeg: list[bool], device: torch.device,
                     name_of: Callable[[int], str] = str,
                     replace: Optional[Replace] = None) -> list[Tensor]:
    """uint8 (3, H, W) images on ``device``: JPEGs decoded there in one batched call. A batch the
    device decoder refuses (one file it cannot read fails them all) is decoded file by file,
    on the CPU for the files the device refuses; a file neither can decode is an
    UnreadableImageError naming ``name_of(position in the batch)``, or, given ``replace``, is
    replaced by what it returns."""
    positions = [i for i, jpeg in enumerate(is_jpeg) if jpeg]
    jpegs = [encoded[i] for i in positions]
    try:
        decoded = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device) if jpegs else []
    except RuntimeError:
        decoded = [_decode_one(encoded[i], device, name_of(i), i, replace) for i in positions]
    images = iter(decoded)
    return [next(images) if jpeg else data.to(device, non_blocking=True)
            for data, jpeg in zip(encoded, is_jpeg)]


def shrink_oversized(images: list[Tensor], max_short_side: int) -> list[Tensor]:
    """Images whose shorter side exceeds ``max_short_side`` resized (antialiased) down to it, the
    others as they are: one huge photo would make every padded image of its batch that big."""
    return [image if min(image.shape[1:]) <= max_short_side
            else resize(image, max_short_side, antialias=True) for image in images]


def pad_batch(images: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Differently sized images zero-padded into one (B, 3, H_max, W_max) tensor, and their sizes
    (B, 2), built from the shapes the host knows and copied without a sync."""
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    batch = images[0].new_zeros(len(images), 3, height, width)
    for i, image in enumerate(images):
        batch[i, :, : image.shape[1], : image.shape[2]] = image
    sizes = torch.tensor([tuple(image.shape[1:]) for image in images])
    if batch.is_cuda:
        sizes = sizes.pin_memory()
    return batch, sizes.to(batch.device, non_blocking=True)
