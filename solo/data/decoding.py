"""Reading one image file as 8-bit RGB, and what happens to a file that cannot be read.

Any mode PIL opens becomes RGB: grayscale, palette, CMYK, RGBA (the alpha channel is dropped, as
``convert("RGB")`` and torchvision's decoders do), and 16-bit grayscale, scaled to 8 bits
(PIL's own conversion clips every value above 255 to white). A file that PIL cannot decode (a
truncated JPEG, a text file named .jpg) raises ``UnreadableImageError``, one line naming the file;
with ``data.skip_corrupt`` the dataset is wrapped in ``SkipUnreadable``, which serves the next
readable item instead and reports the file (a warning, and a line in the file named by
``SKIPPED_FILES_VARIABLE``: main_pretrain.py points it at ``<run folder>/skipped_files.txt``).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from solo.utils.schema import ConfigError

SKIPPED_FILES = "skipped_files.txt"
SKIPPED_FILES_VARIABLE = "SOLO_SKIPPED_FILES"  # inherited by data loader workers and DDP ranks
# unreadable items in a row after which the data, not a few files, is taken to be wrong
MAX_CONSECUTIVE_SKIPS = 64
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class UnreadableImageError(ConfigError):
    """An image file that cannot be decoded; the message names the file and what to do."""

    def __init__(self, message: str, path: str = "", reason: str = "") -> None:
        # a DataLoader worker's error is rebuilt in the main process as this type, from the text
        # of the worker's whole traceback: keep only its last line, the one naming the file
        if "Original Traceback" in message:
            message = message.rstrip().rsplit(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)
        self.path, self.reason = path, reason

    @classmethod
    def of(cls, path: str, error: BaseException) -> "UnreadableImageError":
        if isinstance(error, UnidentifiedImageError):  # its text names the file object, not path
            reason = "not an image: PIL recognizes no image format in it"
        else:
            reason = " ".join(f"{type(error).__name__}: {error}".split())  # one line
        return cls(f"unreadable image '{path}' ({reason}); replace or delete the file, or set "
                   "++data.skip_corrupt=true to skip unreadable images", path, reason)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB; 16-bit grayscale is scaled (65535 -> 255), not clipped."""
    if image.mode in SIXTEEN_BIT_MODES:
        # mode "I" (32-bit integers) is how PIL opens some 16-bit PNGs: read as 16-bit too
        pixels = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        gray = ((pixels * 255 + 32767) // 65535).astype(np.uint8)  # rounded x / 257
        return Image.fromarray(gray).convert("RGB")  # (H, W) uint8: mode L
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL asks for this step: palette transparency in bytes
    return image if image.mode == "RGB" else image.convert("RGB")


def open_rgb(source: Union[str, BinaryIO], name: str) -> Image.Image:
    """Decode ``source`` (a path or an open binary file) fully, as RGB; ``name`` is the file
    the error names."""
    try:
        with Image.open(source) as image:
            image.load()  # PIL opens lazily: a truncated file fails here, not in a transform
            return to_rgb(image)
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
        raise UnreadableImageError.of(name, error) from None


def load_rgb(path: str) -> Image.Image:
    """The image file at ``path`` as RGB (see ``to_rgb``), or an UnreadableImageError."""
    return open_rgb(path, path)


# ----------------------------------------------------------------------------------------------
# data.skip_corrupt
# ----------------------------------------------------------------------------------------------
_reported: set[tuple[str, str]] = set()  # (list, file) pairs this process has reported


def report_skipped(path: str, reason: str) -> None:
    """Warn once per process about a skipped file and add it to the skipped-files list."""
    listing = os.environ.get(SKIPPED_FILES_VARIABLE, "")
    if (listing, path) in _reported:
        return
    _reported.add((listing, path))
    warnings.warn(f"data.skip_corrupt: skipped unreadable image '{path}' ({reason})", stacklevel=2)
    if listing:
        os.makedirs(os.path.dirname(listing) or ".", exist_ok=True)
        with open(listing, "a") as f:  # one short append per line: processes do not interleave
            f.write(f"{path}\t{reason}\n")


def skipped_files(listing: str) -> list[str]:
    """The files of a skipped-files list, once each, in the order first met."""
    if not os.path.isfile(listing):
        return []
    with open(listing) as f:
        return list(dict.fromkeys(line.split("\t", 1)[0] for line in f if line.strip()))


def finish_skipped_list(listing: str) -> int:
    """Rewrite the list with each file once (several workers may have met one file) and warn
    how many were skipped; returns that number."""
    if not os.path.isfile(listing):
        return 0
    with open(listing) as f:
        lines = list(dict.fromkeys(line for line in f if line.strip()))
    with open(listing, "w") as f:
        f.writelines(lines)
    warnings.warn(f"data.skip_corrupt: {len(lines)} unreadable images were skipped; they are "
                  f"listed in {listing}", stacklevel=2)
    return len(lines)


class SkipUnreadable(Dataset):
    """``dataset`` with every unreadable item replaced by the next readable one (wrapping
    around): the same items every epoch, and full batches. Attributes (``targets``, ``samples``,
    ``classes``) are the wrapped dataset's."""

    def __init__(self, dataset: Dataset, key: str) -> None:
        self.dataset, self.key = dataset, key

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        size, last = len(self.dataset), ""
        tries = min(size, MAX_CONSECUTIVE_SKIPS)
        for step in range(tries):
            try:
                return self.dataset[(index + step) % size]
            except UnreadableImageError as error:
                report_skipped(error.path, error.reason)
                last = error.path
        raise ConfigError(f"{self.key}: {tries} unreadable images in a row from item {index} on "
                          f"(the last: '{last}'); check that the path holds images")
