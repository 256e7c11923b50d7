"""The zoo manifest: which pretrained checkpoints exist, where to fetch them and their checksums.

A manifest is JSON::

    {"format": 1,
     "base_url": "https://host/solo-zoo" | null,   # where relative urls live
     "datasets": ["cifar10", ...],                  # datasets the zoo covers, even with no entry yet
     "checkpoints": [{"name": "byol-resnet18-cifar10", "method": "byol", "backbone": "resnet18",
                      "dataset": "cifar10", "linear_acc1": 92.1 | null, "knn_acc1": null,
                      "url": "byol-resnet18-cifar10.ckpt", "sha256": "<64 hex>" | null,
                      "md5": "<8 to 32 hex>" | null, "size": 123456 | null}]}

``md5`` is a prefix of the file's md5, for releases that publish only that (MoCo's README lists the
first 8 hex digits); a download is checked against every checksum its entry gives.

A relative ``url`` is joined to the base URL: ``--base-url`` / ``SOLO_ZOO_URL`` when given, else
the manifest's ``base_url``. A mirror override also redirects absolute urls, keeping their file
name, since a mirror serves the same files under another address.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from solo.utils.registry import did_you_mean

DEFAULT_MANIFEST = Path(__file__).with_name("manifest.json")
URL_VARIABLE = "SOLO_ZOO_URL"  # mirror / base URL override
MANIFEST_VARIABLE = "SOLO_ZOO_MANIFEST"  # a manifest of one's own instead of the shipped one
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MD5_PREFIX = re.compile(r"^[0-9a-f]{8,32}$")  # fewer than 8 digits would hardly check anything


class ManifestError(ValueError):
    """A manifest that is malformed, or a name / dataset it does not list."""


@dataclass(frozen=True)
class ZooEntry:
    """One published checkpoint."""

    name: str
    method: str
    backbone: str
    dataset: str
    url: str  # absolute (http, https, file) or relative to the base URL
    sha256: str | None = None  # None: not known, the download is not verified by it
    md5: str | None = None  # a prefix of the file's md5, where only that is published
    size: int | None = None  # bytes
    linear_acc1: float | None = None  # offline linear top-1 on the dataset's val set, %
    knn_acc1: float | None = None  # kNN top-1, %

    @property
    def filename(self) -> str:
        return os.path.basename(urlparse(self.url).path)


@dataclass
class Manifest:
    """The entries of one manifest file."""

    path: Path
    base_url: str | None
    datasets: list[str]
    entries: list[ZooEntry]

    def get(self, name: str) -> ZooEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        names = [e.name for e in self.entries]
        listed = ", ".join(names) if names else "none yet"
        raise ManifestError(f"no checkpoint '{name}' in {self.path}{did_you_mean(name, names)}; "
                            f"listed: {listed}")

    def for_dataset(self, dataset: str) -> list[ZooEntry]:
        known = sorted(set(self.datasets) | {e.dataset for e in self.entries})
        if dataset not in known:
            raise ManifestError(f"unknown dataset '{dataset}'{did_you_mean(dataset, known)}; "
                                f"{self.path} covers: {', '.join(known)}")
        entries = [e for e in self.entries if e.dataset == dataset]
        if not entries:
            raise ManifestError(
                f"no published checkpoints for {dataset} yet in {self.path}; pass --manifest FILE "
                f"(or set {MANIFEST_VARIABLE}) listing your own, and {URL_VARIABLE} / --base-url "
                "for where they are served (see zoo/README.md)")
        return entries


def _entry(raw: Any, where: str) -> ZooEntry:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where} must be an object, got {type(raw).__name__}")
    valid = [f.name for f in fields(ZooEntry)]
    for key in raw:
        if key not in valid:
            raise ManifestError(f"{where}: unknown key '{key}'{did_you_mean(key, valid)}; "
                                f"valid: {', '.join(valid)}")
    for key in ("name", "method", "backbone", "dataset", "url"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ManifestError(f"{where}: '{key}' must be a non-empty string")
    sha256 = raw.get("sha256")
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256.match(sha256)):
        raise ManifestError(f"{where}: 'sha256' must be 64 lowercase hex digits or null, "
                            f"got {sha256!r}")
    md5 = raw.get("md5")
    if md5 is not None and not (isinstance(md5, str) and _MD5_PREFIX.match(md5)):
        raise ManifestError(f"{where}: 'md5' must be 8 to 32 lowercase hex digits (a prefix of "
                            f"the md5) or null, got {md5!r}")
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise ManifestError(f"{where}: 'size' must be a byte count or null, got {size!r}")
    for key in ("linear_acc1", "knn_acc1"):
        value = raw.get(key)
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 100):
            raise ManifestError(f"{where}: '{key}' must be a percentage or null, got {value!r}")
    return ZooEntry(**raw)


def read_manifest(path: str | os.PathLike | None = None) -> Manifest:
    """Read and check ``path``, else ``$SOLO_ZOO_MANIFEST``, else the manifest shipped with solo."""
    path = Path(path or os.environ.get(MANIFEST_VARIABLE) or DEFAULT_MANIFEST)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ManifestError(f"manifest '{path}' does not exist") from err
    except json.JSONDecodeError as err:
        raise ManifestError(f"manifest '{path}' is not valid JSON: {err}") from err
    if not isinstance(raw, dict) or raw.get("format") != 1:
        raise ManifestError(f"manifest '{path}' must be an object with \"format\": 1")
    checkpoints = raw.get("checkpoints", [])
    if not isinstance(checkpoints, list):
        raise ManifestError(f"manifest '{path}': 'checkpoints' must be a list")
    entries = [_entry(item, f"manifest '{path}', checkpoints[{i}]")
               for i, item in enumerate(checkpoints)]
    for attribute in ("name", "filename"):  # downloads of one folder must not overwrite each other
        seen: set[str] = set()
        for entry in entries:
            value = getattr(entry, attribute)
            if value in seen:
                raise ManifestError(f"manifest '{path}': two checkpoints share the {attribute} "
                                    f"'{value}'")
            seen.add(value)
    datasets = raw.get("datasets", [])
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        raise ManifestError(f"manifest '{path}': 'datasets' must be a list of names")
    return Manifest(path=path, base_url=raw.get("base_url"), datasets=datasets, entries=entries)


def resolve_url(entry: ZooEntry, manifest: Manifest, base_url: str | None = None) -> str:
    """Where to fetch ``entry``: ``base_url`` (or ``$SOLO_ZOO_URL``) overrides the manifest's."""
    override = base_url or os.environ.get(URL_VARIABLE)
    if override:
        return f"{override.rstrip('/')}/{entry.filename}"
    if urlparse(entry.url).scheme:
        return entry.url
    if not manifest.base_url:
        raise ManifestError(f"'{entry.name}' has the relative url '{entry.url}' and no base URL "
                            f"is set: pass --base-url URL or set {URL_VARIABLE}")
    return f"{manifest.base_url.rstrip('/')}/{entry.url}"
