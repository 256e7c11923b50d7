"""DeepClusterV2 (k-means and the bank's checkpoint form on 2 processes: tests/utils/test_kmeans.py):
the memory bank in a real run (filled at the right indexes, clustered at each epoch start, kept by checkpoints
and resumes), frozen prototypes equal to the centroids, the first epoch without targets."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solo.config import ConfigError
from solo.data import build_pipeline
from solo.methods import METHODS
from solo.pretrain import trainer_kwargs
from solo.utils.kmeans import cluster_memory, initial_centroids
from tests.helpers import CIFAR_CONFIGS, shipped_config
from tests.solo_learn import YAML_HEADER
from tests.test_solo_learn_yamls import compose_and_parse

BATCHES = 3  # per epoch, of 16 images


# ----------------------------------------------------------------------------------------------
# the method in a real run
# ----------------------------------------------------------------------------------------------
def unit_rows(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, 6, generator=generator), dim=1)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def small_cfg(cifar_mini: Path, extra: tuple[str, ...] = ()):
    return shipped_config("deepclusterv2", cifar_mini, [
        "++method_kwargs.proj_hidden_dim=16", "++method_kwargs.proj_output_dim=8",
        "++method_kwargs.num_prototypes=[5,7,5]", "++method_kwargs.kmeans_iters=3",
        "++knn_eval.enabled=False", "++scheduler.warmup_epochs=0",
        # 5 images a class: 50, of which each epoch's 3 batches see 48, in a new order
        "++data.fraction=0.025", *extra])


class Recorder(pl.Callback):
    """What each epoch saw: the batches' indexes, the bank and the prototypes at its ends."""

    def __init__(self) -> None:
        self.indexes: dict[int, list[torch.Tensor]] = {}
        self.losses: dict[int, list[float]] = {}
        self.start: dict[int, dict] = {}
        self.end: dict[int, dict] = {}

    @staticmethod
    def snapshot(model) -> dict:
        return {k: v.detach().clone() for k, v in model.state_dict().items()
                if k.startswith(("local_memory", "prototypes", "assignments"))}

    def on_train_batch_start(self, trainer, model, batch, batch_idx) -> None:
        if batch_idx == 0:  # after the epoch-start clustering
            self.start[trainer.current_epoch] = self.snapshot(model)

    def on_train_batch_end(self, trainer, model, outputs, batch, batch_idx) -> None:
        epoch = trainer.current_epoch
        self.indexes.setdefault(epoch, []).append(batch[0].clone())
        self.losses.setdefault(epoch, []).append(
            float(trainer.callback_metrics["train_deepcluster_loss_step"]))

    def on_train_epoch_end(self, trainer, model) -> None:
        self.end[trainer.current_epoch] = self.snapshot(model)


def run(cfg, epochs: int, model=None, ckpt_path=None, root: Path | None = None):
    pl.seed_everything(0, verbose=False)
    model = model or METHODS.get("deepclusterv2")(cfg, backbone=tiny_net())
    recorder = Recorder()
    trainer = pl.Trainer(**{**trainer_kwargs(cfg), "max_epochs": epochs,
                            "limit_train_batches": BATCHES, "limit_val_batches": 0,
                            "logger": False, "enable_progress_bar": False,
                            "enable_model_summary": False, "enable_checkpointing": False,
                            "default_root_dir": root}, callbacks=[recorder])
    trainer.fit(model, datamodule=build_pipeline(cfg), ckpt_path=ckpt_path)
    return model, trainer, recorder


def expected_clustering(bank: dict, cfg, epoch: int, dataset_size: int):
    index = bank["local_memory_index"]
    written = index >= 0
    return cluster_memory(index[written], bank["local_memory_embeddings"][:, written],
                          cfg.method_kwargs.num_prototypes, cfg.method_kwargs.kmeans_iters,
                          dataset_size, torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))


