"""NNCLR, NNBYOL and All4One: what their losses are made of, the support queue they write (and its
labels for the logged neighbour accuracy), All4One's transformer lr through a real run, bad
options, solo-learn's state dicts and solo-learn's own YAMLs for them (written here in its layout
and values) parsed by ours."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from solo.config import ConfigError
from solo.losses import byol_loss, nnclr_loss, redundancy_loss
from solo.nn import nearest_neighbours
from solo.methods import METHODS, EncodedBatch
from solo.pretrain import trainer_kwargs
from tests.helpers import shipped_config
from tests.solo_learn import YAML_HEADER, asymmetric_groups, resnet18_cifar
from tests.test_solo_learn_yamls import compose_and_parse

HEADS = ["++method_kwargs.proj_hidden_dim=32", "++method_kwargs.pred_hidden_dim=24",
         "++method_kwargs.proj_output_dim=16", "++method_kwargs.queue_size=32"]


def small_model(method: str, cifar_mini: Path, extra: list[str] | None = None):
    torch.manual_seed(0)
    return METHODS.get(method)(shipped_config(method, cifar_mini, HEADS + (extra or [])))


def encoded(model, batch: int = 8) -> EncodedBatch:
    """Random backbone features for two views, online and momentum, and labels."""
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(batch, model.num_features, generator=g) for _ in range(4)]
    return EncodedBatch(indexes=torch.arange(100, 100 + batch), targets=torch.arange(batch) % 3,
                        feats=feats[:2], momentum_feats=feats[2:])


def loop_nearest(z: torch.Tensor, support: torch.Tensor) -> list[int]:
    z = F.normalize(z, dim=-1)
    return [max(range(len(support)), key=lambda j: float(row @ support[j])) for row in z]


# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["nnclr", "nnbyol"])
def test_loss_neighbours_queue_and_nn_accuracy(method: str, cifar_mini: Path) -> None:
    model = small_model(method, cifar_mini).train()
    batch = encoded(model)
    support = model.support.rows()
    with torch.no_grad():
        z1, z2 = (model.projector(f) for f in batch.feats)
        p1, p2 = model.predictor(z1), model.predictor(z2)
        if method == "nnclr":  # the online projections find the neighbours
            k1, k2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
        else:  # the momentum projections do
            k1, k2 = (F.normalize(model.momentum_projector(f), dim=-1)
                      for f in batch.momentum_feats)
    nearest1, nearest2 = loop_nearest(k1, support), loop_nearest(k2, support)
    # labels in the queue: some rows (row 0 at least) find a neighbour of their own class
    model.queue_y.copy_(torch.full((32,), 7))
    for i in reversed(range(4)):
        model.queue_y[nearest1[i]] = batch.targets[i]
    expected_acc = sum(int(model.queue_y[nearest1[i]] == batch.targets[i]) for i in range(8)) / 8
    loss, logs = model.ssl_loss(batch)
    nn1, nn2 = support[nearest1], support[nearest2]
    if method == "nnclr":
        expected = (nnclr_loss(nn1, p2, 0.2) + nnclr_loss(nn2, p1, 0.2)) / 2
    else:
        expected = byol_loss(p1, nn2) + byol_loss(p2, nn1)
    torch.testing.assert_close(loss.detach(), expected)
    assert math.isclose(float(logs["nn_acc"]), expected_acc) and expected_acc > 0
    # the first view's normalized keys and its labels joined the queue (solo-learn's buffers)
    assert model.queue.shape == (32, 16) and int(model.queue_ptr) == 8
    torch.testing.assert_close(model.queue[:8], k1)
    assert torch.equal(model.queue_y[:8], batch.targets)
    loss.backward()
    assert all(p.grad is not None for p in model.predictor.parameters())


def test_all4one_loss_is_its_three_weighted_terms(cifar_mini: Path) -> None:
    model = small_model("all4one", cifar_mini).train()
    model.transformer_encoder.eval()  # no dropout: two calls give the same embeddings
    batch = encoded(model)
    support = model.support.rows()
    loss, logs = model.ssl_loss(batch)
    with torch.no_grad():
        z1, z2 = (model.projector(f) for f in batch.feats)
        p1, p2 = model.predictor(z1), model.predictor(z2)
        q1, q2 = model.predictor2(z1), model.predictor2(z2)
        t1, t2 = (F.normalize(model.momentum_projector(f), dim=-1) for f in batch.momentum_feats)
        _, nn1 = nearest_neighbours(t1, support, 5)
        _, nn2 = nearest_neighbours(t2, support, 5)

        def embed(sequence: torch.Tensor) -> torch.Tensor:
            return model.transformer_encoder(model.pos_enc(sequence))[:, 0]

        shifted1 = embed(torch.cat((q1[:, None], nn1[:, :4]), dim=1))
        shifted2 = embed(torch.cat((q2[:, None], nn2[:, :4]), dim=1))
        attention = (nnclr_loss(embed(nn1), shifted2) + nnclr_loss(embed(nn2), shifted1)) / 2
        contrast = (nnclr_loss(nn1[:, 0], p2, 0.2) + nnclr_loss(nn2[:, 0], p1, 0.2)) / 2
        redundancy = redundancy_loss(t1, t2, z1, z2)
    torch.testing.assert_close(logs["att_nnclr_loss"], attention)
    torch.testing.assert_close(logs["nnclr_loss"], contrast)
    torch.testing.assert_close(logs["feature_loss"], redundancy)
    torch.testing.assert_close(loss.detach(), 0.5 * (attention + contrast + redundancy))
    # the queue: momentum keys of view 1, labels, and the images' dataset indexes
    torch.testing.assert_close(model.queue[:8], t1)
    assert torch.equal(model.queue_y[:8], batch.targets)
    assert torch.equal(model.queue_index[:8], batch.indexes) and (model.queue_index[8:] == -1).all()
    loss.backward()
    for name in ("projector", "predictor", "predictor2", "transformer_encoder"):
        assert all(p.grad is not None for p in getattr(model, name).parameters()), name


def test_positional_code_is_solo_learns_sinusoid() -> None:
    """out[b, s, d] = x + sin(d f_(s/2)) for even s, cos(d f_((s-1)/2)) for odd s, with
    f_j = 10000^(-2j / 6) for 5 slots (rounded up to 6 channels)."""
    from solo.nn.positional import PositionalEncodingSum

    x = torch.randn(2, 5, 7)
    out = PositionalEncodingSum(5)(x)
    for s in range(5):
        f = 10000 ** (-2 * (s // 2) / 6)
        for d in range(7):
            code = math.sin(d * f) if s % 2 == 0 else math.cos(d * f)
            torch.testing.assert_close(out[:, s, d], x[:, s, d] + code)


# ----------------------------------------------------------------------------------------------
class GroupLrs(pl.Callback):
    def __init__(self) -> None:
        self.seen: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append({g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups})


class FixedBatch(pl.LightningDataModule):
    """One batch of two random 32-pixel views, the same at every step."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.batch = (torch.arange(16), [torch.rand(16, 3, 32, 32, generator=g) for _ in range(2)],
                      torch.arange(16) % 10)
        self.steps = steps

    def train_dataloader(self) -> DataLoader:
        return DataLoader(range(self.steps), batch_size=None, collate_fn=lambda _: self.batch)


