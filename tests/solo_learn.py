"""solo-learn's files, rebuilt for tests from what solo-learn writes (facts: module names and
layer order of its methods, the keys its main_pretrain saves in args.json), never its code."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

# the top of every solo-learn experiment YAML: its config groups, Hydra's own output switched off
YAML_HEADER = """\
defaults:
  - _self_
  - augmentations: {augmentations}
  - wandb: private.yaml
  - override hydra/hydra_logging: disabled
  - override hydra/job_logging: disabled

# disable hydra outputs
hydra:
  output_subdir: null
  run:
    dir: .
"""


# one crop group of solo-learn's augmentation files; the fields its recipes vary are parameters
CROP_GROUP = """\
- rrc:
    enabled: True
    crop_min_scale: {min_scale}
    crop_max_scale: {max_scale}
  color_jitter:
    prob: 0.8
    brightness: {brightness}
    contrast: {brightness}
    saturation: {saturation}
    hue: {hue}
  grayscale:
    prob: 0.2
  gaussian_blur:
    prob: {blur}
  solarization:
    prob: {solarization}
  equalization:
    prob: 0.0
  horizontal_flip:
    prob: 0.5
  crop_size: {crop}
  num_crops: {crops}
"""


def augmentation_group(crop: int, crops: int = 1, min_scale: float = 0.08,
                       max_scale: float = 1.0, brightness: float = 0.4, saturation: float = 0.2, hue: float = 0.1,
                       blur: float = 0.0, solarization: float = 0.0) -> str:
    """One entry of a solo-learn augmentation file (contrast equals brightness in all of them)."""
    return CROP_GROUP.format(crop=crop, crops=crops, min_scale=min_scale, max_scale=max_scale,
                             brightness=brightness, saturation=saturation, hue=hue, blur=blur,
                             solarization=solarization)


def asymmetric_groups(crop: int = 32, blur: tuple[float, float] = (0.0, 0.0)) -> str:
    """solo-learn's augmentations/asymmetric.yaml (BYOL's two views) at ``crop`` pixels, with
    the two views' blur probabilities (its CIFAR file: none; ImageNet-100's: 1.0 and 0.1)."""
    return (augmentation_group(crop, blur=blur[0]) + "\n"
            + augmentation_group(crop, blur=blur[1], solarization=0.2))


# the recipes of solo-learn's scripts/pretrain/cifar YAMLs, small heads for speed
METHOD_KWARGS = {
    "byol": {"proj_hidden_dim": 64, "proj_output_dim": 32, "pred_hidden_dim": 48},
    "simclr": {"proj_hidden_dim": 64, "proj_output_dim": 32, "temperature": 0.2},
    "mocov2plus": {"proj_hidden_dim": 64, "proj_output_dim": 32, "queue_size": 512,
                   "temperature": 0.2},
}
OPTIMIZERS = {
    "byol": {"name": "lars", "batch_size": 256, "lr": 1.0, "classifier_lr": 0.1,
             "weight_decay": 1e-5,
             "kwargs": {"clip_lr": True, "eta": 0.02, "exclude_bias_n_norm": True, "momentum": 0.9}},
    "simclr": {"name": "lars", "batch_size": 256, "lr": 0.4, "classifier_lr": 0.1,
               "weight_decay": 1e-5,
               "kwargs": {"clip_lr": True, "eta": 0.02, "exclude_bias_n_norm": True, "momentum": 0.9}},
    "mocov2plus": {"name": "sgd", "batch_size": 256, "lr": 0.3, "classifier_lr": 0.3,
                   "weight_decay": 1e-4, "kwargs": {"momentum": 0.9}},
}


def resnet18_cifar() -> nn.Module:
    """solo-learn's CIFAR backbone: torchvision's ResNet-18, fc removed, 3x3 stride-1 stem with
    padding 2, no max-pool."""
    net = torchvision.models.resnet18()
    net.fc = nn.Identity()
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    net.maxpool = nn.Identity()
    return net


def two_layer(in_dim: int, hidden: int, out: int, batch_norm: bool) -> nn.Sequential:
    middle = [nn.BatchNorm1d(hidden)] if batch_norm else []
    return nn.Sequential(nn.Linear(in_dim, hidden), *middle, nn.ReLU(), nn.Linear(hidden, out))


def solo_learn_model(method: str, kwargs: dict[str, Any], num_classes: int,
                     momentum_classifier: bool = False, seed: int = 1) -> nn.Module:
    """The modules solo-learn's BaseMethod / BaseMomentumMethod and method classes create, under
    their names, with batch-norm statistics unlike a fresh model's; in eval mode."""
    torch.manual_seed(seed)
    model = nn.Module()
    model.backbone = resnet18_cifar()
    model.classifier = nn.Linear(512, num_classes)
    if method != "simclr":
        model.momentum_backbone = copy.deepcopy(model.backbone)
    if momentum_classifier:
        model.momentum_classifier = nn.Linear(512, num_classes)
    hidden, out = kwargs["proj_hidden_dim"], kwargs["proj_output_dim"]
    if method == "simclr":
        model.projector = two_layer(512, hidden, out, batch_norm=False)
    elif method == "byol":
        model.projector = two_layer(512, hidden, out, batch_norm=True)
        model.momentum_projector = copy.deepcopy(model.projector)
        model.predictor = two_layer(out, kwargs["pred_hidden_dim"], out, batch_norm=True)
    else:  # mocov2plus
        model.projector = two_layer(512, hidden, out, batch_norm=False)
        model.momentum_projector = copy.deepcopy(model.projector)
        model.register_buffer("queue", nn.functional.normalize(
            torch.randn(2, out, kwargs["queue_size"]), dim=1))
        model.register_buffer("queue_ptr", torch.tensor([128], dtype=torch.long))
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
    return model.eval()


