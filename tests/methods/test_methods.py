"""Every registered method: builds from its shipped YAML, learns on real images, round-trips."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from solo.data import MultiCropTransform, build_pipeline
from solo.methods import METHODS, MomentumMethod
from solo.pretrain import trainer_kwargs
from tests.helpers import shipped_config


class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(trainer.callback_metrics["train_loss_step"]))  # SSL loss only


def fit(cfg, max_epochs: int, batches: int, callbacks=(), model=None, ckpt_path: str | None = None,
        **extra) -> tuple[pl.LightningModule, pl.Trainer]:
    pl.seed_everything(0, verbose=False)
    model = model or METHODS.get(cfg.method)(cfg)
    kwargs = {**trainer_kwargs(cfg), "max_epochs": max_epochs, "limit_train_batches": batches,
              "limit_val_batches": 0, "logger": False, "enable_progress_bar": False,
              "enable_model_summary": False, **extra}
    trainer = pl.Trainer(callbacks=list(callbacks), **kwargs)
    trainer.fit(model, datamodule=build_pipeline(cfg), ckpt_path=ckpt_path)
    return model, trainer


def held_out_batch(cfg, folder: Path, size: int, seed: int) -> tuple:
    """A fixed batch of augmented views of test images, drawn with the config's own recipe, and
    their labels (the ImageFolder class of each: SupCon's positives; the others ignore them)."""
    images = sorted(folder.rglob("*.jpg"))[seed::50][:size]
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    labels = torch.tensor([classes.index(p.parent.name) for p in images])
    transform = MultiCropTransform(cfg.augmentations)
    torch.manual_seed(seed)
    views = [transform(Image.open(p).convert("RGB")) for p in images]
    crops = [torch.stack([v[i] for v in views]) for i in range(len(views[0]))]
    return torch.arange(size), crops, labels


def held_out_ssl_loss(model, batch, negatives) -> float:
    """The method's loss on fixed views; its queues, if any, filled by a step on fixed other
    images (as large as the queue) first."""
    model = copy.deepcopy(model).train()
    with torch.no_grad():
        if model.queues:
            model.ssl_loss(model.encode_batch(negatives))
        if hasattr(model, "cluster_batch"):  # DeepClusterV2: the targets, these views' clusters
            model.cluster_batch(model.encode_batch(batch))
        loss, logs = model.ssl_loss(model.encode_batch(batch))
    # a cross-entropy to a target that a few steps barely move (ReSSL's momentum relation) is
    # measured above its floor, the target's entropy
    return float(loss - logs.get("target_entropy", 0.0))


def recipe(method: str, data_root: Path, extra: list[str] | None = None):
    """The shipped config on the CPU; a queue, if the method has one, of 32 keys; split batch
    norm, if on, in 2 sub-batches of 8 (MoCo's 8 splits of 512 would leave 2 images a split)."""
    cfg = shipped_config(method, data_root, extra)
    small = []
    if getattr(cfg.method_kwargs, "queue_size", None) is not None:
        small.append("++method_kwargs.queue_size=32")
    if getattr(cfg.method_kwargs, "split_bn", 1) > 1:
        small.append("++method_kwargs.split_bn=2")
    if getattr(cfg.method_kwargs, "kmeans_iters", None) is not None:
        # DeepClusterV2: clusters of a few images, and targets in the first epoch already
        small += ["++method_kwargs.num_prototypes=[4,4,4]", "++method_kwargs.init_memory=True"]
    if getattr(cfg.method_kwargs, "whitening_size", None) is not None:
        # W-MSE whitens the batch of 16 whole: a width of 8 keeps its covariance invertible
        small += ["++method_kwargs.whitening_size=16", "++method_kwargs.proj_output_dim=8"]
    if getattr(cfg.method_kwargs, "center_momentum", None) is not None:
        # DINO: a center catching up from 0 flattens the teacher faster than 12 steps teach the
        # student, so it is held at 0 here (tests/losses/test_loss_dino.py tests the centering)
        small.append("++method_kwargs.center_momentum=1.0")
    if getattr(cfg.method_kwargs, "decoder_depth", None) is not None:
        # MAE's ViT-S and 8-block decoder take minutes on 2 CPU cores: 2 encoder blocks, 1 decoder
        small += ["++backbone.kwargs.depth=2", "++method_kwargs.decoder_depth=1",
                  "++method_kwargs.decoder_embed_dim=128"]
    return shipped_config(method, data_root, (extra or []) + small) if small else cfg


class FixedViews(pl.LightningDataModule):
    """The same batch of real augmented views at every step: the loss on it must fall."""

    def __init__(self, batch: tuple, steps: int) -> None:
        super().__init__()
        self.batch, self.steps = batch, steps

    def train_dataloader(self) -> DataLoader:
        return DataLoader(range(self.steps), batch_size=None, collate_fn=lambda _: self.batch)


@pytest.mark.parametrize("method", METHODS.names())
def test_shipped_recipe_lowers_its_loss_on_real_images(method: str, cifar_mini: Path) -> None:
    # the shipped recipe (lr scaled to batch 16 as the recipe says) through the real Trainer,
    # optimizer and scheduler, minus warmup; a queue as large as the negatives below. The ResNet
    # gets its ImageNet stem: a quarter of the resolution from the first layer on, a sixteenth of
    # the compute on 32 px images (the CIFAR stem is tested in tests/backbones)
    cfg = recipe(method, cifar_mini, ["++scheduler.warmup_epochs=0", "++backbone.cifar_stem=False"])
    batch = held_out_batch(cfg, cifar_mini / "train", 16, seed=0)
    negatives = held_out_batch(cfg, cifar_mini / "train", 32, seed=1)
    pl.seed_everything(0, verbose=False)
    model = METHODS.get(cfg.method)(cfg)
    before = held_out_ssl_loss(model, batch, negatives)
    recorder = LossRecorder()
    trainer = pl.Trainer(**{**trainer_kwargs(cfg), "max_epochs": 1, "logger": False,
                            "enable_progress_bar": False, "enable_model_summary": False},
                         callbacks=[recorder])
    trainer.fit(model, datamodule=FixedViews(batch, steps=12))
    after = held_out_ssl_loss(model, batch, negatives)
    assert len(recorder.losses) == 12 and all(math.isfinite(x) for x in recorder.losses)
    assert after < 0.9 * before, (before, after, recorder.losses)


@pytest.mark.parametrize("method", METHODS.names())
def test_checkpoint_round_trip_without_config(method: str, cifar_mini: Path, tmp_path: Path) -> None:
    cfg = recipe(method, cifar_mini)
    model, trainer = fit(cfg, max_epochs=1, batches=2)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    loaded = type(model).load_from_checkpoint(path, map_location="cpu")  # no config passed
    assert loaded.cfg == model.cfg
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    for key in state:
        assert torch.equal(state[key], loaded_state[key]), key
    images = torch.rand(4, 3, 32, 32)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))


