"""MAE: the encoder sees only the visible patches, the probe their class token or whole images,
bad configs fail naming the key; solo-learn's MAE pretraining and fine-tuning YAMLs run unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from solo.backbones.vit_mae import mae_sincos_embedding
from solo.config import ConfigError, parse_config
from solo.eval.linear_config import parse_linear_config
from solo.eval.linear_run import linear_eval
from solo.methods import METHODS
from solo.nn import encode_visible
from tests.helpers import ROOT, load_raw, shipped_config
from tests.solo_learn import YAML_HEADER

TINY = ["++backbone.kwargs.depth=2", "++backbone.kwargs.embed_dim=64",
        "++backbone.kwargs.num_heads=2", "++method_kwargs.decoder_depth=1",
        "++method_kwargs.decoder_embed_dim=32", "++method_kwargs.decoder_num_heads=2"]


def tiny_mae(data: Path, *extra: str):
    torch.manual_seed(0)
    return METHODS.get("mae")(shipped_config("mae", data, TINY + list(extra)))


def test_encoder_sees_only_the_visible_patches(cifar_mini: Path) -> None:
    vit = tiny_mae(cifar_mini).backbone.eval()
    images = torch.randn(2, 3, 32, 32)
    tokens, mask, _ = encode_visible(vit, images, 0.75, torch.Generator().manual_seed(1))
    assert tokens.shape == (2, 1 + 16, 64) and (mask.sum(1) == 48).all()
    # repaint every masked 4x4 patch: the encoding, from the same mask, does not change
    masked = mask.view(2, 1, 8, 8).repeat_interleave(4, 2).repeat_interleave(4, 3).bool()
    repainted = torch.where(masked, torch.randn_like(images), images)
    again, mask2, _ = encode_visible(vit, repainted, 0.75, torch.Generator().manual_seed(1))
    assert torch.equal(mask, mask2)
    torch.testing.assert_close(again, tokens)
    changed = torch.where(masked, images, torch.randn_like(images))  # now the visible ones
    assert not torch.allclose(encode_visible(vit, changed, 0.75,
                                             torch.Generator().manual_seed(1))[0], tokens)


@pytest.mark.parametrize("on_visible", [False, True])
def test_probe_features(on_visible: bool, cifar_mini: Path) -> None:
    model = tiny_mae(cifar_mini, f"++method_kwargs.probe_on_visible={on_visible}").train()
    images = torch.randn(4, 3, 32, 32)
    batch = model.encode_batch((torch.arange(4), [images], torch.zeros(4, dtype=torch.long)))
    whole = model.backbone(images)  # the unmasked encoder's class token
    if on_visible:  # solo-learn's: the class token of the visible patches
        torch.testing.assert_close(batch.feats[0], batch.visible[0][0][:, 0])
        assert not torch.allclose(batch.feats[0], whole)
    else:
        torch.testing.assert_close(batch.feats[0], whole)
    loss, logs = model.ssl_loss(batch)
    assert loss.requires_grad and float(logs["reconstruction_loss"]) == pytest.approx(float(loss))
    loss.backward()
    assert model.decoder.decoder_pred.weight.grad is not None
    assert model.backbone.blocks[0].attn.qkv.weight.grad is not None


def test_encoder_is_mae_vit(cifar_mini: Path) -> None:
    vit = tiny_mae(cifar_mini).backbone
    assert not vit.pos_embed.requires_grad  # fixed, the paper's sine-cosine positions
    torch.testing.assert_close(vit.pos_embed, mae_sincos_embedding(8, 64))
    decoder = tiny_mae(cifar_mini).decoder
    torch.testing.assert_close(decoder.decoder_pos_embed, mae_sincos_embedding(8, 32))
    assert decoder.decoder_pred.out_features == 4 * 4 * 3


@pytest.mark.parametrize("override, expected", [
    ("++method_kwargs.mask_ratio=1.0", "method_kwargs.mask_ratio: must be in (0, 1), got 1.0"),
    ("++method_kwargs.decoder_num_heads=3", "decoder_embed_dim: must be divisible by "
                                            "decoder_num_heads (3)"),
    ("++augmentations.0.crop_size=28", "augmentations[0].crop_size: must be the ViT's img_size"),
    ("++method_kwargs.mask_ratio=0.99", "method_kwargs.mask_ratio: 0.99 keeps no patch"),
])
def test_bad_configs_name_the_key(override: str, expected: str, cifar_mini: Path) -> None:
    with pytest.raises(ConfigError) as error:
        tiny_mae(cifar_mini, override)
    assert expected in str(error.value)


def test_a_resnet_is_a_config_error(cifar_mini: Path) -> None:
    cfg = shipped_config("mae", cifar_mini, ["++backbone.name=resnet18", "~backbone.kwargs"])
    with pytest.raises(ConfigError, match=r"backbone.name: mae needs a ViT .* got 'resnet18'"):
        METHODS.get("mae")(cfg)


SOLO_LEARN_CIFAR_MAE = """
name: "mae-cifar10"
method: "mae"
backbone:
  name: "vit_small"
  kwargs:
    patch_size: 4
    img_size: 32
