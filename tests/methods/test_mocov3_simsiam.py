"""MoCo v3, SimSiam and NNSiam beyond the parametrized method tests: solo-learn's head layouts
load whole, the predictor's fixed lr through a real run, NNSiam's support queue, bad options,
and solo-learn's own YAMLs for the three methods parsed with their meaning."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solo.config import ConfigError, parse_config
from solo.losses import simsiam_loss
from solo.nn import nearest_neighbours
from solo.methods import METHODS
from solo.methods.base import EncodedBatch
from tests.helpers import ROOT, load_raw, shipped_config
from tests.methods.test_methods import fit
from tests.test_solo_learn_yamls import (HYDRA_HEADER, HYDRA_OVERRIDES, compose_and_parse,
                                         op_groups, wandb_group, write)

SMALL = ["++method_kwargs.proj_hidden_dim=64", "++method_kwargs.proj_output_dim=32",
         "++method_kwargs.pred_hidden_dim=48"]


# ----------------------------------------------------------------------------------------------
# solo-learn's heads (module names, layer order, biases: facts of its method files)
# ----------------------------------------------------------------------------------------------
def linear_bn_relu(i: int, o: int) -> list[nn.Module]:
    return [nn.Linear(i, o, bias=False), nn.BatchNorm1d(o), nn.ReLU()]


def solo_learn_heads(method: str, width: int, vit: bool = False) -> dict[str, nn.Sequential]:
    hidden, out, pred = 64, 32, 48
    if method == "mocov3":  # every Linear without bias
        projector = ([*linear_bn_relu(width, hidden), *linear_bn_relu(hidden, hidden)] if vit
                     else linear_bn_relu(width, hidden))
        projector += [nn.Linear(hidden, out, bias=False), nn.BatchNorm1d(out, affine=False)]
        predictor = [*linear_bn_relu(out, pred), nn.Linear(pred, out, bias=False)]
        if vit:
            predictor.append(nn.BatchNorm1d(out, affine=False))
        return {"projector": nn.Sequential(*projector), "predictor": nn.Sequential(*predictor)}
    # simsiam / nnsiam: the last Linears keep their bias
    projector = nn.Sequential(*linear_bn_relu(width, hidden), *linear_bn_relu(hidden, hidden),
                              nn.Linear(hidden, out), nn.BatchNorm1d(out, affine=False))
    predictor = nn.Sequential(*linear_bn_relu(out, pred), nn.Linear(pred, out))
    return {"projector": projector, "predictor": predictor}


@pytest.mark.parametrize("method, backbone", [("mocov3", "resnet18"), ("mocov3", "vit_tiny"),
                                              ("simsiam", "resnet18"), ("nnsiam", "resnet18")])
def test_solo_learn_heads_load_whole_and_compute_the_same(method: str, backbone: str,
                                                          cifar_mini: Path) -> None:
    extra = SMALL + [f"++backbone.name={backbone}"]
    if method == "nnsiam":
        extra.append("++method_kwargs.queue_size=64")
    ours = METHODS.get(method)(shipped_config(method, cifar_mini, extra))
    torch.manual_seed(3)
    theirs = solo_learn_heads(method, ours.num_features, vit=backbone != "resnet18")
    for head in theirs.values():
        for module in head.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2)
    if method == "mocov3":
        theirs["momentum_projector"] = theirs["projector"]
    state = {f"{name}.{key}": value for name, head in theirs.items()
             for key, value in head.state_dict().items()}
    if method == "nnsiam":  # solo-learn's support queue: (K, D) rows, their labels, a pointer
        state.update(queue=F.normalize(torch.randn(64, 32), dim=1),
                     queue_y=torch.full((64,), -1), queue_ptr=torch.zeros(1, dtype=torch.long))
    head_keys = {k for k in ours.state_dict() if not k.startswith(("backbone.", "momentum_backbone.",
                                                                   "classifier."))}
    assert head_keys == set(state)
    # the whole state dict, strictly: the same keys and shapes (the backbones are tested elsewhere)
    ours.load_state_dict({**ours.state_dict(), **state}, strict=True)
    ours.eval()
    feats = torch.randn(5, ours.num_features)
    with torch.no_grad():
        for name, head in theirs.items():
            x = feats if "projector" in name else theirs["projector"].eval()(feats)
            torch.testing.assert_close(getattr(ours, name)(x), head.eval()(x))
    if backbone.startswith("vit"):  # mocov3 picks MoCo v3's ViT: a fixed position embedding
        assert not ours.backbone.pos_embed.requires_grad
    if method != "mocov3":  # solo-learn freezes the bias that the last BN cancels
        assert not ours.projector[6].bias.requires_grad


# ----------------------------------------------------------------------------------------------
class GroupLrs(pl.Callback):
    def __init__(self) -> None:
        self.lrs: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.lrs.append({g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups})


def test_predictor_keeps_its_fixed_lr_through_a_real_run(cifar_mini: Path) -> None:
    cfg = shipped_config("simsiam", cifar_mini, SMALL + ["++optimizer.exclude_bias_n_norm_wd=True"])
    recorder = GroupLrs()
    model, trainer = fit(cfg, max_epochs=1, batches=3, callbacks=[recorder])
    assert trainer.global_step == 3
    start = 0.5 * 16 / 256  # the recipe's lr, scaled to the batch of 16
    backbone = [step["backbone"] for step in recorder.lrs]
    assert len(set(backbone)) == 3 and backbone[-1] != start  # warmup moves the others
    for step in recorder.lrs:
        assert step["predictor"] == step["predictor_no_wd"] == pytest.approx(start)
    optimized = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert id(model.projector[6].bias) not in optimized


def test_nnsiam_targets_are_neighbours_in_its_queue_of_first_views(cifar_mini: Path) -> None:
    model = METHODS.get("nnsiam")(shipped_config("nnsiam", cifar_mini,
                                                 SMALL + ["++method_kwargs.queue_size=32"]))
    g = torch.Generator().manual_seed(0)

    def batch() -> EncodedBatch:
        return EncodedBatch(indexes=torch.arange(16), targets=torch.randint(0, 3, (16,), generator=g),
                            feats=[torch.randn(16, 512, generator=g) for _ in range(2)])

    first, second = batch(), batch()
    with torch.no_grad():
        model.ssl_loss(first)
        z1 = F.normalize(model.projector(first.feats[0]), dim=-1)
        torch.testing.assert_close(model.queue[:16], z1)
        assert torch.equal(model.queue_y[:16], first.targets) and int(model.queue_ptr) == 16
        queue, labels = model.queue.clone(), model.queue_y.clone()
        loss, logs = model.ssl_loss(second)
        z = [model.projector(f) for f in second.feats]
        p = [model.predictor(x) for x in z]
        (i1, n1), (_, n2) = (nearest_neighbours(v, queue) for v in (z[0], z[1]))
        i1, n1, n2 = i1[:, 0], n1[:, 0], n2[:, 0]
    torch.testing.assert_close(loss, (simsiam_loss(p[0], n2) + simsiam_loss(p[1], n1)) / 2)
    assert logs["nn_acc"] == (labels[i1] == second.targets).float().mean()
    assert int(model.queue_ptr) == 0 and torch.equal(model.queue_y[16:], second.targets)


@pytest.mark.parametrize("method, override, message", [
    ("mocov3", "temperature=0", "method_kwargs.temperature: must be > 0"),
    ("simsiam", "pred_hidden_dim=-1", "method_kwargs.pred_hidden_dim: must be > 0"),
    ("nnsiam", "queue_size=0", "method_kwargs.queue_size: must be > 0"),
    ("nnsiam", "queue_size=1000", "queue_size: 1000 is not a multiple of the global batch"),
])
def test_bad_method_kwargs_name_the_key(method: str, override: str, message: str,
                                        cifar_mini: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        shipped_config(method, cifar_mini, [f"++method_kwargs.{override}"])


@pytest.mark.parametrize("method", ["mocov3", "simsiam", "nnsiam"])
def test_more_than_two_views_is_an_error(method: str, cifar_mini: Path) -> None:
    cfg = shipped_config(method, cifar_mini, SMALL)
    cfg.augmentations[0].num_crops += 1
    with pytest.raises(ValueError, match=f"{method} needs exactly 2 large crops"):
        METHODS.get(method)(cfg)


# ----------------------------------------------------------------------------------------------
# solo-learn's own YAMLs (scripts/pretrain/{cifar,imagenet-100}), in its layout and values
# ----------------------------------------------------------------------------------------------
def solo_learn_yaml(method: str, dataset: str) -> dict:
    imagenet = dataset == "imagenet100"
    vit = method == "mocov3_vit"
    name = "mocov3" if vit else method
    kwargs = {"mocov3": {"proj_hidden_dim": 4096, "proj_output_dim": 256, "pred_hidden_dim": 4096,
                         "temperature": 0.2},
              "simsiam": {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "pred_hidden_dim": 512,
                          "temperature": 0.2},
              "nnsiam": {"proj_hidden_dim": 2048, "pred_hidden_dim": 4096, "proj_output_dim": 2048,
                         "queue_size": 65536}}[name]
    lars = {"name": "lars", "lr": 0.3, "classifier_lr": 0.3, "weight_decay": "1e-6",
            "kwargs": {"clip_lr": True, "eta": 0.02, "exclude_bias_n_norm": True}}
    sgd = {"name": "sgd", "lr": 0.5, "classifier_lr": 0.1, "weight_decay": "1e-5"}
    optimizer = ({"name": "adamw", "lr": 3.0e-4, "classifier_lr": 3.0e-4, "weight_decay": 0.1}
                 if vit else lars if name == "mocov3" else sgd)
    augmentations = "symmetric_weak.yaml" if (name, dataset) == ("simsiam", "cifar10") else "asymmetric.yaml"
    raw = {"defaults": ["_self_", {"augmentations": augmentations}, {"wandb": "private.yaml"},
                        *HYDRA_OVERRIDES], **HYDRA_HEADER,
           "name": f"{method}-{dataset}", "method": name,
           "backbone": {"name": "vit_small" if vit else "resnet18"}, "method_kwargs": kwargs,
           "data": {"dataset": dataset, "train_path": "./datasets", "val_path": "./datasets",
                    "format": "dali" if imagenet else "image_folder", "num_workers": 4},
           "optimizer": {**optimizer, "batch_size": 128 if imagenet else 256},
           "scheduler": {"name": "warmup_cosine"},
           "checkpoint": {"enabled": True, "dir": "trained_models", "frequency": 1},
           "auto_resume": {"enabled": True}, "max_epochs": 400 if imagenet else 1000,
           "devices": [0, 1] if imagenet else [0], "sync_batchnorm": True, "accelerator": "gpu",
           "strategy": "ddp", "precision": 16}
    if name != "simsiam":  # nnsiam.yaml has the section too, which its BaseMethod never reads
        raw["momentum"] = {"base_tau": 0.99, "final_tau": 1.0}
    if (name, dataset) == ("simsiam", "imagenet100"):  # left over from its older layout
        raw["augmentations_cfg"] = "scripts/configs/defaults/augmentations/symmetric/weak.yaml"
        raw["wandb_cfg"] = "scripts/configs/defaults/wandb/private.yaml"
    return raw


def solo_learn_groups(dataset: str) -> dict[str, list]:
    if dataset == "cifar10":
        weak = op_groups(None, 0.5, 0.0, crops=2)
        weak["color_jitter"]["saturation"] = 0.4
        return {"asymmetric.yaml": [op_groups(None, 0.0, 0.0), op_groups(None, 0.0, 0.2)],
                "symmetric_weak.yaml": [weak]}
    return {"asymmetric.yaml": [op_groups(None, 1.0, 0.0, crop=224),
                                op_groups(None, 0.1, 0.2, crop=224)]}


@pytest.mark.parametrize("method, dataset", [("mocov3", "cifar10"), ("simsiam", "cifar10"),
                                             ("nnsiam", "cifar10"), ("mocov3", "imagenet100"),
                                             ("mocov3_vit", "imagenet100"),
                                             ("simsiam", "imagenet100")])
def test_solo_learn_yaml_parses_to_our_shipped_recipe(method: str, dataset: str, tmp_path: Path,
                                                      cifar_mini: Path) -> None:
    folder = tmp_path / dataset
    for file, groups in solo_learn_groups(dataset).items():
        write(folder / "augmentations" / file, groups)
    wandb_group(folder)
    write(folder / f"{method}.yaml", solo_learn_yaml(method, dataset))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        theirs = compose_and_parse(folder, f"{method}.yaml", cifar_mini)
    ignored = sorted(str(w.message).split(" ")[0] for w in caught
                     if "is ignored, as solo-learn ignores it" in str(w.message))
    if (method, dataset) == ("simsiam", "imagenet100"):
        assert ignored == ["augmentations_cfg", "wandb_cfg"]

    shipped = ROOT / "scripts" / "pretrain" / ("cifar" if dataset == "cifar10" else "imagenet-100")
    ours = parse_config(load_raw(shipped, f"{method}.yaml", [
        f"++data.train_path={cifar_mini / 'train'}", f"++data.val_path={cifar_mini / 'test'}",
        "++accelerator=cpu", "++devices=1"]))
    assert theirs.method == ours.method and theirs.backbone.name == ours.backbone.name
    assert theirs.method_kwargs == ours.method_kwargs
    assert theirs.optimizer == ours.optimizer and theirs.scheduler == ours.scheduler
    assert theirs.augmentations == ours.augmentations
    assert theirs.trainer["max_epochs"] == ours.trainer["max_epochs"]
    if method.startswith("mocov3"):
        assert theirs.momentum == ours.momentum
