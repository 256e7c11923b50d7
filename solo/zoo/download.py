"""Fetching a file over HTTP(S) or file:// with resume, a progress bar and checksum checks.

The bytes go to ``<file>.part``; an interrupted download continues from there with an HTTP Range
request. Only a complete file whose checksums match (a sha256, and / or a published prefix of its
md5) is renamed to its final name, so the final path never holds a partial or corrupt file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse
from urllib.request import url2pathname

CHUNK = 1 << 20
TIMEOUT_S = 60


class DownloadError(RuntimeError):
    """A download that failed or did not verify; the message says which URL and why."""


def _digest(path: str | os.PathLike, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    return _digest(path, "sha256")


def md5_of(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in chunks (only to compare with a published md5)."""
    return _digest(path, "md5")


def checksum_mismatch(path: Path, sha256: str | None, md5: str | None) -> str | None:
    """What does not match in ``path`` (``sha256`` in full, ``md5`` as a prefix), or None."""
    if sha256 is not None:
        got = sha256_of(path)
        if got != sha256:
            return f"sha256 mismatch (expected {sha256}, got {got})"
    if md5 is not None:
        got = md5_of(path)
        if not got.startswith(md5):
            return f"md5 mismatch (expected a digest starting with {md5}, got {got})"
    return None


def _progress(total: int | None, initial: int, name: str, enabled: bool):
    from tqdm import tqdm  # installed with lightning

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, file=sys.stderr, disable=not enabled)


def _copy(source: BinaryIO, target: BinaryIO, total: int | None, initial: int, name: str,
          progress: bool) -> None:
    with _progress(total, initial, name, progress) as bar:
        for block in iter(lambda: source.read(CHUNK), b""):
            target.write(block)
            bar.update(len(block))


def _fetch_to_part(url: str, part: Path, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (from its current size)."""
    offset = part.stat().st_size if part.exists() else 0
    scheme = urlparse(url).scheme
    if scheme == "file":
        source_path = Path(url2pathname(urlparse(url).path))
        if not source_path.is_file():
            raise DownloadError(f"{url}: '{source_path}' does not exist")
        total = source_path.stat().st_size
        offset = offset if offset <= total else 0
        with open(source_path, "rb") as source, open(part, "r+b" if offset else "wb") as target:
            source.seek(offset)
            target.seek(offset)
            target.truncate()
            _copy(source, target, total, offset, part.stem, progress)
        return
    if scheme not in ("http", "https"):
        raise DownloadError(f"cannot download '{url}': only http, https and file URLs are supported")
    request = urllib.request.Request(url, headers={"User-Agent": "solo-zoo"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the part is already whole (or longer than the file)
            return
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise DownloadError(f"cannot reach {url}: {err.reason}") from err
    with response:
        resumed = offset and response.status == 206
        length = response.headers.get("Content-Length")
        total = int(length) + (offset if resumed else 0) if length is not None else None
        start = offset if resumed else 0  # a server that ignores Range sends the whole file
        with open(part, "r+b" if start else "wb") as target:
            target.seek(start)
            target.truncate()
            try:
                _copy(response, target, total, start, part.stem, progress)
            except (http.client.IncompleteRead, ConnectionError, TimeoutError) as err:
                target.flush()  # what arrived stays in the .part file for the next run
                raise DownloadError(f"{url}: the download broke off after {target.tell()} of "
                                    f"{total or '?'} bytes ({err!r}); run again to resume") from err
        if total is not None and part.stat().st_size != total:
            raise DownloadError(f"{url}: the download broke off after {part.stat().st_size} of "
                                f"{total} bytes; run again to resume")


def fetch(url: str, dest: str | os.PathLike, sha256: str | None = None, size: int | None = None,
          progress: bool = True, md5: str | None = None) -> Path:
    """Download ``url`` to ``dest`` unless a verified copy is there; returns ``dest``.

    ``md5`` is a prefix of the file's md5 (as MoCo publishes it). A checksum mismatch deletes the
    download and raises ``DownloadError``; an existing ``dest`` is only replaced by a new file that
    verified.
    """
    dest = Path(dest)
    if dest.is_file() and checksum_mismatch(dest, sha256, md5) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if size is not None and part.exists() and part.stat().st_size > size:
        part.unlink()  # longer than the file can be: not a prefix of it
    _fetch_to_part(url, part, progress)
    if size is not None and part.stat().st_size != size:
        got = part.stat().st_size
        part.unlink()
        raise DownloadError(f"{url}: got {got} bytes, the manifest says {size}; the download was "
                            "deleted")
    mismatch = checksum_mismatch(part, sha256, md5)
    if mismatch is not None:
        part.unlink()
        raise DownloadError(f"{url}: {mismatch}; the download was deleted. The file on the "
                            "server (or a mirror) differs from the published one")
    with open(part, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(part, dest)
    return dest
