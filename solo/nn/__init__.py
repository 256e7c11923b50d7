"""Heads, the online linear probe and the weighted kNN classifier."""

from solo.nn.heads import mlp
from solo.nn.knn import WeightedKNN
from solo.nn.probe import OnlineProbe

__all__ = ["mlp", "WeightedKNN", "OnlineProbe"]
