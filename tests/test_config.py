"""The config validator: typos, missing keys and impossible values fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from solo.config import ConfigError, parse_config
from tests.helpers import CIFAR_CONFIGS, load_raw, small_cpu_overrides


@pytest.fixture
def raw(cifar_mini: Path) -> dict:
    return load_raw(CIFAR_CONFIGS, "byol.yaml", small_cpu_overrides(cifar_mini))


def parse_error(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return str(info.value)


def test_shipped_byol_config_parses_with_its_recipe(raw: dict) -> None:
    cfg = parse_config(raw)
    assert (cfg.method, cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay) == \
        ("byol", "lars", 1.0, 1e-5)  # 1e-5 arrives from YAML as a string; it must become a float
    assert cfg.method_kwargs.proj_hidden_dim == 4096 and cfg.method_kwargs.pred_hidden_dim == 4096
    assert (cfg.momentum.base_tau, cfg.momentum.final_tau) == (0.99, 1.0)
    assert cfg.num_large_crops == 2 and cfg.num_small_crops == 0 and cfg.num_classes == 10
    assert cfg.augmentations[1].solarization.prob == 0.2  # asymmetric: only the second view
    assert cfg.trainer["max_epochs"] == 1000 and cfg.trainer["sync_batchnorm"] is True
    assert cfg.wandb.entity is None  # YAML's string "None"


def test_unknown_top_level_key_names_the_closest(raw: dict) -> None:
    raw["max_epoch"] = 3
    message = parse_error(raw)
    assert "'max_epoch'" in message and 'did you mean "max_epochs"' in message


def test_unknown_nested_key_names_its_full_path(raw: dict) -> None:
    raw["optimizer"]["weight_decy"] = 1e-4
    message = parse_error(raw)
    assert "optimizer.weight_decy" in message and '"weight_decay"' in message
    raw["optimizer"].pop("weight_decy")
    raw["augmentations"][1]["color_jitter"]["brightnes"] = 0.4
    message = parse_error(raw)
    assert "augmentations[1].color_jitter.brightnes" in message and '"brightness"' in message


def test_optimizer_kwargs_are_checked_against_the_optimizer(raw: dict) -> None:
    raw["optimizer"]["kwargs"]["etaa"] = 0.02
    message = parse_error(raw)
    assert "optimizer.kwargs.etaa" in message and '"eta"' in message and "clip_lr" in message


def test_method_kwargs_are_checked_against_the_method(raw: dict) -> None:
    raw["method_kwargs"]["proj_hiden_dim"] = 10
    message = parse_error(raw)
    assert "method_kwargs.proj_hiden_dim" in message and '"proj_hidden_dim"' in message


def test_unknown_method_lists_the_valid_ones(raw: dict) -> None:
    raw["method"] = "byl"
    message = parse_error(raw)
    assert "byl" in message and '"byol"' in message and "simclr" in message


def test_missing_required_key(raw: dict) -> None:
    del raw["data"]["dataset"]
    assert "missing required key 'data.dataset'" in parse_error(raw)
    raw["data"]["dataset"] = "cifar10"
    del raw["optimizer"]["lr"]
    assert "missing required key 'optimizer.lr'" in parse_error(raw)


@pytest.mark.parametrize("section, key, value, expected", [
    ("momentum", "base_tau", 1.5, "momentum.base_tau"),
    ("optimizer", "name", "sdg", '"sgd"'),
    ("optimizer", "batch_size", 0, "optimizer.batch_size"),
    ("optimizer", "lr", "fast", "optimizer.lr: must be a number"),
    ("data", "dataset", "cifar11", '"cifar10"'),
    ("scheduler", "name", "cosine", "scheduler.name"),
    ("knn_eval", "distance_func", "manhattan", "knn_eval.distance_func"),
])
def test_impossible_values_name_the_key(raw: dict, section: str, key: str, value, expected: str) -> None:
    raw.setdefault(section, {})[key] = value
    assert expected in parse_error(raw)


def test_impossible_augmentation_value(raw: dict) -> None:
    raw["augmentations"][0]["rrc"]["crop_min_scale"] = 2.0
    assert "augmentations[0].rrc.crop_min_scale" in parse_error(raw)


def test_custom_dataset_counts_class_folders(raw: dict, cifar_mini: Path) -> None:
    raw["data"]["dataset"] = "custom"
    assert parse_config(raw).num_classes == 10
    raw["data"]["train_path"] = str(cifar_mini / "nowhere")
    assert "data.train_path" in parse_error(raw)


def test_unknown_backbone_is_a_config_error(raw: dict) -> None:
    raw["backbone"]["name"] = "resnet5"
    message = parse_error(raw)
    assert message.startswith("backbone.name: unknown backbone 'resnet5'") and "resnet50" in message


def test_knn_without_labelled_training_images_is_a_config_error(raw: dict, cifar_mini: Path) -> None:
    raw = {**raw, "data": {**raw["data"], "dataset": "custom", "no_labels": True,
                           "train_path": str(cifar_mini / "train")},
           "knn_eval": {**raw["knn_eval"], "enabled": True}}
    with pytest.raises(ConfigError, match=r"knn_eval\.enabled: .*no labels.*knn_eval\.enabled: False"):
        parse_config(raw)
    raw["knn_eval"]["enabled"] = False
    assert parse_config(raw).data.no_labels


@pytest.mark.parametrize("queue, batch, devices, ok", [
    (32768, 256, [0], True), (32768, 256, [0, 1], True), (32768, 256, [0, 1, 2], False),
    (1000, 256, [0], False), (128, 256, [0], False), (512, 256, 2, True)])
def test_queue_size_is_a_multiple_of_the_global_batch(cifar_mini: Path, queue: int, batch: int,
                                                      devices, ok: bool) -> None:
    raw = load_raw(CIFAR_CONFIGS, "mocov2plus.yaml", small_cpu_overrides(cifar_mini) + [
        f"++method_kwargs.queue_size={queue}", f"++optimizer.batch_size={batch}",
        f"++devices={devices}"])
    if ok:
        assert parse_config(raw).method_kwargs.queue_size == queue
    else:
        with pytest.raises(ConfigError, match=r"method_kwargs\.queue_size: .* not a multiple of "
                                              r"the global batch"):
            parse_config(raw)


@pytest.mark.parametrize("devices, count", [
    ([0, 1], 2), (2, 2), ("3", 3), ("0,1", 2), ("1,", 1), ("auto", None), (-1, None),
    ("-1", None)])
def test_device_count_reads_devices_as_lightning_does(devices, count) -> None:
    from solo.config import device_count

    assert device_count(devices) == count


def test_queue_size_is_not_checked_against_every_device(cifar_mini: Path) -> None:
    # devices -1 (all of them): the count is not known before the run, so no check here (one
    # against a negative "global batch" would pass or fail by chance)
    raw = load_raw(CIFAR_CONFIGS, "mocov2plus.yaml", small_cpu_overrides(cifar_mini) + [
        "++method_kwargs.queue_size=1000", "++optimizer.batch_size=256", "++devices=-1"])
    assert parse_config(raw).method_kwargs.queue_size == 1000


def test_queue_size_is_checked_at_fit_start_when_devices_are_auto(cifar_mini: Path) -> None:
    import lightning.pytorch as pl

    from solo.data import build_pipeline
    from solo.methods import METHODS
    from solo.pretrain import trainer_kwargs

    cfg = parse_config(load_raw(CIFAR_CONFIGS, "mocov2plus.yaml", small_cpu_overrides(cifar_mini) + [
        "++method_kwargs.queue_size=40", "++devices=auto", "++knn_eval.enabled=False"]))
    trainer = pl.Trainer(**{**trainer_kwargs(cfg), "max_epochs": 1, "limit_train_batches": 1,
                            "limit_val_batches": 0, "logger": False, "enable_progress_bar": False,
                            "enable_model_summary": False})
    with pytest.raises(ConfigError, match=r"method_kwargs\.queue_size: 40 .* global batch of 16"):
        trainer.fit(METHODS.get("mocov2plus")(cfg), datamodule=build_pipeline(cfg))
