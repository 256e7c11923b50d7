"""Heads, the online linear probe, the weighted kNN classifier and the feature queue."""

from solo.nn.heads import mlp
from solo.nn.knn import WeightedKNN
from solo.nn.probe import OnlineProbe
from solo.nn.queue import FeatureQueue

__all__ = ["mlp", "FeatureQueue", "WeightedKNN", "OnlineProbe"]
