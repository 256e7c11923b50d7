"""Barlow Twins, VICReg, VIbCReg and W-MSE: solo-learn's head layouts (module names, layer order,
IterNorm's buffers, so its checkpoints load whole), clear errors for impossible method_kwargs,
and solo-learn's own YAMLs for them (its layouts and recipe values; only data paths and devices
changed) accepted with the same meaning."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from solo.config import ConfigError
from solo.methods import METHODS
from tests.helpers import ROOT, shipped_config
from tests.test_solo_learn_yamls import HYDRA_HEADER, HYDRA_OVERRIDES, compose_and_parse, write

HIDDEN, OUT = 64, 128
OUT_WMSE = 32  # below the recipe's whitening_size of 128


def _linear(i: int, rows: int, cols: int) -> dict:
    return {f"{i}.weight": (rows, cols), f"{i}.bias": (rows,)}


def _bn(i: int, width: int) -> dict:
    return {f"{i}.weight": (width,), f"{i}.bias": (width,), f"{i}.running_mean": (width,),
            f"{i}.running_var": (width,), f"{i}.num_batches_tracked": ()}


# solo-learn's projectors (solo/methods/<method>.py there): Linear-BN-act blocks, then a Linear
THREE_LAYERS = {**_linear(0, HIDDEN, 512), **_bn(1, HIDDEN), **_linear(3, HIDDEN, HIDDEN),
                **_bn(4, HIDDEN), **_linear(6, OUT, HIDDEN)}
LAYOUTS = {
    "barlow_twins": (THREE_LAYERS, nn.ReLU),
    "vicreg": (THREE_LAYERS, nn.ReLU),
    # IterNorm(OUT, num_groups=64, T=5, dim=2) appended: 64 groups of OUT / 64 channels
    "vibcreg": ({**THREE_LAYERS, "7.weight": (1, OUT), "7.bias": (1, OUT),
                 "7.running_mean": (64, OUT // 64, 1), "7.running_wm": (64, OUT // 64, OUT // 64)},
                nn.GELU),
    "wmse": ({**_linear(0, HIDDEN, 512), **_bn(1, HIDDEN), **_linear(3, OUT_WMSE, HIDDEN)},
             nn.ReLU),
}


@pytest.mark.parametrize("method", sorted(LAYOUTS))
def test_projector_layout_is_solo_learns(method: str, cifar_mini: Path) -> None:
    out = OUT_WMSE if method == "wmse" else OUT
    extra = [f"++method_kwargs.proj_hidden_dim={HIDDEN}", f"++method_kwargs.proj_output_dim={out}"]
    model = METHODS.get(method)(shipped_config(method, cifar_mini, extra))
    expected, activation = LAYOUTS[method]
    assert {k: tuple(v.shape) for k, v in model.projector.state_dict().items()} == expected
    assert isinstance(model.projector[2], activation)
    # no other state than the base's and the projector: solo-learn's whitening has none
    assert {k.split(".")[0] for k in model.state_dict()} == {"backbone", "classifier", "projector"}


@pytest.mark.parametrize("method, override, message", [
    ("barlow_twins", "lamb=-0.1", "method_kwargs.lamb: must be >= 0"),
    ("barlow_twins", "scale_loss=0", "method_kwargs.scale_loss: must be > 0"),
    ("vicreg", "var_loss_weight=-1", "method_kwargs.var_loss_weight: must be >= 0"),
    ("vibcreg", "proj_output_dim=0", "method_kwargs.proj_output_dim: must be > 0"),
    ("wmse", "whitening_size=64",
     r"method_kwargs.whitening_size: must exceed proj_output_dim \(64\)"),
    ("wmse", "whitening_eps=1.0", r"method_kwargs.whitening_eps: must be in \[0, 1\)"),
    ("wmse", "whitening_iters=0", "method_kwargs.whitening_iters: must be > 0"),
])
def test_bad_method_kwargs_fail_with_the_key(method: str, override: str, message: str,
                                             cifar_mini: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        shipped_config(method, cifar_mini, [f"++method_kwargs.{override}"])


# ----------------------------------------------------------------------------------------------
# solo-learn's YAMLs, in its layouts (scripts/pretrain/cifar/{barlow,vicreg,vibcreg,wmse}.yaml,
# imagenet-100/{vibcreg,wmse}.yaml and their augmentations/ groups)
# ----------------------------------------------------------------------------------------------
def group(jitter: tuple, blur: float, solarization: float, crop: int, crops: int,
          enabled: bool = False) -> dict:
    """A crop group in solo-learn's keys (vicreg.yaml writes an `enabled` beside each prob)."""
    b, c, s, h = jitter
    ops = {"color_jitter": {"prob": 0.8, "brightness": b, "contrast": c, "saturation": s, "hue": h},
           "grayscale": {"prob": 0.2}, "gaussian_blur": {"prob": blur},
           "solarization": {"prob": solarization}, "equalization": {"prob": 0.0},
           "horizontal_flip": {"prob": 0.5}}
    if enabled:
        for name, op in ops.items():
            op["enabled"] = op["prob"] > 0 or name in ("color_jitter", "grayscale")
    return {"rrc": {"enabled": True, "crop_min_scale": 0.2, "crop_max_scale": 1.0}, **ops,
            "crop_size": crop, "num_crops": crops}