@pytest.mark.parametrize("fixed", [True, False])
def test_transformer_group_lr_through_a_real_run(fixed: bool, cifar_mini: Path) -> None:
    """solo-learn's transformer group: lr 0.1 as given (not scaled to the batch of 16, unlike the
    backbone's 1.0 x 16 / 256), following the schedule; with transformer_fixed_lr held at 0.1."""
    cfg = shipped_config("all4one", cifar_mini, HEADS + [
        "++scheduler.warmup_epochs=0", f"++method_kwargs.transformer_fixed_lr={fixed}"])
    pl.seed_everything(0, verbose=False)
    tiny = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model, lrs = METHODS.get("all4one")(cfg, backbone=tiny), GroupLrs()
    trainer = pl.Trainer(**{**trainer_kwargs(cfg), "max_epochs": 1, "logger": False,
                            "enable_progress_bar": False, "enable_model_summary": False},
                         callbacks=[lrs])
    transformer_before = copy.deepcopy(model.transformer_encoder.state_dict())
    trainer.fit(model, datamodule=FixedBatch(steps=3))
    assert len(lrs.seen) == 3
    assert lrs.seen[0]["backbone"] == pytest.approx(1.0 * 16 / 256)
    assert lrs.seen[1]["backbone"] < lrs.seen[0]["backbone"]  # the cosine moves the others
    transformer = [s["transformer_encoder"] for s in lrs.seen]
    assert transformer[0] == pytest.approx(0.1)
    if fixed:
        assert transformer == [pytest.approx(0.1)] * 3
    else:
        assert transformer[1] / transformer[0] == pytest.approx(
            lrs.seen[1]["backbone"] / lrs.seen[0]["backbone"])
    after = model.transformer_encoder.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in transformer_before.items())  # it learns


