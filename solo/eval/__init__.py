"""Offline evaluation of pretrained backbones: features, kNN, clustering, UMAP."""

from solo.eval.features import extract_features, pick_device

__all__ = ["extract_features", "pick_device"]
