"""Typed configs of ``main_knn.py`` and ``main_umap.py``.

Key names are solo-learn's (``pretrained_checkpoint_dir``, ``k``, ``temperature``,
``feature_type``, ``distance_function``, ``batch_size``, ``num_workers``) plus the ``data`` section
of the other entry points. As everywhere in solo, an unknown key fails naming the closest valid
one and a missing or impossible value fails naming the key, before any image is read.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from solo.config import KNN_DISTANCES, NUM_CLASSES, DataConfig
from solo.eval.linear_config import LinearAugmentationsConfig, LinearBackboneConfig
from solo.utils.registry import did_you_mean
from solo.utils.resume import position_of
from solo.utils.schema import ConfigError, build, check, check_positive, required

FEATURE_TYPES = ("backbone", "projector")
DISTANCES = KNN_DISTANCES
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
PRECISIONS = ("32", "32-true", "bf16", "bf16-mixed")
SPLITS = ("train", "val")


@dataclass
class EvalDataConfig(DataConfig):
    """The pretraining data section, plus the crop size and normalization of the images
    (``data.augmentations``, as in linear configs); unset, they are the pretraining's."""

    augmentations: LinearAugmentationsConfig = field(default_factory=LinearAugmentationsConfig)


@dataclass
class EvalConfig:
    """What every offline evaluation needs: a checkpoint, data, and where to run."""

    data: EvalDataConfig = required()
    # a run folder of main_pretrain.py (its newest checkpoint is used) or a checkpoint file
    pretrained_checkpoint_dir: Optional[str] = None
    # a checkpoint file in any format that solo.zoo.load_pretrained reads
    pretrained_feature_extractor: Optional[str] = None
    backbone: LinearBackboneConfig = field(default_factory=LinearBackboneConfig)
    batch_size: int = 64
    num_workers: Optional[int] = None  # overrides data.num_workers when set
    accelerator: str = "auto"  # a GPU when there is one
    precision: str = "32"  # "bf16" runs the backbone under bf16 autocast; features stay float32

    def __post_init__(self) -> None:
        given = [k for k in ("pretrained_checkpoint_dir", "pretrained_feature_extractor")
                 if getattr(self, k) is not None]
        check(len(given) == 1, "pretrained_checkpoint_dir",
              "set exactly one of pretrained_checkpoint_dir (a run folder or a .ckpt) and "
              f"pretrained_feature_extractor (a checkpoint file); got {given or 'neither'}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.num_workers is None or self.num_workers >= 0, "num_workers",
              f"must be >= 0, got {self.num_workers}")
        check(self.accelerator in ACCELERATORS, "accelerator",
              f"'{self.accelerator}' is not one of {ACCELERATORS}"
              + did_you_mean(self.accelerator, ACCELERATORS))
        check(self.precision in PRECISIONS, "precision",
              f"'{self.precision}' is not one of {PRECISIONS}")

    @property
    def workers(self) -> int:
        return self.data.num_workers if self.num_workers is None else self.num_workers

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CLUSTER_ASSIGNMENTS = ("kmeans", "argmax")


@dataclass
class ClusteringConfig:
    """k-means on the evaluation set's features, scored against its labels."""

    enabled: bool = False
    num_clusters: Optional[int] = None  # the number of classes when unset
    num_restarts: int = 5  # k-means++ seedings; the lowest inertia wins
    max_iters: int = 100
    l2_normalize: bool = True  # cluster directions, as the cosine kNN compares them
    seed: int = 0
    # "kmeans": k-means clusters; "argmax": each image's cluster is its largest feature, for a
    # head whose outputs are class logits (TWIST's unsupervised classification: its projector)
    assign: str = "kmeans"

    def __post_init__(self) -> None:
        check(self.num_clusters is None or self.num_clusters >= 2, "num_clusters",
              f"must be >= 2, got {self.num_clusters}")
        check_positive(self, "num_restarts", "max_iters")
        check(self.assign in CLUSTER_ASSIGNMENTS, "assign",
              f"'{self.assign}' is not one of {CLUSTER_ASSIGNMENTS}")


