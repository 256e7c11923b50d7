"""ReSSL and SupCon: which views make queries and keys, the queue they write, labels, bad options,
and solo-learn's own YAMLs for them (written here in its layout and values) parsed by ours."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from solo.config import ConfigError
from solo.losses import ressl_loss, supcon_loss
from solo.methods import METHODS, EncodedBatch
from tests.helpers import shipped_config
from tests.solo_learn import YAML_HEADER
from tests.test_solo_learn_yamls import compose_and_parse

SMALL = {"ressl": ["++method_kwargs.proj_hidden_dim=32", "++method_kwargs.proj_output_dim=16",
                   "++method_kwargs.queue_size=32"],
         "supcon": ["++method_kwargs.proj_hidden_dim=32", "++method_kwargs.proj_output_dim=16"]}


def small_model(method: str, cifar_mini: Path, extra: list[str] | None = None):
    torch.manual_seed(0)
    cfg = shipped_config(method, cifar_mini, SMALL[method] + (extra or []))
    return METHODS.get(method)(cfg)


def encoded(model, batch: int = 8, labels: torch.Tensor | None = None) -> EncodedBatch:
    """Random backbone features for two views, online and momentum."""
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(batch, model.num_features, generator=g) for _ in range(2)]
    momentum = [torch.randn(batch, model.num_features, generator=g) for _ in range(2)]
    targets = torch.full((batch,), -1) if labels is None else labels
    return EncodedBatch(indexes=torch.arange(batch), targets=targets, feats=feats,
                        momentum_feats=momentum)


# ----------------------------------------------------------------------------------------------
def test_ressl_queries_the_strong_view_against_the_weak_views_key(cifar_mini: Path) -> None:
    model = small_model("ressl", cifar_mini).train()
    queue_before = model.key_queue.rows()
    batch = encoded(model)
    loss, logs = model.ssl_loss(batch)
    with torch.no_grad():
        key = F.normalize(model.momentum_projector(batch.momentum_feats[1]), dim=-1)
        expected = ressl_loss(model.projector(batch.feats[0]), key, queue_before, 0.1, 0.04)
    torch.testing.assert_close(loss.detach(), expected)
    assert set(logs) == {"target_entropy"} and logs["target_entropy"] <= loss
    # the second view's keys joined the queue (solo-learn's buffer layout: queue (K, D))
    assert model.queue.shape == (32, 16) and int(model.queue_ptr) == 8
    torch.testing.assert_close(model.queue[:8], key)
    torch.testing.assert_close(model.queue[8:], queue_before[8:])
    # only the online projector learns; the momentum one is an EMA copy
    loss.backward()
    assert all(p.grad is not None for p in model.projector.parameters())
    assert all(p.grad is None for p in model.momentum_projector.parameters())


def test_ressl_needs_two_large_crops(cifar_mini: Path) -> None:
    with pytest.raises(ValueError, match="ressl needs exactly 2 large crops"):
        small_model("ressl", cifar_mini, ["++augmentations.0.num_crops=2"])


def test_supcon_takes_its_positives_from_the_labels(cifar_mini: Path) -> None:
    model = small_model("supcon", cifar_mini).train()
    labels = torch.tensor([0, 1, 0, 2, 1, -1, -1, 3])
    batch = encoded(model, labels=labels)
    loss, _ = model.ssl_loss(batch)
    z = model.projector(torch.cat(batch.feats))
    torch.testing.assert_close(loss, supcon_loss(z, labels.repeat(2), torch.arange(8).repeat(2),
                                                 0.2))


def test_supcon_refuses_unlabelled_data(cifar_mini: Path) -> None:
    with pytest.raises(ConfigError, match="data.no_labels: supcon learns from labels"):
        small_model("supcon", cifar_mini, ["++data.no_labels=True",
                                            "++knn_eval.enabled=False"])


@pytest.mark.parametrize("method, key, value, message", [
    ("ressl", "temperature_k", 0, "must be > 0"),
    ("ressl", "temperature_q", -0.1, "must be > 0"),
    ("ressl", "queue_size", 0, "must be > 0"),
    ("ressl", "queue_size", 100, "not a multiple of the global batch"),
    ("supcon", "temperature", 0, "must be > 0"),
    ("supcon", "proj_output_dim", 0, "must be > 0"),
])
def test_bad_method_kwargs_fail_with_the_key(method: str, key: str, value: float, message: str,
                                             cifar_mini: Path) -> None:
    with pytest.raises(ConfigError, match=f"method_kwargs.{key}: .*{message}"):
        shipped_config(method, cifar_mini, [f"++method_kwargs.{key}={value}"])


# ----------------------------------------------------------------------------------------------
# solo-learn's YAMLs, as it ships them (only the data paths and devices are overridden)
# ----------------------------------------------------------------------------------------------
TRAINER = """\
scheduler:
  name: "warmup_cosine"
