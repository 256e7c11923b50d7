"""Typed schemas for every section of an experiment config, and the validator that builds them.

The key names are solo-learn's, so its experiment YAMLs run unchanged. Every section is a dataclass:
an unknown key is an error naming it and the closest valid key, a missing required key or an
impossible value is an error naming the key, all before any data is read.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional

from solo.solo_learn_compat import user_layout
from solo.utils.registry import did_you_mean
from solo.utils.schema import ConfigError, build, check, check_positive, convert, required

__all__ = ["ConfigError", "ExperimentConfig", "parse_config", "parse_saved_config", "build",
           "check", "check_positive"]


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------
SMALL_IMAGE_DATASETS = ("cifar10", "cifar100")


@dataclass
class BackboneConfig:
    # a name in solo.backbones.BACKBONES, "timm/<model>" or a plain timm model name
    name: str = "resnet18"
    kwargs: dict = field(default_factory=dict)  # passed to the backbone builder
    # a checkpoint on disk (any format solo.zoo.load_pretrained reads) to start the backbone from
    pretrained: Optional[str] = None
    # the 3x3 stride-1 stem for 32x32 images; None turns it on for cifar10 and cifar100
    cifar_stem: Optional[bool] = None


DATASETS = ("cifar10", "cifar100", "stl10", "imagenet", "imagenet100", "custom")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "stl10": 10, "imagenet": 1000, "imagenet100": 100}
FORMATS = ("image_folder", "h5", "dali")


@dataclass
class DataConfig:
    dataset: str = required()
    train_path: str = required()
    val_path: Optional[str] = None  # no validation (probe accuracy, kNN) without it
    format: str = "image_folder"
    num_workers: int = 4
    no_labels: bool = False  # custom datasets whose images are not in class folders
    fraction: float = -1.0  # use this fraction of the training set; -1 uses all of it
    # where the views are made: a name in solo.data.PIPELINES, or "auto": "gpu" for CIFAR and
    # STL-10 when training runs on a GPU, "dali" for format 'dali', "cpu" otherwise
    pipeline: str = "auto"
    # pipeline "gpu": a dataset whose decoded images take at most this many GiB is kept on the
    # device; a larger one is streamed, its JPEGs decoded on the device batch by batch
    resident_max_gb: float = 16.0
    num_classes: Optional[int] = None  # derived from the dataset when not set
    # an unreadable image file (truncated, not an image) is an error naming it; True serves the
    # next readable image in its place and lists the file in <run folder>/skipped_files.txt
    skip_corrupt: bool = False

    def __post_init__(self) -> None:
        check(self.dataset in DATASETS, "dataset", f"'{self.dataset}' is not one of {DATASETS}"
              + did_you_mean(self.dataset, DATASETS))
        check(self.format in FORMATS, "format", f"'{self.format}' is not one of {FORMATS}"
              + did_you_mean(self.format, FORMATS))
        check(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        check(self.resident_max_gb >= 0, "resident_max_gb", f"must be >= 0, got {self.resident_max_gb}")
        check(self.fraction == -1 or 0 < self.fraction <= 1, "fraction",
              f"must be in (0, 1] or -1 for all, got {self.fraction}")
        check(self.num_classes is None or self.num_classes >= 1, "num_classes",
              f"must be >= 1, got {self.num_classes}")
        if self.format == "h5":
            check(not self.no_labels, "no_labels", "the h5 format stores one group per class")


def _probability(value: float, key: str) -> None:
    check(0.0 <= value <= 1.0, key, f"is a probability in [0, 1], got {value}")


def _switch_off_unless_enabled(op: Any) -> None:
    """solo-learn's ``enabled`` of an augmentation op: ``enabled: False`` turns the op off,
    whatever its ``prob`` says (its vicreg.yaml and wmse.yaml write both)."""
    _probability(op.prob, "prob")
    if not op.enabled:
        op.prob = 0.0


@dataclass
class RandomResizedCropConfig:
    enabled: bool = True
    crop_min_scale: float = 0.08
    crop_max_scale: float = 1.0

    def __post_init__(self) -> None:
        check(0 < self.crop_min_scale <= self.crop_max_scale <= 1, "crop_min_scale",
              f"need 0 < crop_min_scale <= crop_max_scale <= 1, got {self.crop_min_scale} and "
              f"{self.crop_max_scale}")


@dataclass
class ColorJitterConfig:
    prob: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    enabled: bool = True

    def __post_init__(self) -> None:
        _switch_off_unless_enabled(self)
        for key in ("brightness", "contrast", "saturation"):
            check(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        check(0 <= self.hue <= 0.5, "hue", f"must be in [0, 0.5], got {self.hue}")


@dataclass
class ProbabilityConfig:
    prob: float = 0.0
    enabled: bool = True

    def __post_init__(self) -> None:
        _switch_off_unless_enabled(self)


@dataclass
class GaussianBlurConfig:
    prob: float = 0.0
    sigma_min: float = 0.1  # SimCLR's range for the blur's standard deviation
    sigma_max: float = 2.0
    enabled: bool = True

    def __post_init__(self) -> None:
        _switch_off_unless_enabled(self)
        check(0 < self.sigma_min <= self.sigma_max, "sigma_min",
              f"need 0 < sigma_min <= sigma_max, got {self.sigma_min} and {self.sigma_max}")


@dataclass
class SolarizationConfig:
    prob: float = 0.0
    threshold: float = 0.5  # fraction of the pixel range above which pixels are inverted
    enabled: bool = True

    def __post_init__(self) -> None:
        _switch_off_unless_enabled(self)
        _probability(self.threshold, "threshold")


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Normalization = tuple[tuple[float, ...], tuple[float, ...]]
# each dataset's channel mean and std (solo-learn's values); every other dataset uses ImageNet's
DATASET_NORMALIZATION: dict[str, Normalization] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261)),
}


def dataset_normalization(dataset: str) -> Normalization:
    """The mean and std that ``dataset``'s images are normalized with unless a config sets them."""
    return DATASET_NORMALIZATION.get(dataset, (IMAGENET_MEAN, IMAGENET_STD))


