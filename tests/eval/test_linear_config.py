"""The linear-evaluation config: shipped YAMLs parse, bad values fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from solo.eval.linear_config import DEFAULT_RAND_AUGMENT, LinearConfig, parse_linear_config
from solo.eval.linear_run import load_backbone
from solo.utils.schema import ConfigError
from tests.eval.linear_fixtures import LINEAR_CONFIGS, linear_overrides
from tests.helpers import ROOT, load_raw


@pytest.fixture()
def some_file(tmp_path: Path) -> Path:
    path = tmp_path / "weights.ckpt"
    path.write_bytes(b"not read by the config parser")
    return path


def parse(some_file: Path, data_root: Path, tmp_path: Path, *extra: str,
          config_dir: Path = LINEAR_CONFIGS, name: str = "linear.yaml") -> LinearConfig:
    overrides = linear_overrides(some_file, data_root, tmp_path / "ckpt") + list(extra)
    return parse_linear_config(load_raw(config_dir, name, overrides))


@pytest.mark.parametrize("folder, name, dataset, crop, lr", [
    ("cifar", "linear.yaml", "cifar10", 32, 0.1),
    ("cifar", "finetune.yaml", "cifar10", 32, 0.1),
    ("imagenet-100", "linear.yaml", "imagenet100", 224, 0.3),
    ("imagenet", "linear.yaml", "imagenet", 224, 0.1),
])
def test_shipped_configs_parse(folder: str, name: str, dataset: str, crop: int, lr: float,
                               some_file: Path, cifar_mini: Path, tmp_path: Path) -> None:
    cfg = parse(some_file, cifar_mini, tmp_path, config_dir=ROOT / "scripts" / "linear" / folder,
                name=name)
    assert cfg.data.dataset == dataset and cfg.data.crop_size == crop and cfg.optimizer.lr == lr
    assert cfg.optimizer.name == "sgd" and cfg.trainer["max_epochs"] == 100
    assert cfg.finetune == (name == "finetune.yaml")
    if cfg.finetune:
        assert cfg.optimizer.backbone_lr == 0.01 and cfg.rand_augment == DEFAULT_RAND_AUGMENT
    else:
        assert cfg.optimizer.weight_decay == 0 and cfg.scheduler.lr_decay_steps == [60, 80]


def test_solo_learn_style_keys(some_file: Path, cifar_mini: Path, tmp_path: Path) -> None:
    cfg = parse(some_file, cifar_mini, tmp_path, "++auto_augment=True", "++pretrain_method=byol",
                "++data.augmentations.crop_size=28", "++label_smoothing=0.1", "++mixup=0.8",
                "++cutmix=1.0", "++sync_batchnorm=True")
    assert cfg.rand_augment == "rand-m9-mstd0.5-inc1" and cfg.data.crop_size == 28
    assert cfg.mixes and cfg.trainer["sync_batchnorm"] is True and cfg.num_classes == 10


def test_dali_format_reads_the_same_folders(some_file: Path, cifar_mini: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="CPU loader"):
        cfg = parse(some_file, cifar_mini, tmp_path, "++data.format=dali")
    assert cfg.data.format == "image_folder"


@pytest.mark.parametrize("override, expected", [
    ("++finetun=True", "unknown key 'finetun' (did you mean \"finetune\"?)"),
    ("++optimizer.backbone_lrr=0.01", "unknown key 'optimizer.backbone_lrr' (did you mean "
                                      "\"backbone_lr\"?)"),
    ("++data.augmentations.crop=32", "unknown key 'data.augmentations.crop' (did you mean "
                                     "\"crop_size\"?)"),
    ("++label_smoothing=1.0", "label_smoothing: must be in [0, 1), got 1.0"),
    ("++auto_augment=autoaugment", "auto_augment: must be true, false or a timm RandAugment policy"),
    ("++backbone.name=resnet19", "backbone.name: unknown backbone 'resnet19' (did you mean"),
    ("++data.no_labels=True", "data.no_labels: linear evaluation needs labels"),
    ("++data.fraction=1.5", "data.fraction: must be in (0, 1] or -1"),
])
def test_bad_values_name_the_key(override: str, expected: str, some_file: Path, cifar_mini: Path,
                                 tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        parse(some_file, cifar_mini, tmp_path, override)
    assert expected in str(error.value)


def test_cache_features_conflicts(some_file: Path, cifar_mini: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cache_features: cannot be combined with finetune"):
        parse(some_file, cifar_mini, tmp_path, "++cache_features=True", "++finetune=True")
    with pytest.raises(ConfigError, match="cannot be combined with auto_augment, mixup"):
        parse(some_file, cifar_mini, tmp_path, "++cache_features=True", "++auto_augment=True",
              "++mixup=0.2")
    assert parse(some_file, cifar_mini, tmp_path, "++cache_features=True",
                 "++label_smoothing=0.1").cache_features


def test_mixup_needs_an_even_batch(some_file: Path, cifar_mini: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="optimizer.batch_size: mixup and cutmix need an even "
                                          "batch size, got 15"):
        parse(some_file, cifar_mini, tmp_path, "++cutmix=1.0", "++optimizer.batch_size=15")


def test_pretrained_checkpoint_must_be_given_and_exist(cifar_mini: Path, tmp_path: Path) -> None:
    # the shipped YAMLs hold the placeholder None, as solo-learn's do
    raw = load_raw(LINEAR_CONFIGS, "linear.yaml",
                   linear_overrides(Path("unused"), cifar_mini, tmp_path)[1:])
    with pytest.raises(ConfigError, match=r"pretrained_feature_extractor: is not set; pass the "
                                          r"pretrained checkpoint: \+\+pretrained_feature_extractor"):
        parse_linear_config(raw)
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(ConfigError, match=f"pretrained_feature_extractor: '{missing}' is not a file"):
        parse_linear_config({**raw, "pretrained_feature_extractor": str(missing)})


def test_missing_data_folder_fails_before_loading(some_file: Path, cifar_mini: Path,
                                                  tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.val_path: '/nonexistent/val' does not exist"):
        parse(some_file, cifar_mini, tmp_path, "++data.val_path=/nonexistent/val")


@pytest.mark.filterwarnings("ignore:.*holds pickled Python objects")
def test_unreadable_checkpoint_is_a_config_error(some_file: Path, cifar_mini: Path,
                                                 tmp_path: Path) -> None:
    cfg = parse(some_file, cifar_mini, tmp_path)
    with pytest.raises(ConfigError, match=f"pretrained_feature_extractor: '{some_file}' is not a "
                                          "readable checkpoint"):
        load_backbone(cfg)


# solo-learn's ImageNet-100 BYOL linear experiment, key for key
SOLO_LEARN_LINEAR = """\
defaults:
  - _self_
  - wandb: private.yaml
  - override hydra/hydra_logging: disabled
  - override hydra/job_logging: disabled

