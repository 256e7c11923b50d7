"""Every layout of solo-learn's shipped experiment YAMLs, for the methods solo has, composed by
Hydra as main_pretrain.py does and parsed: each key is honoured with solo-learn's meaning or
rejected with a reason. The files are written here in solo-learn's layouts (its key names and
recipe values; see the README's note on solo-learn's configs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from solo.config import ConfigError, parse_config

HYDRA_HEADER = {"hydra": {"output_subdir": None, "run": {"dir": "."}}}
HYDRA_OVERRIDES = [{"override hydra/hydra_logging": "disabled"},
                   {"override hydra/job_logging": "disabled"}]


def op_groups(enabled: bool | None, blur: float, solarization: float, crop: int = 32,
              crops: int = 1, min_scale: float = 0.08) -> dict:
    """One crop group in solo-learn's keys; ``enabled`` adds its per-op switch."""
    ops = {"color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2,
                            "hue": 0.1},
           "grayscale": {"prob": 0.2}, "gaussian_blur": {"prob": blur},
           "solarization": {"prob": solarization}, "equalization": {"prob": 0.0},
           "horizontal_flip": {"prob": 0.5}}
    if enabled is not None:
        for name, op in ops.items():
            op["enabled"] = enabled if name != "horizontal_flip" else True
    return {"rrc": {"enabled": True, "crop_min_scale": min_scale, "crop_max_scale": 1.0}, **ops,
            "crop_size": crop, "num_crops": crops}


def experiment(method: str, dataset: str, data_format: str = "image_folder") -> dict:
    kwargs = {"byol": {"proj_hidden_dim": 4096, "proj_output_dim": 256, "pred_hidden_dim": 8192},
              "simclr": {"proj_hidden_dim": 4096, "proj_output_dim": 512, "temperature": 0.2},
              "mocov2plus": {"proj_hidden_dim": 2048, "queue_size": 65536, "temperature": 0.2}}
    optimizer = {"byol": {"name": "lars", "batch_size": 128, "lr": 0.5, "classifier_lr": 0.1,
                          "weight_decay": "1e-5",
                          "kwargs": {"clip_lr": True, "eta": 0.02, "exclude_bias_n_norm": True}},
                 "simclr": {"name": "lars", "batch_size": 64, "lr": 0.3, "classifier_lr": 0.1,
                            "weight_decay": "1e-4",
                            "kwargs": {"clip_lr": True, "eta": 0.02, "exclude_bias_n_norm": True}},
                 "mocov2plus": {"name": "sgd", "batch_size": 64, "lr": 0.3, "classifier_lr": 0.3,
                                "weight_decay": "1e-4"}}
    raw = {"name": f"{method}-{dataset}", "method": method, "backbone": {"name": "resnet18"},
           "method_kwargs": kwargs[method],
           "data": {"dataset": dataset, "train_path": "PATH_TO_TRAIN_DIR",
                    "val_path": "PATH_TO_VAL_DIR", "format": data_format, "num_workers": 4},
           "optimizer": optimizer[method], "scheduler": {"name": "warmup_cosine"},
           "checkpoint": {"enabled": True, "dir": "trained_models", "frequency": 1},
           "auto_resume": {"enabled": True}, "max_epochs": 400, "devices": [0, 1],
           "sync_batchnorm": True, "accelerator": "gpu", "strategy": "ddp", "precision": 16}
    if method != "simclr":
        raw["momentum"] = {"base_tau": 0.99, "final_tau": 1.0}
    return raw


def write(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content, sort_keys=False))


def compose_and_parse(folder: Path, name: str, data: Path, cwd: Path | None = None):
    """As main_pretrain.py: Hydra composes the file, the user overrides paths and devices only."""
    overrides = [f"++data.train_path={data / 'train'}", f"++data.val_path={data / 'test'}",
                 "++accelerator=cpu", "++devices=1"]
    previous = os.getcwd()
    os.chdir(cwd or previous)
    try:
        with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
            raw = OmegaConf.to_container(compose(config_name=name, overrides=overrides), resolve=True)
        return parse_config(raw)
    finally:
        os.chdir(previous)


def wandb_group(folder: Path) -> None:
    write(folder / "wandb" / "private.yaml",
          {"enabled": True, "entity": "None", "project": "solo-learn"})