def resolve_normalization(mean: Optional[list[float]], std: Optional[list[float]],
                          default: Normalization) -> Normalization:
    """An explicit ``mean``/``std`` wins; an unset one is ``default``'s."""
    return (tuple(mean) if mean is not None else tuple(default[0]),
            tuple(std) if std is not None else tuple(default[1]))


@dataclass
class AugmentationConfig:
    """One crop group: ``num_crops`` views of ``crop_size`` pixels made with the same recipe."""

    crop_size: int = required()
    num_crops: int = 1
    rrc: RandomResizedCropConfig = field(default_factory=RandomResizedCropConfig)
    color_jitter: ColorJitterConfig = field(default_factory=ColorJitterConfig)
    grayscale: ProbabilityConfig = field(default_factory=ProbabilityConfig)
    gaussian_blur: GaussianBlurConfig = field(default_factory=GaussianBlurConfig)
    solarization: SolarizationConfig = field(default_factory=SolarizationConfig)
    equalization: ProbabilityConfig = field(default_factory=ProbabilityConfig)
    horizontal_flip: ProbabilityConfig = field(default_factory=ProbabilityConfig)
    mean: Optional[list[float]] = None  # the dataset's statistics (DATASET_NORMALIZATION) when unset
    std: Optional[list[float]] = None

    # what an unset mean/std stands for: the dataset's statistics, set by ExperimentConfig from
    # data.dataset; not a config key, so a saved config keeps "unset" (ImageNet's on its own)
    dataset_normalization: ClassVar[Normalization] = (IMAGENET_MEAN, IMAGENET_STD)

    def __post_init__(self) -> None:
        check(self.crop_size >= 1, "crop_size", f"must be >= 1, got {self.crop_size}")
        check(self.num_crops >= 1, "num_crops", f"must be >= 1, got {self.num_crops}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            check(value is None or len(value) == 3, key, f"needs 3 values (RGB), got {value}")
        check(self.std is None or all(s > 0 for s in self.std), "std", f"must be > 0, got {self.std}")

    @property
    def normalization(self) -> Normalization:
        """(mean, std) of this group's views: the config's, else the dataset's statistics."""
        return resolve_normalization(self.mean, self.std, self.dataset_normalization)


OPTIMIZERS = ("sgd", "lars", "adam", "adamw")


@dataclass
class OptimizerConfig:
    name: str = required()
    batch_size: int = required()  # per device
    lr: float = required()  # for a global batch of 256; scaled linearly with the real one
    weight_decay: float = required()
    classifier_lr: float = 0.1  # online linear probe, also scaled; no weight decay
    kwargs: dict = field(default_factory=dict)  # optimizer-specific (momentum, eta, betas, ...)
    exclude_bias_n_norm_wd: bool = False  # no weight decay on biases and norm parameters
    # when set, the weight decay follows a per-step cosine from weight_decay to this value (DINO's
    # ViT recipe: 0.04 -> 0.4); every group's own weight decay is scaled alike
    weight_decay_end: Optional[float] = None

    def __post_init__(self) -> None:
        check(self.name in OPTIMIZERS, "name", f"'{self.name}' is not one of {OPTIMIZERS}"
              + did_you_mean(self.name, OPTIMIZERS))
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check_positive(self, "lr", "classifier_lr")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.weight_decay_end is not None:
            check(self.weight_decay_end >= 0, "weight_decay_end",
                  f"must be >= 0, got {self.weight_decay_end}")
            check(self.weight_decay > 0, "weight_decay_end", "schedules the weight decay from "
                  "optimizer.weight_decay, which is 0: set weight_decay > 0 or remove weight_decay_end")


SCHEDULERS = ("warmup_cosine", "step", "exponential", "reduce", "none")


@dataclass
class SchedulerConfig:
    name: str = "warmup_cosine"
    warmup_epochs: float = 10  # linear warmup from warmup_start_lr, then cosine to min_lr
    warmup_start_lr: float = 3e-5
    min_lr: float = 0.0
    lr_decay_steps: Optional[list[int]] = None  # epochs at which "step" multiplies lr by gamma
    gamma: float = 0.1  # decay factor: per milestone for "step", per epoch for "exponential"
    interval: str = "step"  # update the lr every optimizer step or every epoch

    def __post_init__(self) -> None:
        check(self.name in SCHEDULERS, "name", f"'{self.name}' is not one of {SCHEDULERS}"
              + did_you_mean(self.name, SCHEDULERS))
        check(self.interval in ("step", "epoch"), "interval",
              f"must be 'step' or 'epoch', got '{self.interval}'")
        check(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        check(0 < self.gamma <= 1, "gamma", f"must be in (0, 1], got {self.gamma}")
        if self.name == "step":
            check(bool(self.lr_decay_steps), "lr_decay_steps",
                  "the 'step' scheduler needs a list of epochs, e.g. [60, 80]")


@dataclass
class MomentumConfig:
    base_tau: float = 0.99  # EMA decay at the first step, raised to final_tau with a cosine
    final_tau: float = 1.0
    classifier: bool = False  # also train a linear probe on the momentum backbone
    # False: no EMA copies; the targets come from the online network without gradient
    # (SimSiam-style, byol-pytorch's use_momentum=False)
    enabled: bool = True

    def __post_init__(self) -> None:
        check(0 <= self.base_tau <= self.final_tau <= 1, "base_tau",
              f"need 0 <= base_tau <= final_tau <= 1, got {self.base_tau} and {self.final_tau}")


@dataclass
class CheckpointConfig:
    enabled: bool = False
    dir: str = "trained_models"
    frequency: int = 1  # epochs between checkpoints
    keep_prev: bool = False  # keep every checkpoint instead of only the newest
    # also save inside epochs, every this many optimizer steps and/or minutes: the most work a
    # SIGKILL can lose (SIGTERM / SIGUSR1 save the current step whatever these are)
    every_n_steps: Optional[int] = None
    every_n_minutes: Optional[float] = None

    def __post_init__(self) -> None:
        check(self.frequency >= 1, "frequency", f"must be >= 1, got {self.frequency}")
        check(self.every_n_steps is None or self.every_n_steps >= 1, "every_n_steps",
              f"must be >= 1 or null, got {self.every_n_steps}")
        check(self.every_n_minutes is None or self.every_n_minutes > 0, "every_n_minutes",
              f"must be > 0 or null, got {self.every_n_minutes}")


@dataclass
class AutoResumeConfig:
    enabled: bool = False
    max_hours: float = 36  # only resume runs whose newest checkpoint is younger than this

    def __post_init__(self) -> None:
        check_positive(self, "max_hours")


KNN_DISTANCES = ("euclidean", "cosine")  # solo-learn's distance_func values
KNN_BANK_DTYPES = ("float32", "float16")  # torch dtype names


@dataclass
class KnnEvalConfig:
    enabled: bool = False
    k: int = 20
    distance_func: str = "euclidean"
    temperature: float = 0.07  # weight of a neighbour: exp(similarity / temperature)
    # queries compared with the bank at a time: the similarity block is chunk_size x bank rows
    chunk_size: int = 512
    # more bank rows than this (per process) move to the host and are streamed back in blocks of
    # this many; None keeps the whole bank on the device (1.28M x 2048 fp32 is 10.5 GB)
    max_bank_on_device: Optional[int] = None
    bank_dtype: str = "float32"  # or "float16": half the bank memory, votes still in float32
    # True: the bank is the large crops' features of the training steps since the last
    # validation (solo-learn's way: no pass over the training set, but augmented crops of a
    # network that changed during the epoch); False: a pass over the training set per validation
    bank_from_training: bool = False

    def __post_init__(self) -> None:
        check(self.k >= 1, "k", f"must be >= 1, got {self.k}")
        check(self.distance_func in KNN_DISTANCES, "distance_func",
              f"must be 'euclidean' or 'cosine', got '{self.distance_func}'")
        check(self.chunk_size >= 1, "chunk_size", f"must be >= 1, got {self.chunk_size}")
        check(self.max_bank_on_device is None or self.max_bank_on_device >= 1,
              "max_bank_on_device", f"must be >= 1 or null, got {self.max_bank_on_device}")
        check(self.bank_dtype in KNN_BANK_DTYPES, "bank_dtype",
              f"must be 'float32' or 'float16', got '{self.bank_dtype}'")
        check_positive(self, "temperature")


@dataclass
class WandbConfig:
    enabled: bool = False
    entity: Optional[str] = None
    project: str = "solo"
    offline: bool = False


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class PerformanceConfig:
    """Speed settings; none changes what is computed beyond floating-point rounding, except
    ``fuse_crops`` (batch-norm statistics) and ``tf32`` (matmul precision), which say so."""

    disable_channel_last: bool = False
    # one backbone call for all crops of a resolution instead of one per crop: fewer, larger
    # kernels, but batch norm then normalizes those views together (solo-learn and the BYOL and
    # MoCo papers compute its statistics per view, the default)
    fuse_crops: bool = False
    # "16"/"16-mixed" runs as bf16-mixed where the device has bfloat16: fp16's loss scaling reads
    # an overflow flag back to the host after every step, which stalls the GPU queue
    bf16: bool = True
    # TF32 tensor cores for float32 matmuls and convolutions on GPUs that have them (Ampere and
    # later): about 10 bits of mantissa instead of 23. The losses and kNN stay in full float32
    tf32: bool = True
    compile: bool = False  # torch.compile the backbones (state-dict keys unchanged)
    compile_mode: str = "default"  # "reduce-overhead" replays the compiled step as CUDA graphs
    compile_backend: str = "inductor"  # torch.compile's backend; modes apply to inductor only
    # the progress bar reads the logged values back from the device each time it is redrawn
    progress_bar_refresh_rate: int = 20

    def __post_init__(self) -> None:
        check(self.compile_mode in COMPILE_MODES, "compile_mode",
              f"'{self.compile_mode}' is not one of {COMPILE_MODES}"
              + did_you_mean(self.compile_mode, COMPILE_MODES))
        check(self.progress_bar_refresh_rate >= 1, "progress_bar_refresh_rate",
              f"must be >= 1, got {self.progress_bar_refresh_rate}")


@dataclass
class DaliConfig:
    """Accepted for solo-learn compatibility; the DALI pipeline reads it."""

    device: str = "gpu"  # where DALI decodes and augments; the CPU when training has no GPU
    encode_indexes_into_labels: bool = False  # solo's DALI reader always labels files by index

    def __post_init__(self) -> None:
        check(self.device in ("gpu", "cpu"), "device", f"must be 'gpu' or 'cpu', got '{self.device}'")


@dataclass
class AutoUmapConfig:
    """A UMAP of the validation features every ``frequency`` epochs into ``dir/<method>/<run id>/``
    (the ``umap`` extra)."""

    enabled: bool = False
    dir: str = "auto_umap"
    frequency: int = 1


@dataclass
class ExperimentConfig:
    name: str = required()
    method: str = required()
    augmentations: list[AugmentationConfig] = required()
    optimizer: OptimizerConfig = required()
    data: DataConfig = required()
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method_kwargs: Any = field(default_factory=dict)  # the method's own Config once validated
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    momentum: MomentumConfig = field(default_factory=MomentumConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    auto_resume: AutoResumeConfig = field(default_factory=AutoResumeConfig)
    knn_eval: KnnEvalConfig = field(default_factory=KnnEvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    dali: DaliConfig = field(default_factory=DaliConfig)
    auto_umap: AutoUmapConfig = field(default_factory=AutoUmapConfig)
    seed: int = 5
    resume_from_checkpoint: Optional[str] = None
    num_nodes: int = 1
    debug_augmentations: bool = False
    no_validation: bool = False
    trainer: dict = field(default_factory=dict)  # the Lightning Trainer keys found at top level

    def __post_init__(self) -> None:
        check(len(self.augmentations) >= 1, "augmentations", "needs at least one crop group")
        check(self.num_nodes >= 1, "num_nodes", f"must be >= 1, got {self.num_nodes}")
        for aug in self.augmentations:  # per instance: shadows the class's ImageNet default
            aug.dataset_normalization = dataset_normalization(self.data.dataset)
        check(not (self.knn_eval.enabled and self.data.no_labels), "knn_eval.enabled",
              "the training images have no labels (data.no_labels is true), so kNN has no bank "
              "to vote with; set knn_eval.enabled: False")

    # derived values -----------------------------------------------------------------------
    @property
    def num_large_crops(self) -> int:
        """Crops at the first group's resolution; the momentum encoder and probe see these."""
        size = self.augmentations[0].crop_size
        return sum(a.num_crops for a in self.augmentations if a.crop_size == size)

    @property
    def num_small_crops(self) -> int:
        return sum(a.num_crops for a in self.augmentations) - self.num_large_crops

    @property
    def num_classes(self) -> int:
        assert self.data.num_classes is not None, "parse_config fills data.num_classes"
        return self.data.num_classes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# the whole experiment
# ----------------------------------------------------------------------------------------------
# keys that solo-learn configs may carry but that Lightning handles itself or that mean nothing here
_TRAINER_KEYS_WE_SET = {"callbacks", "logger", "plugins", "default_root_dir"}


def trainer_keys() -> set[str]:
    """Names that the Lightning Trainer takes, allowed at the config's top level."""
    from lightning.pytorch import Trainer

    return set(inspect.signature(Trainer.__init__).parameters) - {"self"} - _TRAINER_KEYS_WE_SET


def parse_config(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a whole experiment config (a plain mapping, e.g. from OmegaConf.to_container).

    Checks every section, the method's own ``method_kwargs`` against its Config, and fills
    derived values (``data.num_classes``). Reads no data except, for custom datasets without
    ``num_classes``, the names of the class folders.
    """
    from solo.methods import METHODS  # the registry imports the methods, which import this module

    raw = user_layout(dict(raw))
    raw.pop("hydra", None)  # Hydra's own section, when a config is loaded without Hydra
    raw.pop("defaults", None)
    own = {f.name for f in dataclasses.fields(ExperimentConfig)}
    allowed_trainer = trainer_keys()
    trainer = dict(raw.pop("trainer", {}) or {})
    for key in list(raw):
        if key not in own:
            if key not in allowed_trainer:
                options = own | allowed_trainer
                raise ConfigError(f"unknown key '{key}'{did_you_mean(key, options)}; it is neither "
                                  "an experiment key nor a Lightning Trainer argument")
            trainer[key] = raw.pop(key)
    raw["trainer"] = trainer
    cfg: ExperimentConfig = build(ExperimentConfig, raw)

    from solo.backbones import is_known_backbone, unknown_backbone
    from solo.utils.optim import check_optimizer_kwargs  # these import torch; config.py does not

    check_optimizer_kwargs(cfg.optimizer)
    try:
        method = METHODS.get(cfg.method)
    except KeyError as error:
        raise ConfigError(f"method: {error}") from None
    if not is_known_backbone(cfg.backbone.name):
        raise ConfigError(f"backbone.name: {unknown_backbone(cfg.backbone.name)}")
    pretrained = cfg.backbone.pretrained
    if pretrained is not None and not os.path.isfile(os.path.expanduser(pretrained)):
        raise ConfigError(f"backbone.pretrained: '{pretrained}' is not a file; give the path of a "
                          "checkpoint (solo, solo-learn, torchvision or timm weights)")
    cfg.method_kwargs = convert(cfg.method_kwargs or {}, method.Config, "method_kwargs")
    world = known_world_size(cfg)
    # a queue_size of 0 is no queue (SwAV's)
    if world and getattr(cfg.method_kwargs, "queue_size", None):
        check_queue_size(cfg.method_kwargs.queue_size, cfg.optimizer.batch_size * world)

    if cfg.data.num_classes is None:
        if cfg.data.dataset in NUM_CLASSES:
            cfg.data.num_classes = NUM_CLASSES[cfg.data.dataset]
        elif cfg.data.no_labels:
            cfg.data.num_classes = 1
        else:
            cfg.data.num_classes = _count_class_folders(cfg.data.train_path)
    return cfg


def check_queue_size(queue_size: int, global_batch: int) -> None:
    """A queue of past keys is written a global batch at a time: its size must be a multiple of
    the global batch (batch_size x devices x nodes), and no smaller, as solo-learn asserts; a
    write that wrapped around inside one batch would overwrite its own keys."""
    if queue_size < global_batch or queue_size % global_batch:
        nearest = max(1, round(queue_size / global_batch)) * global_batch
        raise ConfigError(f"method_kwargs.queue_size: {queue_size} is not a multiple of the global "
                          f"batch of {global_batch} (optimizer.batch_size x devices x nodes); use "
                          f"a multiple such as {nearest}")


def device_count(devices: Any) -> Optional[int]:
    """How many devices per node a Lightning ``devices`` value names: a list's length, a count
    (an int or a digit string), or the ids of a comma string ("0,1"); None for "auto" and -1,
    whose count only the machine knows."""
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 0:
        return devices
    return None  # "auto", -1: every device the machine has


def known_world_size(cfg: ExperimentConfig) -> Optional[int]:
    """Processes the run will have, when the config says (devices as a count or a list)."""
    count = device_count(cfg.trainer.get("devices", "auto"))
    if count is None:
        return None
    return count * int(cfg.trainer.get("num_nodes", cfg.num_nodes))


# backbone kwargs that make a builder load weights (timm's ``pretrained`` and its file overlay)
WEIGHT_KWARGS = ("pretrained", "pretrained_cfg_overlay")


def without_weight_sources(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config without what started its backbone from a file (``backbone.pretrained``,
    ``WEIGHT_KWARGS`` in ``backbone.kwargs``): the run's checkpoint holds the weights, and the
    file it started from may be gone."""
    raw = dict(raw)
    backbone = raw.get("backbone")
    if isinstance(backbone, Mapping):
        backbone = {k: v for k, v in backbone.items() if k != "pretrained"}
        kwargs = backbone.get("kwargs")
        if isinstance(kwargs, Mapping):
            backbone["kwargs"] = {k: v for k, v in kwargs.items() if k not in WEIGHT_KWARGS}
        raw["backbone"] = backbone
    return raw


def parse_saved_config(raw: Mapping[str, Any], source: str) -> ExperimentConfig:
    """The config a run wrote (a checkpoint's hyper-parameters, ``args.json`` of ours or of
    solo-learn), read leniently: keys that solo does not know are dropped (those solo-learn
    writes silently, any other reported in one warning naming ``source``), so the checkpoint
    stays usable; its weight sources are not replayed (``without_weight_sources``). A user's
    YAML goes through ``parse_config``, which rejects unknown keys."""
    from solo.methods import METHODS
    from solo.solo_learn_compat import prune_saved

    method = raw.get("method")
    known = isinstance(method, str) and method in METHODS
    method_config = METHODS.get(method).Config if known else None
    saved = without_weight_sources({k: v for k, v in raw.items() if k not in ("hydra", "defaults")})
    pruned = prune_saved(saved,
                         ExperimentConfig, method_config, frozenset(trainer_keys()), source)
    return parse_config(pruned)


def _count_class_folders(path: str) -> int:
    if not os.path.isdir(path):
        raise ConfigError(f"data.train_path: '{path}' is not a directory")
    return max(1, sum(entry.is_dir() for entry in os.scandir(path)))