def test_method_config_rejects_a_mismatched_class(cifar_mini: Path) -> None:
    cfg = shipped_config("byol", cifar_mini)
    with pytest.raises(TypeError, match="SimCLRConfig"):
        METHODS.get("simclr")(cfg)


class CountingBYOL(METHODS.get("byol")):
    updates = 0

    def momentum_update(self, tau: float) -> None:
        type(self).updates += 1
        super().momentum_update(tau)


def test_momentum_updates_once_per_optimizer_step(cifar_mini: Path) -> None:
    cfg = shipped_config("byol", cifar_mini)
    CountingBYOL.updates = 0
    pl.seed_everything(0, verbose=False)
    model = CountingBYOL(cfg)
    online_before = [p.detach().clone() for p in model.backbone.parameters()]
    trainer = pl.Trainer(**{**trainer_kwargs(cfg), "max_epochs": 1, "limit_train_batches": 4,
                            "limit_val_batches": 0, "accumulate_grad_batches": 2, "logger": False,
                            "enable_progress_bar": False, "enable_model_summary": False})
    trainer.fit(model, datamodule=build_pipeline(cfg))
    # 4 batches with 2 accumulated per step: 2 optimizer steps, so 2 EMA updates, not 4
    assert trainer.global_step == 2 and CountingBYOL.updates == 2
    # the momentum backbone moved towards the online one but is neither of the two
    for online0, online, momentum in zip(online_before, model.backbone.parameters(),
                                         model.momentum_backbone.parameters()):
        if not torch.equal(online0, online):
            assert not torch.equal(momentum, online0) and not torch.equal(momentum, online)
            break
    else:
        pytest.fail("the online backbone did not change")


def test_momentum_update_is_the_ema(cifar_mini: Path) -> None:
    model = METHODS.get("byol")(shipped_config("byol", cifar_mini))
    assert isinstance(model, MomentumMethod)
    with torch.no_grad():
        for p in model.projector.parameters():
            p.add_(1.0)
    online = [p.detach().clone() for p in model.projector.parameters()]
    momentum = [p.detach().clone() for p in model.momentum_projector.parameters()]
    model.momentum_update(0.9)
    for o, m, new in zip(online, momentum, model.momentum_projector.parameters()):
        torch.testing.assert_close(new, 0.9 * m + 0.1 * o)