def crop_group(solarization: float) -> dict[str, Any]:
    return {"rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
            "color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2,
                             "hue": 0.1},
            "grayscale": {"prob": 0.2}, "gaussian_blur": {"prob": 0.0},
            "solarization": {"prob": solarization}, "equalization": {"prob": 0.0},
            "horizontal_flip": {"prob": 0.5}, "crop_size": 32, "num_crops": 1}


def solo_learn_args(method: str, data_root: Path) -> dict[str, Any]:
    """What solo-learn's main_pretrain writes into args.json for a CIFAR-10 run: the YAML's keys,
    the defaults its parse_cfg and methods fill in, the values it derives (crop counts, classes,
    the lr scaled by batch/256) and the wandb run id."""
    momentum_method = method != "simclr"
    args = {
        "name": f"{method}-cifar10", "method": method,
        "backbone": {"name": "resnet18", "kwargs": {}},
        "method_kwargs": dict(METHOD_KWARGS[method]),
        "data": {"dataset": "cifar10", "train_path": str(data_root / "train"),
                 "val_path": str(data_root / "test"), "format": "image_folder", "num_workers": 4,
                 "no_labels": False, "fraction": -1, "num_classes": 10,
                 "num_large_crops": 2, "num_small_crops": 0},
        "augmentations": [crop_group(0.0), crop_group(0.2)],
        "optimizer": {**OPTIMIZERS[method], "exclude_bias_n_norm_wd": False},
        "scheduler": {"name": "warmup_cosine", "lr_decay_steps": None, "min_lr": 0.0,
                      "warmup_start_lr": 3e-05, "warmup_epochs": 10, "interval": "step"},
        "checkpoint": {"enabled": True, "dir": "trained_models", "frequency": 1, "keep_prev": False},
        "auto_resume": {"enabled": True, "max_hours": 36},
        "dali": {"device": "gpu", "encode_indexes_into_labels": False},
        "auto_umap": {"enabled": False, "dir": "auto_umap", "frequency": 1},
        "knn_eval": {"enabled": True, "k": 20, "distance_func": "cosine"},
        "performance": {"disable_channel_last": False},
        "wandb": {"enabled": True, "entity": None, "project": "solo-learn", "offline": False},
        "max_epochs": 1000, "devices": [0], "sync_batchnorm": True, "accelerator": "gpu",
        "strategy": "ddp", "precision": 16, "seed": 5, "resume_from_checkpoint": None,
        "num_nodes": 1, "accumulate_grad_batches": 1, "debug_augmentations": False,
        "wandb_run_id": "3fh2k9xq",
    }
    if momentum_method:
        final_tau = 0.999 if method == "mocov2plus" else 1.0
        args["momentum"] = {"base_tau": 0.99, "final_tau": final_tau, "classifier": False}
    return args


def write_solo_learn_run(root: Path, method: str, data_root: Path) -> tuple[Path, nn.Module]:
    """A run folder as solo-learn leaves it: ``<root>/<method>/<wandb id>/args.json`` and
    ``<name>-<wandb id>-ep=999.ckpt`` (a Lightning checkpoint without hyper-parameters)."""
    args = solo_learn_args(method, data_root)
    model = solo_learn_model(method, args["method_kwargs"], 10)
    run_dir = root / method / args["wandb_run_id"]
    run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text(json.dumps(args))
    checkpoint = run_dir / f"{args['name']}-{args['wandb_run_id']}-ep=999.ckpt"
    torch.save({"epoch": 999, "global_step": 195000, "pytorch-lightning_version": "2.0.7",
                "state_dict": model.state_dict(), "loops": {}, "callbacks": {},
                "optimizer_states": [], "lr_schedulers": []}, checkpoint)
    return checkpoint, model
