"""Offline weighted kNN over a grid of k, temperatures and distances, and the table it prints.

For each distance one similarity pass finds the largest k's neighbours of every query; each smaller
k takes the first columns of that sorted top-k and each temperature only re-weights it, so a grid
of 4 k x 8 temperatures costs one similarity matrix per distance, not 32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from solo.eval.clustering import ClusteringScores, clustering_scores, kmeans
from solo.eval.eval_config import DISTANCES, ClusteringConfig, KnnConfig
from solo.eval.features import (
    build_loader,
    eval_transform,
    extract_features,
    load_checkpoint,
    load_projector,
    pick_device,
    project,
)
from solo.nn.knn import prepare_bank, similarity, vote


@dataclass(frozen=True)
class KnnRow:
    """One line of the table: accuracies in [0, 1]. Euclidean votes use no temperature (None)."""

    feature: str
    distance: str
    k: int
    temperature: Optional[float]
    acc1: float
    acc5: float


@torch.no_grad()
def knn_sweep(bank: Tensor, bank_targets: Tensor, queries: Tensor, query_targets: Tensor,
              ks: Sequence[int], temperatures: Sequence[float], distances: Sequence[str],
              num_classes: int | None = None, feature: str = "backbone",
              device: torch.device | str | None = None, chunk_size: int = 1024) -> list[KnnRow]:
    """Weighted-kNN acc@1/acc@5 of every query for every (distance, k, temperature); euclidean
    votes (1 / (d + 1e-5)) have no temperature, so they give one row per k.

    ``bank`` (N, F) and ``queries`` (Q, F) are the training and evaluation features. The work runs
    on ``device`` (default: the bank's) in float32; ``chunk_size`` queries at a time bound memory
    to ``chunk_size x N`` similarities.
    """
    for distance in distances:
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got '{distance}'")
    if not ks or min(ks) < 1:
        raise ValueError(f"k needs values >= 1, got {list(ks)}")
    if not temperatures or min(temperatures) <= 0:
        raise ValueError(f"temperature needs values > 0, got {list(temperatures)}")
    if len(bank) == 0 or len(queries) == 0:
        raise ValueError(f"need a non-empty bank and queries, got {len(bank)} and {len(queries)}")
    # repeated values would count their hits twice
    ks, temperatures = list(dict.fromkeys(ks)), list(dict.fromkeys(temperatures))
    distances = list(dict.fromkeys(distances))
    if bank.shape[1] != queries.shape[1]:
        raise ValueError(f"bank and queries differ in feature size: {bank.shape} vs {queries.shape}")
    device = torch.device(device) if device is not None else bank.device
    bank, bank_targets = bank.to(device).float(), bank_targets.to(device).long()
    num_classes = num_classes or int(max(bank_targets.max(), query_targets.max())) + 1
    top = min(5, num_classes)
    largest_k = min(max(ks), len(bank))

    # hits[(distance, k, T)] = [acc@1 hits, acc@5 hits], summed over query chunks
    hits: dict[tuple[str, int, Optional[float]], list[int]] = {}
    for distance in distances:
        prepared = prepare_bank(bank, distance)
        for chunk, targets in zip(queries.split(chunk_size), query_targets.split(chunk_size)):
            chunk, targets = chunk.to(device).float(), targets.to(device).long()
            sim, idx = similarity(chunk, prepared, distance).topk(largest_k, dim=1)  # (q, k_max)
            neighbour_targets = bank_targets[idx]
            for k in ks:
                k_used = min(k, largest_k)
                for temperature in (temperatures if distance == "cosine" else [None]):
                    scores = vote(sim[:, :k_used], neighbour_targets[:, :k_used], num_classes,
                                  distance, temperature)
                    correct = scores.topk(top, dim=1).indices.eq(targets.unsqueeze(1))
                    counts = hits.setdefault((distance, k, temperature), [0, 0])
                    counts[0] += int(correct[:, 0].sum())
                    counts[1] += int(correct.any(dim=1).sum())
    total = len(queries)
    return [KnnRow(feature, distance, k, temperature, acc1 / total, acc5 / total)
            for (distance, k, temperature), (acc1, acc5) in hits.items()]


def format_table(rows: Sequence[KnnRow]) -> str:
    """A fixed-width text table, one row per setting, accuracies in percent."""
    header = f"{'feature':<10} {'distance':<10} {'k':>5} {'T':>6} {'acc@1':>7} {'acc@5':>7}"
    lines = [header, "-" * len(header)]
    for row in rows:
        temperature = "-" if row.temperature is None else f"{row.temperature:g}"
        lines.append(f"{row.feature:<10} {row.distance:<10} {row.k:>5} {temperature:>6} "
                     f"{100 * row.acc1:>7.2f} {100 * row.acc5:>7.2f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# main_knn.py's whole evaluation
# ----------------------------------------------------------------------------------------------
@dataclass
class KnnReport:
    checkpoint: str
    device: str
    num_bank: int  # training images: the neighbours
    num_queries: int  # evaluation images: classified
    rows: list[KnnRow] = field(default_factory=list)
    clustering: dict[str, ClusteringScores] = field(default_factory=dict)  # by feature type

    def format(self) -> str:
        lines = [f"checkpoint: {self.checkpoint}",
                 f"kNN of {self.num_queries} evaluation images against {self.num_bank} training "
                 f"images on {self.device}", format_table(self.rows)]
        if self.clustering:
            lines += ["", format_clustering(self.clustering)]
        return "\n".join(lines)


def format_clustering(scores: dict[str, ClusteringScores]) -> str:
    header = f"{'k-means':<10} {'NMI':>7} {'AMI':>7} {'ARI':>7} {'acc':>7}"
    lines = [header, "-" * len(header)]
    for feature, s in scores.items():
        lines.append(f"{feature:<10} {100 * s.nmi:>7.2f} {100 * s.ami:>7.2f} {100 * s.ari:>7.2f} "
                     f"{100 * s.acc:>7.2f}")
    return "\n".join(lines)


def evaluate_knn(cfg: KnnConfig) -> KnnReport:
    """Encode the training and evaluation sets with the checkpoint's backbone (and projector),
    then run the kNN grid and, when enabled, k-means on the evaluation features."""
    device = pick_device(cfg.accelerator)
    pretrained, path = load_checkpoint(cfg)
    # the projector is rebuilt before any image is read, so a checkpoint without one fails fast
    projector = load_projector(pretrained).to(device) if "projector" in cfg.feature_type else None
    transform = eval_transform(cfg.data, pretrained.cfg)
    backbone = pretrained.backbone.to(device).eval()
    encoded = {}
    # the bank is the labelled training images: STL-10's unlabelled ones are never read
    for split in ("bank", "val"):
        loader = build_loader(cfg.data, split, transform, cfg.batch_size, cfg.workers)
        encoded[split] = extract_features(backbone, loader, device, cfg.precision)
    (bank, bank_targets), (queries, targets) = encoded["bank"], encoded["val"]
    if (targets < 0).any():
        raise ValueError("kNN needs labelled images (class folders) in data.val_path")
    num_classes = max(cfg.data.num_classes or 0, int(bank_targets.max()) + 1, int(targets.max()) + 1)

    report = KnnReport(str(path), str(device), len(bank), len(queries))
    for feature in cfg.feature_type:
        if feature == "projector":
            assert projector is not None
            bank_f = project(projector, bank, device, cfg.precision)
            queries_f = project(projector, queries, device, cfg.precision)
        else:
            bank_f, queries_f = bank, queries
        report.rows += knn_sweep(bank_f, bank_targets, queries_f, targets, cfg.k, cfg.temperature,
                                 cfg.distance_function, num_classes, feature=feature, device=device)
        if cfg.clustering.enabled:
            report.clustering[feature] = cluster_features(queries_f, targets, cfg.clustering,
                                                          num_classes, device)
    return report


def cluster_features(features: Tensor, targets: Tensor, cfg: ClusteringConfig, num_classes: int,
                     device: torch.device) -> ClusteringScores:
    """k-means of ``features`` on ``device`` (one cluster per class unless configured), or with
    ``assign: argmax`` each row's largest feature (a class head's prediction), scored against
    ``targets``."""
    if cfg.assign == "argmax":
        return clustering_scores(features.argmax(dim=1), targets)
    x = features.to(device)
    if cfg.l2_normalize:
        x = F.normalize(x, dim=1)
    result = kmeans(x, cfg.num_clusters or num_classes, cfg.num_restarts, cfg.max_iters,
                    seed=cfg.seed)
    return clustering_scores(result.assignments, targets)