def test_defaults_list_with_op_switches_and_an_accumulating_imagenet_recipe(tmp_path: Path,
                                                                            cifar_mini: Path) -> None:
    """custom/byol.yaml's layout: a defaults list, augmentations whose ops carry `enabled`
    (an op with enabled: False is off, whatever its prob), DALI format; imagenet/byol.yaml's
    accumulate_grad_batches: 16 and LARS without clipping."""
    folder = tmp_path / "custom"
    write(folder / "augmentations" / "asymmetric.yaml",
          [op_groups(True, 1.0, 0.0, crop=224), op_groups(False, 0.1, 0.2, crop=224)])
    wandb_group(folder)
    raw = {"defaults": ["_self_", {"augmentations": "asymmetric.yaml"}, {"wandb": "private.yaml"},
                        *HYDRA_OVERRIDES], **HYDRA_HEADER, **experiment("byol", "custom", "dali")}
    raw["data"]["no_labels"] = False
    raw["optimizer"]["kwargs"].update({"clip_lr": False, "eta": 0.001})
    raw["accumulate_grad_batches"] = 16
    write(folder / "byol.yaml", raw)
    cfg = compose_and_parse(folder, "byol.yaml", cifar_mini)
    first, second = cfg.augmentations
    assert (first.gaussian_blur.prob, first.color_jitter.prob) == (1.0, 0.8)
    for op in (second.color_jitter, second.grayscale, second.gaussian_blur, second.solarization):
        assert op.enabled is False and op.prob == 0.0  # switched off
    assert second.horizontal_flip.prob == 0.5
    assert cfg.trainer["accumulate_grad_batches"] == 16 and cfg.data.format == "dali"
    assert cfg.optimizer.kwargs == {"clip_lr": False, "eta": 0.001, "exclude_bias_n_norm": True}
    assert cfg.wandb.enabled and cfg.wandb.entity is None and cfg.wandb.project == "solo-learn"


@pytest.mark.parametrize("method", ["byol", "simclr", "mocov2plus"])
def test_older_layout_with_augmentations_cfg_and_wandb_cfg(tmp_path: Path, cifar_mini: Path,
                                                           method: str) -> None:
    """imagenet-100/{simclr,mocov2plus,multicrop/byol}.yaml: no defaults list; the crop groups and
    the wandb settings are files named by augmentations_cfg and wandb_cfg, read from the folder
    the command runs in; the group file wraps them in data: augmentations:."""
    groups = [op_groups(None, 1.0, 0.0, crop=224, crops=2),
              op_groups(None, 0.5, 0.0, crop=96, crops=6, min_scale=0.05)]
    write(tmp_path / "scripts/configs/defaults/augmentations/multicrop.yaml",
          {"data": {"augmentations": groups}})
    write(tmp_path / "scripts/configs/defaults/wandb/private.yaml",
          {"wandb": {"enabled": True, "entity": "None", "project": "solo-learn"}})
    raw = experiment(method, "imagenet100", "dali")
    raw["augmentations_cfg"] = "scripts/configs/defaults/augmentations/multicrop.yaml"
    raw["wandb_cfg"] = "scripts/configs/defaults/wandb/private.yaml"
    if method == "mocov2plus":
        # its momentum schedule in the older names too; solo-learn reads the momentum section
        raw["method_kwargs"].update({"base_tau_momentum": 0.99, "final_tau_momentum": 0.999})
    write(tmp_path / "configs" / f"{method}.yaml", raw)
    if method == "mocov2plus":
        with pytest.warns(UserWarning) as caught:
            cfg = compose_and_parse(tmp_path / "configs", f"{method}.yaml", cifar_mini, cwd=tmp_path)
        assert sorted(str(w.message) for w in caught) == [
            f"method_kwargs.{old} ({value}) is ignored, as solo-learn ignores it: momentum.{new} "
            "sets the momentum schedule" for old, value, new in
            [("base_tau_momentum", 0.99, "base_tau"), ("final_tau_momentum", 0.999, "final_tau")]]
    else:
        cfg = compose_and_parse(tmp_path / "configs", f"{method}.yaml", cifar_mini, cwd=tmp_path)
    assert (cfg.num_large_crops, cfg.num_small_crops) == (2, 6)
    assert cfg.augmentations[1].rrc.crop_min_scale == 0.05 and cfg.wandb.enabled
    if method == "mocov2plus":
        assert cfg.momentum.final_tau == 1.0  # the momentum section, as solo-learn
        assert cfg.method_kwargs.queue_size == 65536
    # the file must exist where the command runs
    with pytest.raises(ConfigError, match="augmentations_cfg: 'scripts/configs/.*' does not exist"):
        compose_and_parse(tmp_path / "configs", f"{method}.yaml", cifar_mini, cwd=cifar_mini)