BYOL, SIMCLR = (0.4, 0.4, 0.2, 0.1), (0.8, 0.8, 0.8, 0.2)
WANDB = {"enabled": False, "entity": None, "project": "solo-learn"}
LARS = {"name": "lars", "batch_size": 256, "lr": 0.3, "classifier_lr": 0.1, "weight_decay": "1e-4",
        "kwargs": {"clip_lr": True, "eta": 0.02, "exclude_bias_n_norm": True}}
ADAM = {"name": "adam", "batch_size": 256, "lr": "2e-3", "classifier_lr": "3e-3",
        "weight_decay": "1e-6"}
KWARGS = {"barlow_twins": {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "scale_loss": 0.1},
          "vicreg": {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "sim_loss_weight": 25.0,
                     "var_loss_weight": 25.0, "cov_loss_weight": 1.0},
          "vibcreg": {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "sim_loss_weight": 25.0,
                      "var_loss_weight": 25.0, "cov_loss_weight": 200.0, "iternorm": True},
          "wmse": {"proj_hidden_dim": 1024, "proj_output_dim": 64, "whitening_size": 128}}


def solo_learn_yaml(method: str, dataset: str, group_file: str | None) -> dict:
    optimizer = dict(ADAM if method == "wmse" else LARS, kwargs=dict(LARS["kwargs"]))
    if method == "wmse":
        del optimizer["kwargs"]
    if method == "vibcreg" and dataset == "cifar10":
        del optimizer["kwargs"]["clip_lr"]  # its cifar/vibcreg.yaml leaves LARS's default
    scheduler = {"name": "warmup_cosine", **({"warmup_start_lr": 0} if method == "wmse" else {})}
    defaults = ["_self_", *([{"augmentations": group_file}] if group_file else []),
                {"wandb": "private.yaml"}, *HYDRA_OVERRIDES]
    return {"defaults": defaults, **HYDRA_HEADER, "name": f"{method}-{dataset}", "method": method,
            "backbone": {"name": "resnet18"}, "method_kwargs": KWARGS[method],
            "data": {"dataset": dataset, "train_path": "./datasets", "val_path": "./datasets",
                     "format": "image_folder", "num_workers": 4},
            "optimizer": optimizer, "scheduler": scheduler,
            "checkpoint": {"enabled": True, "dir": "trained_models", "frequency": 1},
            "auto_resume": {"enabled": True}, "max_epochs": 1000, "devices": [0],
            "sync_batchnorm": True, "accelerator": "gpu", "strategy": "ddp", "precision": 16}


def test_solo_learns_cifar_yamls_keep_their_meaning(tmp_path: Path, cifar_mini: Path) -> None:
    folder = tmp_path / "cifar"
    write(folder / "wandb" / "private.yaml", WANDB)
    write(folder / "augmentations" / "asymmetric.yaml",  # BYOL's views, solo-learn's cifar group
          [{**group(BYOL, 0.0, 0.0, 32, 1), "rrc": {"enabled": True, "crop_min_scale": 0.08,
                                                    "crop_max_scale": 1.0}},
           {**group(BYOL, 0.0, 0.2, 32, 1), "rrc": {"enabled": True, "crop_min_scale": 0.08,
                                                    "crop_max_scale": 1.0}}])
    write(folder / "barlow.yaml", solo_learn_yaml("barlow_twins", "cifar10", "asymmetric.yaml"))
    for method, views in [("vicreg", group(BYOL, 0.0, 0.1, 32, 2, enabled=True)),
                          ("vibcreg", group(BYOL, 0.0, 0.1, 32, 2)),
                          ("wmse", group(SIMCLR, 0.0, 0.0, 32, 2))]:
        write(folder / f"{method}.yaml",
              {**solo_learn_yaml(method, "cifar10", None), "augmentations": [views]})

    barlow = compose_and_parse(folder, "barlow.yaml", cifar_mini)
    kw = barlow.method_kwargs
    assert (kw.proj_hidden_dim, kw.proj_output_dim) == (2048, 2048)
    assert (kw.scale_loss, kw.lamb) == (0.1, 0.0051)  # lamb: solo-learn's default
    assert barlow.optimizer.kwargs == {"clip_lr": True, "eta": 0.02, "exclude_bias_n_norm": True}
    assert [a.solarization.prob for a in barlow.augmentations] == [0.0, 0.2]

    vicreg = compose_and_parse(folder, "vicreg.yaml", cifar_mini)
    assert (vicreg.method_kwargs.cov_loss_weight, vicreg.num_large_crops) == (1.0, 2)
    view = vicreg.augmentations[0]
    assert (view.rrc.crop_min_scale, view.solarization.prob) == (0.2, 0.1)
    assert view.gaussian_blur.prob == 0.0

    vibcreg = compose_and_parse(folder, "vibcreg.yaml", cifar_mini)
    assert vibcreg.method_kwargs.iternorm and vibcreg.method_kwargs.cov_loss_weight == 200.0
    assert "clip_lr" not in vibcreg.optimizer.kwargs  # LARS's default: off, as solo-learn's

    wmse = compose_and_parse(folder, "wmse.yaml", cifar_mini)
    kw = wmse.method_kwargs
    assert (kw.whitening_size, kw.whitening_iters, kw.whitening_eps) == (128, 1, 0.0)
    optimizer = wmse.optimizer
    assert (optimizer.name, optimizer.lr, optimizer.classifier_lr) == ("adam", 2e-3, 3e-3)
    assert wmse.scheduler.warmup_start_lr == 0.0
    assert wmse.augmentations[0].color_jitter.brightness == 0.8


