"""SwAV in real runs: the prototypes renormalized after every optimizer step and frozen for their
first epochs, the queue joining the Sinkhorn input from epoch_queue_starts (its share of each
process on two processes: tests/losses/test_loss_swav.py), the multi-crop recipe, bad options, and
solo-learn's own SwAV YAMLs (written here in its layout and values) parsed into ours."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solo.config import ConfigError, parse_config
from solo.losses import sinkhorn_codes, swav_loss
from solo.methods import EncodedBatch, SwAV
from tests.helpers import ROOT, load_raw, shipped_config, small_cpu_overrides
from tests.methods.test_methods import fit
from tests.solo_learn import YAML_HEADER, augmentation_group
from tests.test_solo_learn_yamls import compose_and_parse

SMALL = ["++method_kwargs.proj_hidden_dim=32", "++method_kwargs.proj_output_dim=16",
         "++method_kwargs.num_prototypes=20", "++method_kwargs.queue_size=32"]


def tiny_backbone() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


class RecordingSwAV(SwAV):
    """SwAV recording, at every step, what its codes were computed from and what the prototypes
    were before and after the base's after-step hook."""

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        self.steps: list[dict] = []
        self.around_hook: list[tuple[torch.Tensor, torch.Tensor]] = []

    def cluster_codes(self, projections):
        state = {"epoch": self.current_epoch, "weight": self.prototypes.weight.detach().clone(),
                 "queue": self.projection_queue.rows(),
                 "z": [z.detach().clone() for z in projections]}
        state["codes"] = super().cluster_codes(projections)
        self.steps.append(state)
        return state["codes"]

    def after_optimizer_step(self, step: int) -> None:
        before = self.prototypes.weight.detach().clone()  # after the optimizer step
        super().after_optimizer_step(step)
        self.around_hook.append((before, self.prototypes.weight.detach().clone()))


def test_prototypes_frozen_then_trained_and_renormalized_and_the_queue_joins_late(
        cifar_mini: Path) -> None:
    cfg = shipped_config("swav", cifar_mini, SMALL + ["++method_kwargs.freeze_prototypes_epochs=1",
                                                      "++method_kwargs.epoch_queue_starts=1"])
    model = RecordingSwAV(cfg, backbone=tiny_backbone())
    initial = model.prototypes.weight.detach().clone()
    torch.testing.assert_close(initial.norm(dim=1), torch.ones(20))  # unit from the start
    backbone_before = model.backbone[0].weight.detach().clone()
    model, _ = fit(cfg, max_epochs=2, batches=2, model=model)
    steps = model.steps
    assert [s["epoch"] for s in steps] == [0, 0, 1, 1]

    # epoch 0: the prototypes untouched (no update, no weight decay); the backbone trains
    assert all(torch.equal(s["weight"], initial) for s in steps[:3])
    assert not torch.equal(model.backbone[0].weight, backbone_before)
    # epoch 1: each step moves them off the sphere, the hook puts them back on it
    for before, after in model.around_hook[2:]:
        assert not torch.equal(before, initial)
        assert (before.norm(dim=1) - 1).abs().max() > 1e-5
        torch.testing.assert_close(after.norm(dim=1), torch.ones(20))
        torch.testing.assert_close(after, F.normalize(before, dim=1))

    # the queue holds the past steps' projections, per large crop, in writing order
    for crop in range(2):
        assert torch.equal(steps[2]["queue"][crop],
                           torch.cat([steps[0]["z"][crop], steps[1]["z"][crop]]))
    for s in steps:
        for crop, (z, codes) in enumerate(zip(s["z"], s["codes"])):
            alone = sinkhorn_codes(z @ s["weight"].T)
            with_queue = sinkhorn_codes(torch.cat([z, s["queue"][crop]]) @ s["weight"].T)[:16]
            assert not torch.allclose(alone, with_queue, atol=1e-4)  # the two are told apart
            # unused before epoch_queue_starts, used from it on
            torch.testing.assert_close(codes, with_queue if s["epoch"] >= 1 else alone)


def test_multicrop_recipe_builds_and_trains_a_step(cifar_mini: Path) -> None:
    raw = load_raw(ROOT / "scripts" / "pretrain" / "cifar-multicrop", "swav.yaml",
                   small_cpu_overrides(cifar_mini) + SMALL)
    cfg = parse_config(raw)
    assert (cfg.num_large_crops, cfg.num_small_crops) == (2, 6)
    assert [g.crop_size for g in cfg.augmentations] == [32, 32, 18]

    seen: list[list[tuple]] = []

    class Multicrop(SwAV):
        def ssl_loss(self, batch):
            seen.append([tuple(f.shape) for f in batch.feats])
            loss, logs = super().ssl_loss(batch)
            # every crop predicts the codes of the large crops, the small ones included
            z = [F.normalize(self.projector(f), dim=-1) for f in batch.feats]
            codes = [sinkhorn_codes(zi.detach() @ self.prototypes.weight.T) for zi in z[:2]]
            torch.testing.assert_close(loss, swav_loss([self.prototypes(zi) for zi in z], codes))
            assert torch.isfinite(loss)
            return loss, logs

    # the recipe's heads and views on a small backbone (a ResNet-18 on 8 crops is slow on CPUs)
    model, trainer = fit(cfg, max_epochs=1, batches=1, model=Multicrop(cfg, tiny_backbone()))
    assert trainer.global_step == 1 and seen == [[(16, 8)] * 8]
    assert model.projection_queue.keys.shape == (2, 32, 16)  # one queue per large crop
    assert int(model.projection_queue.pointer) == 16


@pytest.mark.parametrize("key, value, message", [
    ("sk_iters", 0, "must be > 0"), ("sk_epsilon", 0.0, "must be > 0"),
    ("queue_size", -1, "must be >= 0"), ("freeze_prototypes_epochs", -2, "must be >= 0"),
    ("num_prototypes", 0, "must be > 0")])