checkpoint:
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
RESSL = """\
name: "ressl-{name}"
method: "ressl"
backbone:
  name: "resnet18"
method_kwargs:
  proj_output_dim: 256
  proj_hidden_dim: 4096
  base_tau_momentum: 0.99
  final_tau_momentum: 1.0
  momentum_classifier:
  temperature_q: 0.1
  temperature_k: 0.04
momentum:
  base_tau: 0.99
  final_tau: 1.0
data:
  dataset: {dataset}
  train_path: "./datasets"
  val_path: "./datasets"
  format: "{format}"
  num_workers: 4
optimizer:
  name: "sgd"
  batch_size: {batch}
  lr: {lr}
  classifier_lr: 0.1
  weight_decay: 1e-4
"""
SUPCON = """\
name: "supcon-{name}"
method: "supcon"
backbone:
  name: "resnet18"
method_kwargs:
  proj_hidden_dim: 2048
  proj_output_dim: {out}
  temperature: 0.2
data:
  dataset: {dataset}
  train_path: "./datasets"
  val_path: "datasets/imagenet100/val"
  format: "{format}"
  num_workers: 4
optimizer:
  name: "sgd"
  batch_size: {batch}
  lr: {lr}
  classifier_lr: 0.1
  weight_decay: 1e-5
"""
GROUP = """\
- rrc:
    enabled: True
    crop_min_scale: 0.08
    crop_max_scale: 1.0
  color_jitter:
    prob: {jitter}
    brightness: {b}
    contrast: {b}
    saturation: {s}
    hue: {h}
  grayscale:
    prob: {gray}
  gaussian_blur:
    prob: {blur}
  solarization:
    prob: 0.0
  equalization:
    prob: 0.0
  horizontal_flip:
    prob: 0.5
  crop_size: {crop}
  num_crops: {crops}
"""
WEAK = """\
- rrc:
    enabled: True
    crop_min_scale: 0.08
    crop_max_scale: 1.0
  color_jitter:
    prob: 0.0
  grayscale:
    prob: 0.0
  gaussian_blur:
    prob: 0.0
  solarization:
    prob: 0.0
  equalization:
    prob: 0.0
  horizontal_flip:
    prob: 0.5
  crop_size: {crop}
  num_crops: 1
"""


def solo_learn_folder(tmp_path: Path, method: str, dataset: str) -> Path:
    cifar = dataset == "cifar10"
    crop = 32 if cifar else 224
    common = {"dataset": dataset, "name": dataset,
              "format": "image_folder" if cifar else "dali"}
    if method == "ressl":
        body = RESSL.format(batch=256 if cifar else 128, lr=0.05 if cifar else 0.3, **common)
        groups = (GROUP.format(jitter=0.8, b=0.4, s=0.2, h=0.1, gray=0.2, blur=0.5, crop=crop,
                               crops=1) + "\n" + WEAK.format(crop=crop))
        augmentations = "ressl.yaml"
    else:
        body = SUPCON.format(batch=256 if cifar else 128, lr=0.4 if cifar else 0.5,
                             out=256 if cifar else 512, **common)
        groups = GROUP.format(jitter=0.8, b=0.8, s=0.8, h=0.2, gray=0.2, blur=0.5, crop=crop,
                              crops=2)
        augmentations = "symmetric.yaml"
    folder = tmp_path / dataset
    (folder / "augmentations").mkdir(parents=True)
    (folder / "wandb").mkdir()
    (folder / "augmentations" / augmentations).write_text(groups)
    (folder / "wandb" / "private.yaml").write_text(
        'enabled: False\nentity: None\nproject: "solo-learn"\n')
    trainer = TRAINER.format(epochs=1000 if cifar else 400, devices="[0]" if cifar else "[0, 1]")
    (folder / f"{method}.yaml").write_text(YAML_HEADER.format(augmentations=augmentations) + "\n"
                                           + body + trainer)
    return folder


