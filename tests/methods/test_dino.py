"""DINO beyond the parametrized method tests: its head (solo-learn's keys, DINO's init, the
weight-normalized prototypes), the teacher on the large crops only, the last layer frozen for
``freeze_last_layer`` epochs, the per-epoch teacher temperature (resumed too), per-parameter
clipping, the ViT recipe with its weight-decay schedule, solo-learn's YAMLs and bad options."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solo.config import ConfigError, parse_config
from solo.losses import dino_loss
from solo.methods import DINO
from solo.nn import DINOHead
from solo.utils.schedules import cosine_schedule
from tests.helpers import ROOT, load_raw, shipped_config, small_cpu_overrides
from tests.methods.test_methods import FixedViews, fit, held_out_batch
from tests.test_solo_learn_yamls import (HYDRA_HEADER, HYDRA_OVERRIDES, compose_and_parse,
                                         op_groups, wandb_group, write)

SMALL = ["++method_kwargs.proj_hidden_dim=32", "++method_kwargs.proj_output_dim=16",
         "++method_kwargs.num_prototypes=64"]


def tiny_net() -> nn.Module:
    """A backbone that costs nothing next to the mechanics under test (any resolution)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


# ----------------------------------------------------------------------------------------------
# the head
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_bn", [False, True])
def test_head_has_solo_learns_keys_dinos_init_and_computes_torchs_weight_norm(use_bn: bool) -> None:
    torch.manual_seed(0)
    head = DINOHead(256, 64, use_bn=use_bn, hidden_dim=256, bottleneck_dim=32)
    linears = ["mlp.0", "mlp.3", "mlp.6"] if use_bn else ["mlp.0", "mlp.2", "mlp.4"]
    keys = {f"{m}.{p}" for m in linears for p in ("weight", "bias")}
    keys |= {"last_layer.weight_g", "last_layer.weight_v"}
    if use_bn:
        keys |= {f"mlp.{i}.{k}" for i in (1, 4) for k in ("weight", "bias", "running_mean",
                                                          "running_var", "num_batches_tracked")}
    assert set(head.state_dict()) == keys
    for name in linears:  # truncated normal, std 0.02, zero biases
        layer = head.get_submodule(name)
        assert layer.weight.std().item() == pytest.approx(0.02, rel=0.1)
        assert not layer.bias.any()
    assert torch.equal(head.last_layer.weight_g, torch.ones(64, 1))
    assert not head.last_layer.weight_g.requires_grad  # norm_last_layer: g stays 1

    # the same parameters in torch's weight_norm Linear (the layout of solo-learn's head)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates the old helper
        last = nn.utils.weight_norm(nn.Linear(32, 64, bias=False))
    last.load_state_dict({k.removeprefix("last_layer."): v for k, v in head.state_dict().items()
                          if k.startswith("last_layer.")})
    x = torch.randn(8, 256)
    head.eval()
    torch.testing.assert_close(head(x), last(F.normalize(head.mlp(x), dim=-1)))
    # unit prototypes: every logit is a cosine similarity
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(64))
    assert DINOHead(8, 4, norm_last_layer=False).last_layer.weight_g.requires_grad