def test_bad_options_fail_with_the_key(cifar_mini: Path, key: str, value, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"method_kwargs.{key}: {message}, got {value}"):
        shipped_config("swav", cifar_mini, [f"++method_kwargs.{key}={value}"])


def test_no_queue_with_queue_size_0_and_two_large_crops_needed(cifar_mini: Path) -> None:
    model = SwAV(shipped_config("swav", cifar_mini, SMALL[:3] + ["++method_kwargs.queue_size=0"]),
                 backbone=tiny_backbone())
    assert model.projection_queue is None and model.queues == []
    assert "queue" not in model.state_dict()
    feats = [torch.randn(8, model.num_features, generator=torch.Generator().manual_seed(i))
             for i in range(2)]
    loss, _ = model.ssl_loss(EncodedBatch(torch.arange(8), torch.full((8,), -1), feats))
    assert torch.isfinite(loss) and loss > 0
    one_view = shipped_config("swav", cifar_mini, ["augmentations.0.num_crops=1"])
    with pytest.raises(ConfigError, match="swav needs at least 2 large crops"):
        SwAV(one_view, backbone=tiny_backbone())


# ----------------------------------------------------------------------------------------------
# solo-learn's SwAV YAMLs, as it ships them (only the data paths and devices are overridden)
# ----------------------------------------------------------------------------------------------
SOLO_LEARN_SWAV = """\
name: "swav-{name}"
method: "swav"
backbone:
  name: "resnet18"
method_kwargs:
  proj_hidden_dim: 2048
  queue_size: 3840
  proj_output_dim: 128
  num_prototypes: 3000
  epoch_queue_starts: 50
  freeze_prototypes_epochs: 2
  temperature: 0.1
data:
  dataset: {dataset}
  train_path: "./datasets"
  val_path: "datasets/imagenet100/val"
  format: "{format}"
  num_workers: 4
optimizer:
  name: "lars"
  batch_size: {batch}
  lr: 0.6
  classifier_lr: 0.1
  weight_decay: 1e-6
  kwargs:
    clip_lr: True
    eta: 0.02
    exclude_bias_n_norm: True
scheduler:
  name: "warmup_cosine"
{min_lr}checkpoint:
  enabled: True
  dir: "trained_models"
  frequency: 1
auto_resume:
  enabled: True

# overwrite PL stuff
max_epochs: {epochs}
devices: {devices}
sync_batchnorm: True
accelerator: "gpu"
strategy: "ddp"
precision: 16
"""
def swav_group(crop: int, crops: int, min_scale: float, max_scale: float, jitter: float,
               blur: float = 0.0, solarization: float = 0.0) -> dict:
    """A crop group of solo-learn's SwAV augmentations: brightness, contrast and saturation all
    ``jitter``, hue 0.2."""
    return dict(crop=crop, crops=crops, min_scale=min_scale, max_scale=max_scale,
                brightness=jitter, saturation=jitter, hue=0.2, blur=blur, solarization=solarization)


LAYOUTS = {  # our folder -> solo-learn's groups, dataset, batch, epochs, devices, min_lr
    "cifar": ([swav_group(32, 2, 0.08, 1.0, jitter=0.8, blur=0.5)], "cifar10", 256, 1000, "[0]",
              ""),
    "cifar-multicrop": ([swav_group(32, 1, 0.2, 1.0, jitter=0.6, solarization=s) for s in (0.0, 0.2)]
                        + [swav_group(18, 6, 0.08, 0.5, jitter=0.8, blur=0.1, solarization=0.1)],
                        "cifar10", 256, 1000, "[0]", "  min_lr: 0.0006\n"),
    "imagenet-100": ([swav_group(224, 2, 0.08, 1.0, jitter=0.8, blur=0.5)], "imagenet100", 128,
                     400, "[0, 1]", ""),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_solo_learn_swav_yamls_parse_into_ours(tmp_path: Path, cifar_mini: Path,
                                               layout: str) -> None:
    groups, dataset, batch, epochs, devices, min_lr = LAYOUTS[layout]
    folder = tmp_path / layout
    (folder / "augmentations").mkdir(parents=True)
    (folder / "wandb").mkdir()
    (folder / "augmentations" / "swav.yaml").write_text(
        "\n".join(augmentation_group(**g) for g in groups))
    (folder / "wandb" / "private.yaml").write_text(
        'enabled: False\nentity: None\nproject: "solo-learn"\n')
    body = SOLO_LEARN_SWAV.format(name=dataset, dataset=dataset, batch=batch, epochs=epochs,
                                  devices=devices, min_lr=min_lr,
                                  format="image_folder" if dataset == "cifar10" else "dali")
    (folder / "swav.yaml").write_text(YAML_HEADER.format(augmentations="swav.yaml") + "\n" + body)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every key is honoured, none ignored
        theirs = compose_and_parse(folder, "swav.yaml", cifar_mini)
    k = theirs.method_kwargs
    assert (k.queue_size, k.epoch_queue_starts, k.freeze_prototypes_epochs) == (3840, 50, 2)
    assert (k.sk_iters, k.sk_epsilon) == (3, 0.05)  # solo-learn's defaults, not in its YAMLs

    ours = parse_config(load_raw(ROOT / "scripts" / "pretrain" / layout, "swav.yaml",
                                 small_cpu_overrides(cifar_mini, batch_size=batch)))
    assert ours.method_kwargs == k and ours.augmentations == theirs.augmentations
    assert ours.optimizer == theirs.optimizer and ours.scheduler == theirs.scheduler
    assert ours.trainer["max_epochs"] == theirs.trainer["max_epochs"] == epochs