@pytest.mark.parametrize("method, key, value, message", [
    ("nnclr", "temperature", 0, "must be > 0"),
    ("nnclr", "queue_size", 100, "not a multiple of the global batch"),
    ("nnbyol", "pred_hidden_dim", 0, "must be > 0"),
    ("all4one", "proj_output_dim", 20, "multiple of the transformer's 8 heads"),
    ("all4one", "num_neighbours", 1, "must be >= 2"),
    ("all4one", "redundancy_weight", -1, "must be >= 0"),
])
def test_bad_method_kwargs_fail_with_the_key(method: str, key: str, value: float, message: str,
                                             cifar_mini: Path) -> None:
    with pytest.raises(ConfigError, match=f"method_kwargs.{key}: .*{message}"):
        shipped_config(method, cifar_mini, [f"++method_kwargs.{key}={value}"])


def test_two_views_are_required(cifar_mini: Path) -> None:
    with pytest.raises(ValueError, match="nnclr needs exactly 2 large crops"):
        small_model("nnclr", cifar_mini, ["++augmentations.0.num_crops=2"])


# ----------------------------------------------------------------------------------------------
# solo-learn's checkpoints: its modules (from its nnclr.py / nnbyol.py / all4one.py) load whole
# ----------------------------------------------------------------------------------------------
def linear_bn(i: int, o: int) -> list[nn.Module]:
    return [nn.Linear(i, o), nn.BatchNorm1d(o)]


def solo_learn_modules(method: str) -> nn.Module:
    torch.manual_seed(3)
    theirs = nn.Module()
    theirs.backbone = resnet18_cifar()
    theirs.classifier = nn.Linear(512, 10 if method != "all4one" else 100)
    if method == "nnbyol":  # Linear-BN-ReLU-Linear
        theirs.projector = nn.Sequential(*linear_bn(512, 32), nn.ReLU(), nn.Linear(32, 16))
    else:  # 3 Linear-BN, ReLU between
        theirs.projector = nn.Sequential(*linear_bn(512, 32), nn.ReLU(), *linear_bn(32, 32),
                                         nn.ReLU(), *linear_bn(32, 16))
    theirs.predictor = nn.Sequential(*linear_bn(16, 24), nn.ReLU(), nn.Linear(24, 16))
    if method != "nnclr":
        theirs.momentum_backbone = copy.deepcopy(theirs.backbone)
        theirs.momentum_projector = copy.deepcopy(theirs.projector)
    theirs.register_buffer("queue", F.normalize(torch.randn(32, 16), dim=1))
    theirs.register_buffer("queue_y", torch.randint(0, 10, (32,)))
    theirs.register_buffer("queue_ptr", torch.tensor([8]))
    if method == "all4one":
        theirs.predictor2 = copy.deepcopy(theirs.predictor)
        layer = nn.TransformerEncoderLayer(16, 8, dim_feedforward=32, dropout=0.1, batch_first=True)
        theirs.transformer_encoder = nn.TransformerEncoder(layer, num_layers=3)
        theirs.pos_enc = nn.Module()
        theirs.pos_enc.penc = nn.Module()
        theirs.pos_enc.penc.penc = nn.Module()
        theirs.pos_enc.penc.penc.register_buffer("inv_freq", 10000 ** (-torch.arange(0, 6, 2) / 6))
        # its positional module caches its last output in a buffer that its checkpoints hold
        theirs.pos_enc.penc.penc.register_buffer("cached_penc", torch.randn(256, 16, 5))
        theirs.register_buffer("queue_index", torch.randint(0, 1000, (32,)))
    return theirs


@pytest.mark.parametrize("method", ["nnclr", "nnbyol", "all4one"])
def test_solo_learn_state_dict_loads_whole(method: str, cifar_mini: Path) -> None:
    theirs, ours = solo_learn_modules(method), small_model(method, cifar_mini)
    state = theirs.state_dict()
    expected = sorted(k for k in state if not k.endswith("cached_penc"))
    assert sorted(ours.state_dict()) == expected
    ours.load_state_dict(state, strict=True)
    for key in expected:
        assert torch.equal(ours.state_dict()[key], state[key]), key
    theirs.eval(), ours.eval()
    with torch.no_grad():
        feats = torch.randn(4, 512)
        torch.testing.assert_close(ours.predictor(ours.projector(feats)),
                                   theirs.predictor(theirs.projector(feats)))


