"""The typed config of ``main_linear.py``: linear evaluation or fine-tuning of a pretrained backbone.

Key names are solo-learn's (``pretrained_feature_extractor``, ``pretrain_method``, ``finetune``,
``auto_augment``, ``label_smoothing``, ``mixup``, ``cutmix``, ``data.augmentations.crop_size``,
Trainer keys at the top level), so its linear YAMLs run unchanged. Like the pretraining config,
every section is a dataclass: an unknown key fails naming the closest valid one, and a missing or
impossible value fails naming the key, before any image is read.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from solo.config import (
    NUM_CLASSES,
    AutoResumeConfig,
    CheckpointConfig,
    DaliConfig,
    DataConfig,
    OptimizerConfig,
    PerformanceConfig,
    SchedulerConfig,
    WandbConfig,
    trainer_keys,
)
from solo.utils.registry import did_you_mean
from solo.utils.schema import ConfigError, build, check, required

# timm's RandAugment policy string that ``auto_augment: True`` stands for (DeiT's recipe)
DEFAULT_RAND_AUGMENT = "rand-m9-mstd0.5-inc1"
# crop size when data.augmentations.crop_size is not set: each dataset's native image size
DEFAULT_CROP_SIZE = {"cifar10": 32, "cifar100": 32, "stl10": 96}
IMAGENET_CROP_SIZE = 224
# timm ViT kwargs a fine-tuning run may add to the pretrained backbone
REGULARIZATION_KWARGS = ("drop_path_rate", "drop_rate", "attn_drop_rate", "proj_drop_rate",
                         "pos_drop_rate")


@dataclass
class LinearBackboneConfig:
    """The backbone is rebuilt from the checkpoint; these keys only check or override it."""

    name: Optional[str] = None  # None: the architecture recorded in the checkpoint
    cifar_stem: Optional[bool] = None  # None: as the checkpoint was pretrained
    # only regularization that leaves the weights' shapes alone (solo-learn's MAE fine-tuning:
    # drop_path_rate 0.1); the architecture is the checkpoint's
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        other = sorted(set(self.kwargs) - set(REGULARIZATION_KWARGS))
        check(not other, "kwargs", f"{other} is not supported by linear evaluation: the backbone "
              f"is rebuilt as it was pretrained; only {', '.join(REGULARIZATION_KWARGS)} may be set")


@dataclass
class LinearAugmentationsConfig:
    """solo-learn's ``data.augmentations`` of linear configs: crop size and normalization."""

    crop_size: Optional[int] = None  # 32 for CIFAR, 96 for STL-10, 224 otherwise
    mean: Optional[list[float]] = None  # the dataset's statistics, as in pretraining, when unset
    std: Optional[list[float]] = None

    def __post_init__(self) -> None:
        check(self.crop_size is None or self.crop_size >= 1, "crop_size",
              f"must be >= 1, got {self.crop_size}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            check(value is None or len(value) == 3, key, f"needs 3 values (RGB), got {value}")
        check(self.std is None or all(s > 0 for s in self.std), "std", f"must be > 0, got {self.std}")


@dataclass
class LinearDataConfig(DataConfig):
    """The pretraining data section, plus the crop/normalization and the subset's seed."""

    val_path: str = required()  # the accuracy reported is measured here
    augmentations: LinearAugmentationsConfig = field(default_factory=LinearAugmentationsConfig)
    # seed of the class-balanced subset that data.fraction picks; 0 is the seed pretraining uses,
    # so a linear run with the same fraction sees the images its backbone was pretrained on
    fraction_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(not self.no_labels, "no_labels", "linear evaluation needs labels (class folders)")
        # "auto" (the default) is the CPU loader here: the head's data needs no GPU augmentation
        check(self.pipeline in ("auto", "cpu"), "pipeline", "linear evaluation reads images with "
              f"the CPU loader: 'auto' or 'cpu', got '{self.pipeline}'")

    @property
    def crop_size(self) -> int:
        return self.augmentations.crop_size or DEFAULT_CROP_SIZE.get(self.dataset, IMAGENET_CROP_SIZE)


@dataclass
class LinearOptimizerConfig(OptimizerConfig):
    """The pretraining optimizer section. ``lr`` is the linear head's (for a batch of 256);
    ``backbone_lr`` the backbone's when fine-tuning (``lr`` when unset). ``classifier_lr``, the
    online probe's in pretraining, is accepted and unused."""

    backbone_lr: Optional[float] = None
    # solo-learn's key: > 0 scales a fine-tuned ViT's block i (of D) by layer_decay^(D - i) and
    # its embeddings by layer_decay^(D + 1) (BEiT's, MAE's; solo/utils/layer_decay.py); 0: off
    layer_decay: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.backbone_lr is None or self.backbone_lr > 0, "backbone_lr",
              f"must be > 0, got {self.backbone_lr}")
        check(0 <= self.layer_decay <= 1, "layer_decay",
              f"must be in [0, 1] (0 turns it off), got {self.layer_decay}")


