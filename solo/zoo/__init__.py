"""Pretrained checkpoints: loading any supported format, converting, and the download zoo."""

from solo.zoo.checkpoints import SOURCE_FORMATS, CheckpointError, Pretrained, load_pretrained
from solo.zoo.download import DownloadError
from solo.zoo.hub import download, load, load_entry
from solo.zoo.manifest import ManifestError, read_manifest
from solo.zoo.methods import load_method, rebuild_method

__all__ = ["SOURCE_FORMATS", "CheckpointError", "DownloadError", "ManifestError", "Pretrained",
           "download", "load", "load_entry", "load_method", "load_pretrained", "read_manifest",
           "rebuild_method"]