method_kwargs:
  decoder_embed_dim: 512
  decoder_depth: 8
  decoder_num_heads: 16
  mask_ratio: 0.75
  norm_pix_loss: True
data:
  dataset: cifar10
  train_path: "./datasets"
  val_path: "./datasets"
  format: "image_folder"
  num_workers: 4
optimizer:
  name: "adamw"
  batch_size: 256
  lr: 2.0e-4
  classifier_lr: 2.0e-4
  weight_decay: 0.05
  kwargs:
    betas: [0.9, 0.95]
scheduler:
  name: "warmup_cosine"
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
# solo-learn's cifar augmentations/reconstruction.yaml
SOLO_LEARN_RECONSTRUCTION = [{
    "rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
    "color_jitter": {"prob": 0.0}, "grayscale": {"enabled": False, "prob": 0.0},
    "gaussian_blur": {"prob": 0.0}, "solarization": {"prob": 0.0},
    "equalization": {"prob": 0.0}, "horizontal_flip": {"prob": 0.5},
    "crop_size": 32, "num_crops": 1}]


def test_solo_learn_cifar_yaml_runs_unchanged(cifar_mini: Path, tmp_path: Path) -> None:
    (tmp_path / "augmentations").mkdir()
    (tmp_path / "wandb").mkdir()
    (tmp_path / "mae.yaml").write_text(YAML_HEADER.format(augmentations="reconstruction.yaml")
                                       + SOLO_LEARN_CIFAR_MAE)
    (tmp_path / "augmentations" / "reconstruction.yaml").write_text(
        yaml.safe_dump(SOLO_LEARN_RECONSTRUCTION))
    (tmp_path / "wandb" / "private.yaml").write_text("enabled: False\n")
    raw = load_raw(tmp_path, "mae.yaml", [f"++data.train_path={cifar_mini / 'train'}",
                                          f"++data.val_path={cifar_mini / 'test'}",
                                          "++accelerator=cpu", "++devices=1"])
    cfg = parse_config(raw)
    shipped = shipped_config("mae", cifar_mini)
    assert cfg.method_kwargs == shipped.method_kwargs and cfg.augmentations == shipped.augmentations
    torch.manual_seed(0)
    model = METHODS.get("mae")(cfg)  # ViT-S/4 and the 8-block decoder: one step on 2 images
    crops = [torch.randn(2, 3, 32, 32)]
    loss, _ = model.ssl_loss(model.encode_batch((torch.arange(2), crops, torch.zeros(2).long())))
    assert torch.isfinite(loss)


def test_imagenet100_recipe_parses(cifar_mini: Path) -> None:
    raw = load_raw(ROOT / "scripts" / "pretrain" / "imagenet-100", "mae.yaml",
                   [f"++data.train_path={cifar_mini / 'train'}",
                    f"++data.val_path={cifar_mini / 'test'}", "++accelerator=cpu", "++devices=1"])
    cfg = parse_config(raw)
    assert cfg.backbone.name == "vit_base" and cfg.method_kwargs.norm_pix_loss
    assert [g.crop_size for g in cfg.augmentations] == [224] and cfg.optimizer.lr == 2e-4


@pytest.mark.filterwarnings("ignore:.*does not have many workers")
def test_finetune_recipe_runs_with_layer_decay_mixup_and_cutmix(cifar_mini: Path,
                                                                tmp_path: Path) -> None:
    """A tiny pretrained MAE fine-tuned by main_linear's code with the shipped ImageNet-100
    recipe (layer decay, drop path, mixup, cutmix, label smoothing), on the CIFAR slice."""
    model = tiny_mae(cifar_mini)
    path = tmp_path / "mae.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"cfg": model.cfg.to_dict()},
                "epoch": 0, "global_step": 0}, path)
    overrides = [f"++pretrained_feature_extractor=\"{path}\"",
                 f"++data.train_path={cifar_mini / 'train'}", f"++data.val_path={cifar_mini / 'test'}",
                 "++data.dataset=cifar10", "++data.num_workers=0", "++optimizer.batch_size=8",
                 "++accelerator=cpu", "++devices=1", "++precision=32", "++strategy=auto",
                 f"++checkpoint.dir={tmp_path}", "++checkpoint.enabled=False",
                 "++auto_resume.enabled=False", "++max_epochs=1", "++limit_train_batches=2",
                 "++limit_val_batches=1", "++enable_progress_bar=False"]
    cfg = parse_linear_config(load_raw(ROOT / "scripts" / "finetune" / "imagenet-100", "mae.yaml",
                                       overrides))
    assert cfg.optimizer.layer_decay == 0.75 and cfg.mixup == 0.8 and cfg.cutmix == 1.0
    result = linear_eval(cfg)
    assert result.epochs == 1 and 0 <= result.metrics["val_acc1"] <= 1
    # backbone.kwargs.drop_path_rate reached the rebuilt ViT (timm: rising to 0.1 at the last block)
    assert result.pretrained.backbone.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