@dataclass
class LinearConfig:
    name: str = required()
    # the pretrained checkpoint: a solo or solo-learn .ckpt, or anything solo.zoo.load_pretrained reads
    pretrained_feature_extractor: Optional[str] = required()
    data: LinearDataConfig = required()
    optimizer: LinearOptimizerConfig = required()
    pretrain_method: Optional[str] = None  # checked against the checkpoint's method when both known
    backbone: LinearBackboneConfig = field(default_factory=LinearBackboneConfig)
    finetune: bool = False  # train the backbone too (BN in train mode); else frozen, eval mode
    # train the head on features extracted once with the validation transform: much faster, but
    # no training augmentation (no random crops, flips, RandAugment, mixup or cutmix)
    cache_features: bool = False
    auto_augment: Any = False  # True (= DEFAULT_RAND_AUGMENT) or a timm "rand-..." policy string
    label_smoothing: float = 0.0
    mixup: float = 0.0  # alpha of mixup's Beta distribution; 0 turns it off
    cutmix: float = 0.0  # alpha of cutmix's Beta distribution; 0 turns it off
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    auto_resume: AutoResumeConfig = field(default_factory=AutoResumeConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    dali: DaliConfig = field(default_factory=DaliConfig)
    seed: int = 5
    resume_from_checkpoint: Optional[str] = None
    num_nodes: int = 1
    trainer: dict = field(default_factory=dict)  # the Lightning Trainer keys found at top level

    def __post_init__(self) -> None:
        check(self.pretrained_feature_extractor is not None, "pretrained_feature_extractor",
              "is not set; pass the pretrained checkpoint: ++pretrained_feature_extractor=PATH")
        check(0 <= self.label_smoothing < 1, "label_smoothing",
              f"must be in [0, 1), got {self.label_smoothing}")
        check(self.mixup >= 0, "mixup", f"must be >= 0 (0 turns it off), got {self.mixup}")
        check(self.cutmix >= 0, "cutmix", f"must be >= 0 (0 turns it off), got {self.cutmix}")
        check(self.num_nodes >= 1, "num_nodes", f"must be >= 1, got {self.num_nodes}")
        check(self.optimizer.layer_decay == 0 or self.finetune, "optimizer.layer_decay",
              "decays the lrs of a trained backbone: it needs finetune: True (or layer_decay: 0)")
        aa = self.auto_augment
        check(aa is None or isinstance(aa, bool) or (isinstance(aa, str) and aa.startswith("rand-")),
              "auto_augment", f"must be true, false or a timm RandAugment policy such as "
              f"'{DEFAULT_RAND_AUGMENT}', got {aa!r}")
        if self.mixes:
            # timm's Mixup pairs each image with its mirror in the batch
            check(self.optimizer.batch_size % 2 == 0, "optimizer.batch_size",
                  f"mixup and cutmix need an even batch size, got {self.optimizer.batch_size}")
        if self.cache_features:
            check(not self.finetune, "cache_features", "cannot be combined with finetune: "
                  "cached features come from a frozen backbone; set one of them to False")
            augmenting = [key for key, on in (("auto_augment", self.rand_augment is not None),
                                              ("mixup", self.mixup > 0), ("cutmix", self.cutmix > 0))
                          if on]
            check(not augmenting, "cache_features", "trains on features extracted once without "
                  f"augmentation, so it cannot be combined with {', '.join(augmenting)}")

    @property
    def rand_augment(self) -> Optional[str]:
        """The timm RandAugment policy of the training transform, or None."""
        if self.auto_augment is True:
            return DEFAULT_RAND_AUGMENT
        return self.auto_augment or None

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    @property
    def num_classes(self) -> int:
        assert self.data.num_classes is not None, "parse_linear_config fills data.num_classes"
        return self.data.num_classes

    @property
    def mode(self) -> str:
        """A few words for reports: what is trained, on what."""
        if self.finetune:
            return "fine-tuned"
        return "linear, cached features" if self.cache_features else "linear, frozen backbone"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_linear_config(raw: Mapping[str, Any]) -> LinearConfig:
    """Validate a linear-evaluation config (a plain mapping, e.g. from OmegaConf.to_container).

    Besides the schema, checks that the pretrained checkpoint and the data folders exist and, for
    class-folder datasets without ``data.num_classes``, counts the class folders.
    """
    raw = dict(raw)
    raw.pop("hydra", None)  # Hydra's own section, when a config is loaded without Hydra
    raw.pop("defaults", None)
    own = {f.name for f in dataclasses.fields(LinearConfig)}
    allowed_trainer = trainer_keys()
    trainer = dict(raw.pop("trainer", {}) or {})
    for key in list(raw):
        if key not in own:
            if key not in allowed_trainer:
                raise ConfigError(f"unknown key '{key}'{did_you_mean(key, own | allowed_trainer)}; "
                                  "it is neither a linear-evaluation key nor a Lightning Trainer "
                                  "argument")
            trainer[key] = raw.pop(key)
    raw["trainer"] = trainer
    cfg: LinearConfig = build(LinearConfig, raw)
    if cfg.data.format == "dali":
        # solo-learn's ImageNet linear YAMLs say dali: the same class folders, read by the CPU loader
        warnings.warn("data.format 'dali': linear evaluation reads the same image folders with the "
                      "CPU loader (format 'image_folder')", stacklevel=2)
        cfg.data.format = "image_folder"

    from solo.backbones import is_known_backbone, unknown_backbone
    from solo.utils.optim import check_optimizer_kwargs  # these import torch; this module does not

    check_optimizer_kwargs(cfg.optimizer)
    if cfg.backbone.name is not None and not is_known_backbone(cfg.backbone.name):
        raise ConfigError(f"backbone.name: {unknown_backbone(cfg.backbone.name)}")
    path = str(cfg.pretrained_feature_extractor)
    if not os.path.isfile(path):
        raise ConfigError(f"pretrained_feature_extractor: '{path}' is not a file")
    if cfg.resume_from_checkpoint is not None and not os.path.isfile(cfg.resume_from_checkpoint):
        raise ConfigError(f"resume_from_checkpoint: '{cfg.resume_from_checkpoint}' is not a file")
    for key in ("train_path", "val_path"):
        value = os.path.expanduser(str(getattr(cfg.data, key)))
        if not os.path.exists(value):
            raise ConfigError(f"data.{key}: '{value}' does not exist")
    if cfg.data.num_classes is None:
        if cfg.data.dataset in NUM_CLASSES:
            cfg.data.num_classes = NUM_CLASSES[cfg.data.dataset]
        elif os.path.isdir(cfg.data.train_path):
            with os.scandir(cfg.data.train_path) as entries:
                cfg.data.num_classes = max(1, sum(entry.is_dir() for entry in entries))
        else:
            raise ConfigError(f"data.num_classes: cannot be counted from '{cfg.data.train_path}' "
                              "(not a folder of class folders); set it")
    return cfg
