"""Layer-wise lr decay of fine-tuned ViTs: every parameter's lr against decay^(D + 1 - layer);
solo-learn's MAE fine-tuning YAML parses unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from solo.backbones import build_backbone
from solo.eval.linear import LinearModel
from solo.eval.linear_config import parse_linear_config
from solo.utils.schema import ConfigError
from tests.eval.linear_fixtures import linear_overrides
from tests.helpers import ROOT, load_raw
from tests.solo_learn import YAML_HEADER

FINETUNE = ROOT / "scripts" / "finetune" / "imagenet-100"


@pytest.fixture()
def some_file(tmp_path: Path) -> Path:
    path = tmp_path / "weights.ckpt"
    path.write_bytes(b"not read by the config parser")
    return path


def finetune_config(some_file: Path, cifar_mini: Path, tmp_path: Path, *extra: str):
    overrides = linear_overrides(some_file, cifar_mini, tmp_path, batch_size=64)
    return parse_linear_config(load_raw(FINETUNE, "mae.yaml", overrides + list(extra)))


def expected_layer(name: str, depth: int) -> int:
    """MAE's get_layer_id_for_vit, restated: embeddings 0, block i -> i + 1, the rest last."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed."):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


@pytest.mark.parametrize("backbone_lr", [None, 1e-3])
def test_each_parameter_gets_its_layers_lr(backbone_lr, some_file: Path, cifar_mini: Path,
                                           tmp_path: Path) -> None:
    extra = [] if backbone_lr is None else [f"++optimizer.backbone_lr={backbone_lr}"]
    cfg = finetune_config(some_file, cifar_mini, tmp_path, "++data.dataset=cifar10", *extra)
    depth, decay = 3, cfg.optimizer.layer_decay
    vit = build_backbone("vit_tiny", image_size=32, patch_size=8, depth=depth, embed_dim=32,
                         num_heads=2)
    model = LinearModel(vit, cfg)
    optimizer = model.configure_optimizers()["optimizer"]
    head_lr = 5e-4 * 64 / 256  # lr for a batch of 256, scaled to the recipe's 64
    base = head_lr if backbone_lr is None else backbone_lr * 64 / 256
    lr_of, wd_of = {}, {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            lr_of[id(p)], wd_of[id(p)] = group["initial_lr"], group["weight_decay"]
    for name, p in vit.named_parameters():
        expected = base * decay ** (depth + 1 - expected_layer(name, depth))
        assert lr_of[id(p)] == pytest.approx(expected), name
        no_wd = p.ndim == 1 or name in ("pos_embed", "cls_token")
        assert wd_of[id(p)] == (0.0 if no_wd else 0.05), name
    for p in model.classifier.parameters():  # the head: the last layer, the undecayed lr
        assert lr_of[id(p)] == pytest.approx(head_lr)
    # every trainable tensor is in exactly one group
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    assert lr_of[id(vit.blocks[2].mlp.fc1.weight)] == pytest.approx(base * decay)
    assert lr_of[id(vit.patch_embed.proj.weight)] == pytest.approx(base * decay ** 4)


def test_layer_decay_needs_finetune_and_a_vit(some_file: Path, cifar_mini: Path,
                                              tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="optimizer.layer_decay: decays the lrs of a trained "
                                          "backbone: it needs finetune: True"):
        finetune_config(some_file, cifar_mini, tmp_path, "++finetune=False", "++mixup=0",
                        "++cutmix=0")
    with pytest.raises(ConfigError, match=r"optimizer.layer_decay: must be in \[0, 1\]"):
        finetune_config(some_file, cifar_mini, tmp_path, "++optimizer.layer_decay=1.5")
    cfg = finetune_config(some_file, cifar_mini, tmp_path, "++data.dataset=cifar10")
    resnet = build_backbone("resnet18", small_images=True)
    with pytest.raises(ConfigError, match=r"optimizer.layer_decay: needs a ViT .*ResNet"):
        LinearModel(resnet, cfg)
    with pytest.raises(ConfigError, match="only drop_path_rate"):
        finetune_config(some_file, cifar_mini, tmp_path, "++backbone.kwargs.depth=2")


SOLO_LEARN_FINETUNE = """
name: "mae-imagenet100-finetune"
pretrained_feature_extractor: None
backbone:
  name: "vit_base"
  kwargs:
    drop_path_rate: 0.1
pretrain_method: "mae"
data:
  dataset: imagenet100
  train_path: "./datasets/imagenet-100/train"
  val_path: "./datasets/imagenet-100/val"
  format: "image_folder"
  num_workers: 4
optimizer:
  name: "adamw"
  batch_size: 64
  lr: 5e-4
  weight_decay: 0.05
  layer_decay: 0.75
scheduler:
  name: "warmup_cosine"
  warmup_start_lr: 0.0
checkpoint:
  enabled: True
  dir: "trained_models"
  frequency: 1
auto_resume:
  enabled: True
label_smoothing: 0.1
mixup: 0.8
cutmix: 1.0
finetune: True
max_epochs: 100
devices: [0, 1, 2, 3, 4, 5, 6, 7]
sync_batchnorm: True
accelerator: "gpu"
strategy: "ddp"
precision: 16
"""


def test_solo_learn_finetune_yaml_parses_unchanged(some_file: Path, cifar_mini: Path,
                                                   tmp_path: Path) -> None:
    header = YAML_HEADER.replace("  - augmentations: {augmentations}\n", "")
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "private.yaml").write_text("enabled: False\n")
    (tmp_path / "mae.yaml").write_text(header + SOLO_LEARN_FINETUNE)
    overrides = [f"++pretrained_feature_extractor=\"{some_file}\"",
                 f"++data.train_path={cifar_mini / 'train'}", f"++data.val_path={cifar_mini / 'test'}",
                 "++accelerator=cpu", "++devices=1"]
    cfg = parse_linear_config(load_raw(tmp_path, "mae.yaml", overrides))
    shipped = finetune_config(some_file, cifar_mini, tmp_path)
    assert cfg.optimizer == shipped.optimizer and cfg.backbone == shipped.backbone
    assert (cfg.mixup, cfg.cutmix, cfg.label_smoothing, cfg.finetune) == (0.8, 1.0, 0.1, True)
    assert cfg.scheduler == shipped.scheduler and cfg.data.crop_size == 224
    assert cfg.optimizer.layer_decay == 0.75 and cfg.backbone.kwargs == {"drop_path_rate": 0.1}