@pytest.mark.parametrize("dataset", ["cifar10", "imagenet100"])
def test_solo_learn_ressl_yaml(tmp_path: Path, cifar_mini: Path, dataset: str) -> None:
    folder = solo_learn_folder(tmp_path, "ressl", dataset)
    with pytest.warns(UserWarning) as caught:
        cfg = compose_and_parse(folder, "ressl.yaml", cifar_mini)
    ignored = sorted(str(w.message).split(" (")[0] for w in caught
                     if "is ignored, as solo-learn ignores it" in str(w.message))
    assert ignored == ["method_kwargs.base_tau_momentum", "method_kwargs.final_tau_momentum",
                       "method_kwargs.momentum_classifier"]
    k = cfg.method_kwargs
    assert (k.proj_hidden_dim, k.proj_output_dim, k.temperature_q, k.temperature_k) == \
        (4096, 256, 0.1, 0.04)
    assert k.queue_size == 65536  # solo-learn's default when the YAML has none
    assert (cfg.momentum.base_tau, cfg.momentum.final_tau, cfg.momentum.classifier) == \
        (0.99, 1.0, False)
    strong, weak = cfg.augmentations
    assert (strong.color_jitter.prob, strong.gaussian_blur.prob, strong.grayscale.prob) == \
        (0.8, 0.5, 0.2)
    assert weak.color_jitter.prob == weak.grayscale.prob == weak.gaussian_blur.prob == 0.0
    assert weak.horizontal_flip.prob == 0.5
    assert (cfg.optimizer.name, cfg.optimizer.weight_decay) == ("sgd", 1e-4)
    # ours ships the same recipe
    ours = shipped_config("ressl", cifar_mini)
    if dataset == "cifar10":
        assert ours.method_kwargs == k and ours.augmentations == cfg.augmentations
        assert (ours.optimizer.lr, ours.optimizer.classifier_lr) == (cfg.optimizer.lr, 0.1)


@pytest.mark.parametrize("dataset", ["cifar10", "imagenet100"])
def test_solo_learn_supcon_yaml(tmp_path: Path, cifar_mini: Path, dataset: str) -> None:
    folder = solo_learn_folder(tmp_path, "supcon", dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every key is honoured, none ignored
        cfg = compose_and_parse(folder, "supcon.yaml", cifar_mini)
    k = cfg.method_kwargs
    assert (k.proj_hidden_dim, k.proj_output_dim, k.temperature) == \
        (2048, 256 if dataset == "cifar10" else 512, 0.2)
    assert cfg.num_large_crops == 2 and cfg.augmentations[0].color_jitter.brightness == 0.8
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == \
        ((0.4, 1e-5) if dataset == "cifar10" else (0.5, 1e-5))
    if dataset == "cifar10":
        ours = shipped_config("supcon", cifar_mini)
        assert ours.method_kwargs == k and ours.augmentations == cfg.augmentations


# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ressl", "supcon"])
def test_solo_learn_state_dict_loads_whole(cifar_mini: Path, method: str) -> None:
    """solo-learn's modules for these methods (from its ressl.py / supcon.py: Linear-ReLU-Linear
    projectors, ReSSL's momentum projector and (K, D) queue with queue_ptr) load strictly."""
    import copy

    from tests.solo_learn import resnet18_cifar, two_layer

    torch.manual_seed(3)
    theirs = torch.nn.Module()
    theirs.backbone = resnet18_cifar()
    theirs.classifier = torch.nn.Linear(512, 10)
    theirs.projector = two_layer(512, 32, 16, batch_norm=False)
    if method == "ressl":
        theirs.momentum_backbone = copy.deepcopy(theirs.backbone)
        theirs.momentum_projector = copy.deepcopy(theirs.projector)
        theirs.register_buffer("queue", F.normalize(torch.randn(32, 16), dim=1))
        theirs.register_buffer("queue_ptr", torch.tensor([8]))
    ours = small_model(method, cifar_mini)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    feats = torch.randn(4, 512)
    with torch.no_grad():
        torch.testing.assert_close(ours.projector(feats), theirs.projector(feats))