hydra:
  output_subdir: null
  run:
    dir: .

name: "byol-imagenet100-linear"
pretrained_feature_extractor: None
backbone:
  name: "resnet18"
pretrain_method: "byol"
data:
  dataset: imagenet100
  train_path: "./datasets/imagenet-100/train"
  val_path: "./datasets/imagenet-100/val"
  format: "dali"
  num_workers: 4
optimizer:
  name: "sgd"
  batch_size: 256
  lr: 0.3
  weight_decay: 0
scheduler:
  name: "step"
  lr_decay_steps: [60, 80]
checkpoint:
  enabled: True
  dir: "trained_models"
  frequency: 1
auto_resume:
  enabled: True

# overwrite PL stuff
max_epochs: 100
devices: [0]
sync_batchnorm: True
accelerator: "gpu"
strategy: "ddp"
precision: 16
"""


def test_unmodified_solo_learn_linear_yaml(some_file: Path, cifar_mini: Path, tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    (configs / "wandb").mkdir(parents=True)
    (configs / "byol.yaml").write_text(SOLO_LEARN_LINEAR)
    (configs / "wandb" / "private.yaml").write_text('enabled: True\nentity: None\nproject: "x"\n')
    overrides = [f"++pretrained_feature_extractor={some_file}",
                 f"++data.train_path={cifar_mini / 'train'}", f"++data.val_path={cifar_mini / 'test'}"]
    with pytest.warns(UserWarning, match="CPU loader"):
        cfg = parse_linear_config(load_raw(configs, "byol.yaml", overrides))
    assert cfg.data.format == "image_folder" and cfg.data.crop_size == 224 and cfg.num_classes == 100
    assert cfg.trainer == {"max_epochs": 100, "devices": [0], "sync_batchnorm": True,
                           "accelerator": "gpu", "strategy": "ddp", "precision": 16}
    assert cfg.pretrain_method == "byol" and cfg.wandb.enabled and not cfg.finetune
