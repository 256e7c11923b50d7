"""Heads, normalization layers, the online linear probe, the weighted kNN classifier and the
feature queue."""

from solo.nn.dino_head import DINOHead
from solo.nn.heads import mlp
from solo.nn.iternorm import IterNorm
from solo.nn.knn import WeightedKNN
from solo.nn.mae import MAEDecoder, encode_visible, random_masking
from solo.nn.local_norm import LocalBatchNorm1d
from solo.nn.probe import OnlineProbe
from solo.nn.prototypes import Prototypes
from solo.nn.queue import FeatureQueue, nearest_neighbours
from solo.nn.split_batchnorm import SplitBatchNorm2d, convert_split_batchnorm

__all__ = ["mlp", "DINOHead",
           "IterNorm", "SplitBatchNorm2d", "convert_split_batchnorm", "FeatureQueue",
           "nearest_neighbours", "WeightedKNN", "OnlineProbe",
           "MAEDecoder", "encode_visible", "random_masking", "LocalBatchNorm1d", "Prototypes"]