def test_solo_learns_imagenet100_yamls_keep_their_meaning(tmp_path: Path, cifar_mini: Path) -> None:
    folder = tmp_path / "imagenet-100"
    write(folder / "wandb" / "private.yaml", WANDB)
    write(folder / "augmentations" / "vicreg.yaml", [group(BYOL, 0.5, 0.1, 224, 2)])
    write(folder / "augmentations" / "wmse.yaml",
          [group(SIMCLR, 0.2, 0.0, 224, 2), group(SIMCLR, 0.2, 0.0, 96, 6)])
    for method, group_file in [("vibcreg", "vicreg.yaml"), ("wmse", "wmse.yaml")]:
        raw = solo_learn_yaml(method, "imagenet100", group_file)
        raw["optimizer"]["batch_size"], raw["max_epochs"], raw["devices"] = 128, 400, [0, 1]
        write(folder / f"{method}.yaml", raw)
    vibcreg = compose_and_parse(folder, "vibcreg.yaml", cifar_mini)
    assert vibcreg.augmentations[0].gaussian_blur.prob == 0.5
    assert vibcreg.optimizer.batch_size == 128
    wmse = compose_and_parse(folder, "wmse.yaml", cifar_mini)
    assert (wmse.num_large_crops, wmse.num_small_crops) == (2, 6)
    assert [a.crop_size for a in wmse.augmentations] == [224, 96]


def test_solo_learns_imagenet_barlow_yaml_is_our_shipped_recipe(tmp_path: Path,
                                                                 cifar_mini: Path) -> None:
    """solo-learn's scripts/pretrain/imagenet/barlow.yaml (ResNet-50, 100 epochs, DALI) parses to
    the recipe we ship under the same name."""
    folder = tmp_path / "imagenet"
    write(folder / "wandb" / "private.yaml", WANDB)
    write(folder / "augmentations" / "asymmetric.yaml",
          [{**group(BYOL, 1.0, 0.0, 224, 1), "rrc": {"enabled": True, "crop_min_scale": 0.08,
                                                      "crop_max_scale": 1.0}},
           {**group(BYOL, 0.1, 0.2, 224, 1), "rrc": {"enabled": True, "crop_min_scale": 0.08,
                                                      "crop_max_scale": 1.0}}])
    raw = solo_learn_yaml("barlow_twins", "imagenet", "asymmetric.yaml")
    raw["backbone"]["name"] = "resnet50"
    raw["method_kwargs"] = {"proj_hidden_dim": 4096, "proj_output_dim": 4096, "lamb": 0.0051,
                            "scale_loss": 0.048}
    raw["data"]["format"] = "dali"
    raw["optimizer"] = {"name": "lars", "batch_size": 64, "lr": 0.8, "classifier_lr": 0.1,
                        "weight_decay": 1.5e-6,
                        "kwargs": {"clip_lr": False, "eta": 0.001, "exclude_bias_n_norm": True}}
    raw["max_epochs"], raw["devices"] = 100, [0, 1, 2, 3]
    write(folder / "barlow.yaml", raw)
    theirs = compose_and_parse(folder, "barlow.yaml", cifar_mini)
    ours = compose_and_parse(ROOT / "scripts" / "pretrain" / "imagenet", "barlow.yaml", cifar_mini)
    assert theirs.method_kwargs == ours.method_kwargs and theirs.optimizer == ours.optimizer
    assert theirs.scheduler == ours.scheduler and theirs.augmentations == ours.augmentations
    assert (ours.backbone.name, ours.data.format) == ("resnet50", "dali")
    assert ours.trainer["max_epochs"] == theirs.trainer["max_epochs"] == 100
