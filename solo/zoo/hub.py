"""Named checkpoints from the manifest: download (verified) and load as a ready backbone."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from solo.zoo.checkpoints import Pretrained, load_pretrained
from solo.zoo.download import fetch
from solo.zoo.manifest import Manifest, ZooEntry, read_manifest, resolve_url

DIR_VARIABLE = "SOLO_ZOO_DIR"


def default_dir() -> Path:
    """``$SOLO_ZOO_DIR``, else ``~/.cache/solo/zoo``."""
    return Path(os.environ.get(DIR_VARIABLE) or Path.home() / ".cache" / "solo" / "zoo")


def download_entry(entry: ZooEntry, manifest: Manifest, dir: str | os.PathLike | None = None,
                   base_url: str | None = None, progress: bool = True) -> Path:
    """The verified local copy of ``entry`` in ``dir``, downloaded when missing or corrupt."""
    dest = Path(dir or default_dir()) / entry.filename
    return fetch(resolve_url(entry, manifest, base_url), dest, sha256=entry.sha256,
                 size=entry.size, progress=progress, md5=entry.md5)


def download(name: str, dir: str | os.PathLike | None = None, base_url: str | None = None,
             manifest: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Download checkpoint ``name`` of the manifest; returns its local path."""
    zoo = read_manifest(manifest)
    return download_entry(zoo.get(name), zoo, dir, base_url, progress)


def load_entry(name: str, dir: str | os.PathLike | None = None, base_url: str | None = None,
               manifest: str | os.PathLike | None = None, progress: bool = True) -> Pretrained:
    """Download (if needed) and load checkpoint ``name`` with everything its file says."""
    zoo = read_manifest(manifest)
    entry = zoo.get(name)
    path = download_entry(entry, zoo, dir, base_url, progress)
    # a downloaded file is never fully unpickled: it could run code
    return load_pretrained(path, backbone=entry.backbone, trust_pickle=False)


def load(name: str, dir: str | os.PathLike | None = None, *, base_url: str | None = None,
         manifest: str | os.PathLike | None = None, progress: bool = True) -> nn.Module:
    """The backbone of checkpoint ``name``, downloaded if missing, verified, in eval mode."""
    return load_entry(name, dir, base_url, manifest, progress).backbone