def test_crop_groups_under_data_and_wrapped_group_files(tmp_path: Path, cifar_mini: Path) -> None:
    """imagenet-100/wmse.yaml lists the crop groups under data.augmentations; cifar/ressl.yaml's
    group file wraps them in data: augmentations:, pulled in by the defaults list."""
    folder = tmp_path / "cifar"
    write(folder / "augmentations" / "wrapped.yaml",
          {"data": {"augmentations": [op_groups(True, 0.0, 0.0, crops=2)]}})
    wandb_group(folder)
    raw = {"defaults": ["_self_", {"augmentations": "wrapped.yaml"}, {"wandb": "private.yaml"}],
           **experiment("simclr", "cifar10")}
    write(folder / "wrapped.yaml", raw)
    assert compose_and_parse(folder, "wrapped.yaml", cifar_mini).num_large_crops == 2
    inline = {"defaults": ["_self_", {"wandb": "private.yaml"}], **experiment("simclr", "cifar10")}
    inline["data"]["augmentations"] = [op_groups(True, 0.0, 0.0, crops=2)]
    write(folder / "inline.yaml", inline)
    assert compose_and_parse(folder, "inline.yaml", cifar_mini).num_large_crops == 2


def test_older_names_without_the_momentum_section_are_rejected_with_the_new_name(
        tmp_path: Path, cifar_mini: Path) -> None:
    raw = experiment("mocov2plus", "cifar10")
    raw["augmentations"] = [op_groups(None, 0.0, 0.0, crops=2)]
    del raw["momentum"]
    raw["method_kwargs"]["final_tau_momentum"] = 0.999
    write(tmp_path / "old.yaml", raw)
    with pytest.raises(ConfigError, match=r"method_kwargs\.final_tau_momentum: .*momentum\.final_tau"):
        compose_and_parse(tmp_path, "old.yaml", cifar_mini)


def test_debug_augmentations_and_dali_indexes_are_accepted(tmp_path: Path, cifar_mini: Path) -> None:
    raw = experiment("byol", "imagenet100")
    raw["augmentations"] = [op_groups(None, 1.0, 0.0, crop=224, crops=2)]
    raw["debug_augmentations"] = False
    raw["dali"] = {"encode_indexes_into_labels": True}
    write(tmp_path / "byol.yaml", raw)
    cfg = compose_and_parse(tmp_path, "byol.yaml", cifar_mini)
    assert cfg.dali.encode_indexes_into_labels and not cfg.debug_augmentations


def test_linear_yaml(tmp_path: Path, cifar_mini: Path) -> None:
    """imagenet-100/byol.yaml of scripts/linear: its placeholder checkpoint None, DALI format,
    the step schedule, 16-mixed precision; the user gives the checkpoint, paths and devices."""
    from solo.eval.linear_config import parse_linear_config

    folder = tmp_path / "linear"
    wandb_group(folder)
    raw = {"defaults": ["_self_", {"wandb": "private.yaml"}, *HYDRA_OVERRIDES], **HYDRA_HEADER,
           "name": "byol-imagenet100-linear", "pretrained_feature_extractor": "None",
           "backbone": {"name": "resnet18"}, "pretrain_method": "byol",
           "data": {"dataset": "imagenet100", "train_path": "./datasets/imagenet-100/train",
                    "val_path": "./datasets/imagenet-100/val", "format": "dali",
                    "num_workers": 4},
           "optimizer": {"name": "sgd", "batch_size": 256, "lr": 0.3, "weight_decay": 0},
           "scheduler": {"name": "step", "lr_decay_steps": [60, 80]},
           "checkpoint": {"enabled": True, "dir": "trained_models", "frequency": 1},
           "auto_resume": {"enabled": True}, "max_epochs": 100, "devices": [0],
           "sync_batchnorm": True, "accelerator": "gpu", "strategy": "ddp",
           "precision": "16-mixed"}
    write(folder / "byol.yaml", raw)
    checkpoint = tmp_path / "byol.ckpt"
    checkpoint.write_bytes(b"")  # only its existence is checked when the config is read
    with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
        composed = compose(config_name="byol.yaml", overrides=[
            f"++pretrained_feature_extractor={checkpoint}", f"++data.train_path={cifar_mini / 'train'}",
            f"++data.val_path={cifar_mini / 'test'}", "++devices=1", "++accelerator=cpu"])
    with pytest.warns(UserWarning, match="data.format 'dali'"):
        cfg = parse_linear_config(OmegaConf.to_container(composed, resolve=True))
    assert cfg.scheduler.lr_decay_steps == [60, 80] and cfg.optimizer.weight_decay == 0.0
    assert cfg.trainer["precision"] == "16-mixed" and cfg.pretrain_method == "byol"