# ----------------------------------------------------------------------------------------------
# solo-learn's YAMLs, as it ships them (only the data paths and devices are overridden)
# ----------------------------------------------------------------------------------------------
BODY = """\
name: "{name}"
method: "{method}"
backbone:
  name: "resnet18"
method_kwargs:
{kwargs}
data:
  dataset: {dataset}
  train_path: "{train}"
  val_path: "{val}"
  format: "{format}"
  num_workers: 4
optimizer:
  name: "lars"
  batch_size: {batch}
  lr: {lr}
  classifier_lr: 0.1
  weight_decay: 1e-5
  kwargs:
    clip_lr: True
    eta: 0.02
    exclude_bias_n_norm: True
scheduler:
  name: "warmup_cosine"
checkpoint:
  enabled: True
  dir: "trained_models"
  frequency: 1
auto_resume:
  enabled: {resume}

# overwrite PL stuff
max_epochs: {epochs}
devices: {devices}
sync_batchnorm: True
accelerator: "gpu"
strategy: "ddp"
precision: {precision}
"""
KWARGS = {  # solo-learn's cifar/{nnclr,nnbyol,all4one}.yaml and imagenet-100/nnclr.yaml
    "nnclr": "  temperature: 0.2\n  proj_hidden_dim: 2048\n  pred_hidden_dim: 4096\n"
             "  proj_output_dim: 256\n  queue_size: 65536",
    "nnbyol": "  proj_hidden_dim: 4096\n  pred_hidden_dim: 4096\n  proj_output_dim: 256\n"
              "  queue_size: 65536\nmomentum:\n  base_tau: 0.99\n  final_tau: 1.0",
    "all4one": "  temperature: 0.2\n  proj_hidden_dim: 2048\n  pred_hidden_dim: 4096\n"
               "  proj_output_dim: 256\n  queue_size: 98304\nmomentum:\n  base_tau: 0.99\n"
               "  final_tau: 1.0",
}
CASES = {  # (method, folder): the file's other values
    ("nnclr", "cifar"): dict(name="nnclr-cifar10", dataset="cifar10", lr=0.4, batch=256),
    ("nnbyol", "cifar"): dict(name="nnbyol-cifar10", dataset="cifar10", lr=1.0, batch=256),
    ("all4one", "cifar"): dict(name="All4One-cifar100", dataset="cifar100", lr=1.0, batch=256,
                               resume=False, precision="16-mixed", train="./datasets/",
                               val="./datasets/"),
    ("nnclr", "imagenet-100"): dict(name="nnclr-imagenet100", dataset="imagenet100", lr=0.4,
                                    batch=128, format="dali", epochs=400, devices="[0, 1]",
                                    train="./datasets/imagenet-100/train",
                                    val="./datasets/imagenet-100/val"),
}


@pytest.mark.parametrize("method, folder", list(CASES))
def test_solo_learn_yaml(method: str, folder: str, tmp_path: Path, cifar_mini: Path) -> None:
    values = {"train": "./datasets", "val": "./datasets", "format": "image_folder",
              "resume": True, "epochs": 1000, "devices": "[0]", "precision": 16,
              **CASES[method, folder]}
    root = tmp_path / folder
    (root / "augmentations").mkdir(parents=True)
    (root / "wandb").mkdir()
    crop, blur = (32, (0.0, 0.0)) if folder == "cifar" else (224, (1.0, 0.1))
    (root / "augmentations" / "asymmetric.yaml").write_text(asymmetric_groups(crop, blur))
    (root / "wandb" / "private.yaml").write_text('enabled: False\nentity: None\n'
                                                 'project: "solo-learn"\n')
    (root / f"{method}.yaml").write_text(YAML_HEADER.format(augmentations="asymmetric.yaml") + "\n" + BODY.format(method=method, kwargs=KWARGS[method],
                                                              **values))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every key is honoured, none ignored
        cfg = compose_and_parse(root, f"{method}.yaml", cifar_mini)
    k = cfg.method_kwargs
    assert (k.proj_output_dim, k.queue_size) == (256, 98304 if method == "all4one" else 65536)
    assert (cfg.optimizer.lr, cfg.optimizer.batch_size) == (values["lr"], values["batch"])
    assert cfg.data.dataset == values["dataset"] and cfg.num_large_crops == 2
    if method != "nnclr":
        assert (cfg.momentum.base_tau, cfg.momentum.final_tau) == (0.99, 1.0)
    if method == "all4one":
        assert cfg.num_classes == 100 and (k.temperature, k.attention_temperature) == (0.2, 0.1)
    # ours ships the same recipe
    if folder == "cifar":
        ours = shipped_config(method, cifar_mini)
        assert ours.method_kwargs == k and ours.augmentations == cfg.augmentations
        assert ours.data.dataset == cfg.data.dataset
        assert (ours.optimizer.lr, ours.optimizer.weight_decay, ours.optimizer.kwargs) == \
            (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.optimizer.kwargs)