@dataclass
class KnnConfig(EvalConfig):
    # the grid; solo-learn's defaults for k, temperature, feature_type and distance_function
    k: list[int] = field(default_factory=lambda: [10, 20, 100, 200])
    temperature: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05, 0.07, 0.1, 0.2,
                                                              0.5, 1.0])
    feature_type: list[str] = field(default_factory=lambda: ["backbone", "projector"])
    distance_function: list[str] = field(default_factory=lambda: ["euclidean", "cosine"])
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.k) and all(k >= 1 for k in self.k), "k", f"needs values >= 1, got {self.k}")
        check(bool(self.temperature) and all(t > 0 for t in self.temperature), "temperature",
              f"needs values > 0, got {self.temperature}")
        for key, valid in (("feature_type", FEATURE_TYPES), ("distance_function", DISTANCES)):
            values = getattr(self, key)
            check(bool(values), key, f"needs at least one of {valid}")
            for value in values:
                check(value in valid, key, f"'{value}' is not one of {valid}"
                      + did_you_mean(value, valid))
        if self.clustering.enabled and self.clustering.assign == "argmax":
            check("backbone" not in self.feature_type, "clustering.assign",
                  "'argmax' reads the class logits of a head: use ++feature_type=[projector] "
                  "(the argmax of backbone features means nothing)")
        check(self.data.val_path is not None, "data.val_path",
              "is not set: kNN classifies the images of data.val_path against data.train_path")
        check(not self.data.no_labels, "data.no_labels",
              "kNN needs labelled images (class folders) in both sets")


@dataclass
class UmapConfig(EvalConfig):
    split: str = "val"  # which set to embed: data.train_path ("train") or data.val_path ("val")
    output_dir: str = "umap"  # <output_dir>/<checkpoint name>-<split>.{png,npz}
    n_neighbors: int = 15  # umap-learn's defaults
    min_dist: float = 0.1
    metric: str = "euclidean"
    seed: Optional[int] = 0  # None lets umap-learn use every core, but runs differ

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.split in SPLITS, "split", f"'{self.split}' is not one of {SPLITS}")
        check(self.n_neighbors >= 2, "n_neighbors", f"must be >= 2, got {self.n_neighbors}")
        check(self.min_dist >= 0, "min_dist", f"must be >= 0, got {self.min_dist}")
        if self.split == "val":
            check(self.data.val_path is not None, "data.val_path", "is not set; set it or use "
                  "++split=train")


# ----------------------------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------------------------
_LIST_KEYS = ("k", "temperature", "feature_type", "distance_function")


def parse_eval_config(schema: type, raw: Mapping[str, Any]) -> Any:
    """Validate a kNN or UMAP config (``schema`` is KnnConfig or UmapConfig), check that the
    checkpoint and data exist and fill ``data.num_classes``."""
    raw = dict(raw)
    raw.pop("hydra", None)  # Hydra's own section, when a config is loaded without Hydra
    raw.pop("defaults", None)
    for key in _LIST_KEYS:  # ++k=20 means [20]
        if key in raw and not isinstance(raw[key], (list, tuple)):
            raw[key] = [raw[key]]
    if "precision" in raw:  # YAML reads 32 as a number
        raw["precision"] = str(raw["precision"])
    cfg = build(schema, raw)
    checkpoint_file(cfg)  # fails here, not after the data is read
    for key in ("train_path", "val_path"):
        value = getattr(cfg.data, key)
        if value is not None and not os.path.exists(os.path.expanduser(str(value))):
            raise ConfigError(f"data.{key}: '{value}' does not exist")
    if cfg.data.num_classes is None:
        if cfg.data.dataset in NUM_CLASSES:
            cfg.data.num_classes = NUM_CLASSES[cfg.data.dataset]
        elif not cfg.data.no_labels and os.path.isdir(cfg.data.train_path):
            with os.scandir(cfg.data.train_path) as entries:
                cfg.data.num_classes = max(1, sum(entry.is_dir() for entry in entries))
    return cfg




def checkpoint_file(cfg: EvalConfig) -> Path:
    """The checkpoint to evaluate. A folder means main_pretrain.py's run folder: its checkpoint
    of the highest epoch (the newest file when the names carry no epoch)."""
    key = "pretrained_checkpoint_dir" if cfg.pretrained_checkpoint_dir else "pretrained_feature_extractor"
    path = Path(os.path.expanduser(str(getattr(cfg, key))))
    if path.is_file():
        return path
    if not path.is_dir():
        raise ConfigError(f"{key}: '{path}' does not exist")
    if key == "pretrained_feature_extractor":
        raise ConfigError(f"{key}: '{path}' is a folder; give a checkpoint file, or use "
                          "pretrained_checkpoint_dir for a run folder")
    candidates = sorted(path.glob("*.ckpt"))
    if not candidates:
        raise ConfigError(f"{key}: '{path}' holds no .ckpt file")

    return max(candidates, key=lambda p: (position_of(p), p.stat().st_mtime))