# ----------------------------------------------------------------------------------------------
# the method in real runs
# ----------------------------------------------------------------------------------------------
class RecordingDINO(DINO):
    """DINO recording, per step, the epoch, the teacher temperature the loss used, the center it
    started from, and the largest gradient norm (and last-layer gradient) the optimizer saw."""

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        self.seen: list[tuple[int, int, float]] = []
        self.centers: list[torch.Tensor] = []
        self.largest_grads: list[float] = []
        self.last_layer_grads: list[bool] = []

    def ssl_loss(self, batch):
        self.seen.append((self.trainer.current_epoch, self.trainer.global_step,
                          self.teacher_temperature))
        self.centers.append(self.dino_loss_func.center.clone())
        return super().ssl_loss(batch)

    def on_before_optimizer_step(self, optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        self.largest_grads.append(max(float(p.grad.norm()) for p in self.parameters()
                                      if p.grad is not None))
        self.last_layer_grads.append(self.head.last_layer.weight_v.grad is not None)


class LastLayer(pl.Callback):
    """The student's last layer (v and g) when training starts and at the end of every epoch."""

    def __init__(self) -> None:
        self.snapshots: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        layer = pl_module.head.last_layer
        self.snapshots.append((layer.weight_v.detach().clone(), layer.weight_g.detach().clone()))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.on_train_start(trainer, pl_module)


def linspace_table(start: float, end: float, warmup: int, epochs: int) -> list[float]:
    """DINO's table: np.linspace(start, end, warmup) then end, one value per epoch."""
    ramp = [start + (end - start) * e / (warmup - 1) for e in range(warmup)] if warmup > 1 else \
        [start] * warmup
    return (ramp + [end] * epochs)[:epochs]


def test_last_layer_frozen_temperature_per_epoch_and_clipping_in_a_real_run(
        cifar_mini: Path) -> None:
    cfg = shipped_config("dino", cifar_mini, SMALL + [
        "++method_kwargs.norm_last_layer=False", "++method_kwargs.freeze_last_layer=2",
        "++method_kwargs.warmup_teacher_temperature_epochs=3", "++method_kwargs.clip_grad=0.05",
        "++scheduler.warmup_epochs=0"])
    model, snapshots = RecordingDINO(cfg, backbone=tiny_net()), LastLayer()
    model, trainer = fit(cfg, max_epochs=4, batches=2, callbacks=[snapshots], model=model)

    # frozen in epochs 0 and 1 (no gradient reached the optimizer), trained from epoch 2 on,
    # g too (norm_last_layer: False)
    assert model.last_layer_grads == [False] * 4 + [True] * 4
    (v0, g0), (v1, g1), (v2, g2), (v3, g3), (v4, g4) = snapshots.snapshots
    assert torch.equal(v0, v1) and torch.equal(v1, v2) and torch.equal(g0, g2)
    assert not torch.equal(v2, v3) and not torch.equal(g2, g3) and not torch.equal(v3, v4)
    # every gradient the optimizer used was clipped to the norm clip_grad
    assert len(model.largest_grads) == 8 and max(model.largest_grads) <= 0.05 * (1 + 1e-4)
    # the teacher temperature of each step: DINO's per-epoch table, constant within an epoch
    table = linspace_table(0.04, 0.07, 3, 4)
    assert table == pytest.approx([0.04, 0.055, 0.07, 0.07])
    assert [s for _, s, _ in model.seen] == list(range(8))
    assert [t for _, _, t in model.seen] == pytest.approx([table[e] for e, _, _ in model.seen])
    assert [e for e, _, _ in model.seen] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_a_resumed_run_continues_the_temperature_and_keeps_the_center(cifar_mini: Path,
                                                                       tmp_path: Path) -> None:
    cfg = shipped_config("dino", cifar_mini, SMALL + [
        "++method_kwargs.warmup_teacher_temperature_epochs=4"])
    first, trainer = fit(cfg, max_epochs=2, batches=1, model=RecordingDINO(cfg, tiny_net()))
    trainer.save_checkpoint(tmp_path / "epoch2.ckpt")
    center = first.dino_loss_func.center.clone()
    assert center.abs().sum() > 0  # it moved

    resumed, _ = fit(cfg, max_epochs=4, batches=1, model=RecordingDINO(cfg, tiny_net()),
                     ckpt_path=str(tmp_path / "epoch2.ckpt"))
    assert [(e, s) for e, s, _ in resumed.seen] == [(2, 2), (3, 3)]
    assert [t for _, _, t in resumed.seen] == pytest.approx(linspace_table(0.04, 0.07, 4, 4)[2:])
    torch.testing.assert_close(resumed.centers[0], center)  # the center came with it


def test_norm_last_layer_keeps_unit_prototypes_while_they_train(cifar_mini: Path) -> None:
    cfg = shipped_config("dino", cifar_mini, SMALL + ["++method_kwargs.freeze_last_layer=0"])
    model = DINO(cfg, backbone=tiny_net())
    v0 = model.head.last_layer.weight_v.detach().clone()
    model, _ = fit(cfg, max_epochs=1, batches=2, model=model)
    for layer in (model.head.last_layer, model.momentum_head.last_layer):
        assert torch.equal(layer.weight_g, torch.ones(64, 1))
        torch.testing.assert_close(layer.weight.norm(dim=1), torch.ones(64))
    assert not torch.equal(model.head.last_layer.weight_v, v0)  # the directions did train


def test_student_sees_every_crop_and_the_teacher_the_large_ones(cifar_mini: Path) -> None:
    cfg = shipped_config("dino", cifar_mini, SMALL + [
        "++augmentations.0.num_crops=2", "++augmentations.1.crop_size=16",
        "++augmentations.1.num_crops=3"])
    model = DINO(cfg, backbone=tiny_net())
    with torch.no_grad():
        for p in model.head.parameters():  # a teacher unlike the student
            p.add_(0.1 * torch.randn_like(p))
    batch = held_out_batch(cfg, cifar_mini / "train", 8, seed=0)
    crops = batch[1]
    assert [c.shape[-1] for c in crops] == [32, 32, 16, 16, 16]
    encoded = model.encode_batch(batch)
    assert len(encoded.feats) == 5 and len(encoded.momentum_feats) == 2
    loss, logs = model.ssl_loss(encoded)
    with torch.no_grad():
        student = [model.head(model.backbone(c)) for c in crops]
        teacher = [model.momentum_head(model.momentum_backbone(c)) for c in crops[:2]]
    expected = dino_loss(student, teacher, torch.zeros(1, 64), 0.1, 0.07)  # center still 0
    torch.testing.assert_close(loss, expected)
    assert logs["target_entropy"] < loss  # the cross-entropy exceeds its floor by the KL


# ----------------------------------------------------------------------------------------------
# recipes and options
# ----------------------------------------------------------------------------------------------
def test_vit_recipe_builds_and_steps_with_a_tiny_vit_on_the_weight_decay_schedule(
        cifar_mini: Path) -> None:
    raw = load_raw(ROOT / "scripts" / "pretrain" / "imagenet-100", "dino_vit.yaml",
                   small_cpu_overrides(cifar_mini, batch_size=8)
                   + ["++backbone.kwargs.depth=1", "++method_kwargs.num_prototypes=1024"])
    for group in raw["augmentations"]:
        group["crop_size"] = 32
    cfg = parse_config(raw)
    assert (cfg.backbone.name, cfg.method_kwargs.norm_last_layer) == ("vit_tiny", False)
    assert (cfg.optimizer.weight_decay, cfg.optimizer.weight_decay_end) == (0.04, 0.4)
    pl.seed_everything(0, verbose=False)
    model = RecordingDINO(cfg)
    batch = held_out_batch(cfg, cifar_mini / "train", 8, seed=0)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.fit(model, datamodule=FixedViews(batch, steps=2))
    assert trainer.global_step == 2 and model.head.last_layer.weight_g.requires_grad
    decays = {g["name"]: g["weight_decay"] for g in trainer.optimizers[0].param_groups}
    # the weight decay of the last step: the cosine from 0.04 towards 0.4 over the run's steps
    # (here 2), none on biases, norms and the probe
    expected = cosine_schedule(1, trainer.estimated_stepping_batches, 0.04, 0.4)
    assert decays["backbone"] == decays["head"] == pytest.approx(expected) and expected > 0.04
    assert decays["backbone_no_wd"] == decays["head_no_wd"] == 0.0


def solo_learn_dino_yaml(variant: str) -> dict:
    """solo-learn's scripts/pretrain/{cifar/dino,imagenet-100/dino,imagenet-100/dino_vit}.yaml."""
    imagenet, vit = variant != "cifar", variant == "vit"
    kwargs = {"proj_hidden_dim": 2048, "proj_output_dim": 256,
              "num_prototypes": 65536 if vit else 4096}
    if vit:
        kwargs["norm_last_layer"] = False
    elif imagenet:
        kwargs["warmup_teacher_temperature_epochs"] = 50
    optimizer = ({"name": "adamw", "lr": 0.005, "classifier_lr": "3e-3", "weight_decay": "1e-4"}
                 if vit else
                 {"name": "lars", "lr": 0.3, "classifier_lr": 0.1, "weight_decay": "1e-6",
                  "kwargs": {"clip_lr": True, "eta": 0.02, "exclude_bias_n_norm": True}})
    scheduler = {"name": "warmup_cosine", **({"warmup_start_lr": 0.00001} if vit else {})}
    return {"defaults": ["_self_", {"augmentations": "asymmetric.yaml"}, {"wandb": "private.yaml"},
                         *HYDRA_OVERRIDES], **HYDRA_HEADER,
            "name": f"dino-{variant}", "method": "dino",
            "backbone": {"name": "vit_tiny" if vit else "resnet18"}, "method_kwargs": kwargs,
            "momentum": {"base_tau": 0.9995, "final_tau": 1.0},
            "data": {"dataset": "imagenet100" if imagenet else "cifar10",
                     "train_path": "./datasets", "val_path": "./datasets",
                     "format": "dali" if imagenet else "image_folder", "num_workers": 4},
            "optimizer": {**optimizer, "batch_size": 128 if imagenet else 256},
            "scheduler": scheduler,
            "checkpoint": {"enabled": True, "dir": "trained_models", "frequency": 1},
            "auto_resume": {"enabled": True}, "max_epochs": 400 if imagenet else 1000,
            "devices": [0, 1] if imagenet else [0], "sync_batchnorm": True,
            "accelerator": "gpu", "strategy": "ddp", "precision": 16}


@pytest.mark.parametrize("variant, ours", [("cifar", "cifar/dino.yaml"),
                                           ("imagenet", "imagenet-100/dino.yaml"),
                                           ("vit", "imagenet-100/dino_vit.yaml")])
def test_solo_learn_yaml_parses_to_our_shipped_recipe(variant: str, ours: str, tmp_path: Path,
                                                      cifar_mini: Path) -> None:
    folder = tmp_path / variant
    crop, blur = (32, (0.0, 0.0)) if variant == "cifar" else (224, (1.0, 0.1))
    write(folder / "augmentations" / "asymmetric.yaml",
          [op_groups(None, blur[0], 0.0, crop=crop), op_groups(None, blur[1], 0.2, crop=crop)])
    wandb_group(folder)
    write(folder / "dino.yaml", solo_learn_dino_yaml(variant))
    theirs = compose_and_parse(folder, "dino.yaml", cifar_mini)
    shipped = ROOT / "scripts" / "pretrain" / Path(ours).parent
    mine = parse_config(load_raw(shipped, Path(ours).name, [
        f"++data.train_path={cifar_mini / 'train'}", f"++data.val_path={cifar_mini / 'test'}",
        "++accelerator=cpu", "++devices=1"]))
    assert theirs.method_kwargs == mine.method_kwargs and theirs.momentum == mine.momentum
    assert theirs.augmentations == mine.augmentations and theirs.scheduler == mine.scheduler
    assert theirs.trainer["max_epochs"] == mine.trainer["max_epochs"]
    if variant == "vit":  # the one documented change: the official ViT recipe's weight decay
        assert (theirs.optimizer.weight_decay, theirs.optimizer.weight_decay_end) == (1e-4, None)
        assert (mine.optimizer.weight_decay, mine.optimizer.weight_decay_end) == (0.04, 0.4)
        assert mine.optimizer.exclude_bias_n_norm_wd and not theirs.optimizer.exclude_bias_n_norm_wd
        for key in ("name", "lr", "classifier_lr", "batch_size", "kwargs"):
            assert getattr(theirs.optimizer, key) == getattr(mine.optimizer, key), key
    else:
        assert theirs.optimizer == mine.optimizer


@pytest.mark.parametrize("override, message", [
    ("++method_kwargs.teacher_temperature=0", "teacher_temperature: must be > 0"),
    ("++method_kwargs.warmup_teacher_temperature_epochs=-1",
     "warmup_teacher_temperature_epochs: must be >= 0"),
    ("++method_kwargs.freeze_last_layer=-2", "freeze_last_layer: must be >= 0"),
    ("++method_kwargs.clip_grad=-1.0", "clip_grad: must be >= 0"),
    ("++method_kwargs.center_momentum=1.5", r"center_momentum: must be in \[0, 1\]"),
    ("++method_kwargs.num_prototype=10", "did you mean \"num_prototypes\""),
])
def test_bad_options_name_the_key(override: str, message: str, cifar_mini: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        shipped_config("dino", cifar_mini, [override])


def test_one_large_crop_is_an_error(cifar_mini: Path) -> None:
    cfg = shipped_config("dino", cifar_mini, SMALL + ["++augmentations.1.crop_size=16"])
    with pytest.raises(ConfigError, match="dino needs at least 2 large crops"):
        DINO(cfg, backbone=tiny_net())