def test_bank_clustering_frozen_prototypes_checkpoint_and_resume(cifar_mini: Path,
                                                                 tmp_path: Path) -> None:
    cfg = small_cfg(cifar_mini)
    model, trainer, seen = run(cfg, epochs=2)
    slots = 50 // 16 * 16  # the loader's batches x batch size, on one process
    assert model.local_memory_index.shape == (slots,)

    # epoch 0: no clustering yet, so no targets and a zero loss
    assert (seen.start[0]["assignments"] == -1).all() and seen.losses[0] == [0.0] * BATCHES
    # the bank holds the batches' indexes in order, then unwritten slots
    bank = seen.end[0]
    written = torch.cat(seen.indexes[0])
    assert torch.equal(bank["local_memory_index"][: len(written)], written)
    assert (bank["local_memory_index"][len(written):] == -1).all()
    rows = bank["local_memory_embeddings"][:, : len(written)]
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(2, len(written)))

    # epoch 1 starts with k-means of that bank: assignments by index, prototypes = centroids
    table, centroids = expected_clustering(bank, cfg, epoch=1, dataset_size=50)
    start = seen.start[1]
    assert torch.equal(start["assignments"], table)
    assert (table[:, written] >= 0).all() and (table >= 0).sum() == 3 * len(written)
    for head, center in enumerate(centroids):
        torch.testing.assert_close(start[f"prototypes.{head}.weight"], center)
        # frozen: the optimizer steps of epoch 1 left them as they were
        assert torch.equal(seen.end[1][f"prototypes.{head}.weight"], center)
    assert all(loss > 0 for loss in seen.losses[1])  # the same images, now with targets
    assert not any(p.requires_grad for p in model.prototypes.parameters())

    # the checkpoint keeps the bank, the assignments and the epoch they belong to
    path = tmp_path / "dc.ckpt"
    trainer.save_checkpoint(path)
    loaded = type(model).load_from_checkpoint(path, map_location="cpu", backbone=tiny_net())
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    # a resume clusters the restored bank (epoch 1's rows) as the uninterrupted run would
    _, _, resumed = run(cfg, epochs=3, ckpt_path=str(path), root=tmp_path)
    table, centroids = expected_clustering(seen.end[1], cfg, epoch=2, dataset_size=50)
    assert torch.equal(resumed.start[2]["assignments"], table)
    torch.testing.assert_close(resumed.start[2]["prototypes.0.weight"], centroids[0])


def test_init_memory_clusters_before_the_first_epoch(cifar_mini: Path) -> None:
    cfg = small_cfg(cifar_mini, ("++method_kwargs.init_memory=True",))
    _, _, seen = run(cfg, epochs=1)
    start = seen.start[0]
    # the pass before epoch 0 wrote the epoch's 3 batches; the training then rewrote them
    assert (start["local_memory_index"][: 16 * BATCHES] >= 0).all()
    assert (start["assignments"] >= 0).sum() == 3 * 16 * BATCHES
    assert all(loss > 0 for loss in seen.losses[0])


def test_bad_options_name_the_key(cifar_mini: Path) -> None:
    with pytest.raises(ConfigError, match=r"num_prototypes: must be a non-empty list"):
        small_cfg(cifar_mini, ("++method_kwargs.num_prototypes=[10,0]",))
    with pytest.raises(ConfigError, match="kmeans_iters: must be >= 0"):
        small_cfg(cifar_mini, ("++method_kwargs.kmeans_iters=-1",))
    with pytest.raises(ValueError, match=r"num_prototypes: 50 clusters need at least as many rows"):
        initial_centroids(unit_rows(20, 0), 50, torch.Generator())


SOLO_LEARN_CIFAR = YAML_HEADER.format(augmentations="symmetric.yaml") + """
name: "deepclusterv2-cifar10"
method: "deepclusterv2"
backbone:
  name: "resnet18"
method_kwargs:
  proj_hidden_dim: 2048
  proj_output_dim: 128
  num_prototypes: [3000, 3000, 3000]
data:
  dataset: cifar10
  train_path: "./datasets"
  val_path: "./datasets"
  format: "image_folder"
  num_workers: 4
optimizer:
  name: "lars"
  batch_size: 256
  lr: 0.6
  classifier_lr: 0.1
  weight_decay: 1e-6
  kwargs:
    clip_lr: True
    eta: 0.02
    exclude_bias_n_norm: True
scheduler:
  name: "warmup_cosine"
  min_lr: 0.0006
  warmup_start_lr: 0.0
  warmup_epochs: 11
checkpoint:
  enabled: True
  dir: "trained_models"
  frequency: 1
auto_resume:
  enabled: True
max_epochs: 1000
devices: [0]
sync_batchnorm: True
accelerator: "gpu"
strategy: "ddp"
precision: 16
"""


def test_solo_learns_yaml_parses_to_the_shipped_recipe(tmp_path: Path, cifar_mini: Path) -> None:
    folder = tmp_path / "cifar"
    for group in ("augmentations/symmetric.yaml", "wandb/private.yaml"):
        (folder / group).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CIFAR_CONFIGS / group, folder / group)
    (folder / "deepclusterv2.yaml").write_text(SOLO_LEARN_CIFAR)
    theirs = compose_and_parse(folder, "deepclusterv2.yaml", cifar_mini)
    ours = shipped_config("deepclusterv2", cifar_mini)
    assert theirs.method_kwargs == ours.method_kwargs == type(ours.method_kwargs)(
        proj_hidden_dim=2048, proj_output_dim=128, num_prototypes=[3000, 3000, 3000])
    assert theirs.method_kwargs.temperature == 0.1 and theirs.method_kwargs.kmeans_iters == 10
    assert theirs.augmentations == ours.augmentations
    assert theirs.scheduler == ours.scheduler
    assert theirs.optimizer.lr == ours.optimizer.lr == 0.6
