"""Checkpoints of the ViT, Swin, ConvNeXt, PoolFormer and WRN backbones: ours and solo-learn's load
with the geometry their weights imply, convert to timm with the same features on real CIFAR-10
images, older and official timm layouts load through timm's filters, and misfits list their keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from solo.backbones import BACKBONES, build_backbone
from solo.methods import METHODS
from solo.zoo import CheckpointError, load_pretrained
from solo.zoo.__main__ import main
from solo.zoo.checkpoints import load_backbone_weights
from solo.zoo.convert import convert
from solo.zoo.infer import infer_backbone_name
from tests.helpers import shipped_config
from tests.solo_learn import solo_learn_args


def features(module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module.eval()(images)


def solo_learn_run(root: Path, cifar_mini: Path, backbone: dict, weights: dict[str, torch.Tensor],
                   width: int) -> Path:
    """A solo-learn BYOL run folder: args.json naming ``backbone`` and a Lightning checkpoint with
    the backbone, its momentum copy and the online classifier."""
    args = solo_learn_args("byol", cifar_mini)
    args["backbone"] = backbone
    run = root / "byol" / args["wandb_run_id"]
    run.mkdir(parents=True)
    (run / "args.json").write_text(json.dumps(args))
    state = {**{f"backbone.{k}": v for k, v in weights.items()},
             **{f"momentum_backbone.{k}": v for k, v in weights.items()},
             "classifier.weight": torch.randn(10, width), "classifier.bias": torch.zeros(10)}
    path = run / f"byol-cifar10-{args['wandb_run_id']}-ep=999.ckpt"
    torch.save({"epoch": 999, "global_step": 1, "state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def solo_vit(cifar_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    """A BYOL checkpoint of ours with solo-learn's CIFAR ViT (vit_tiny, patch 4, 32 px), as
    BaseMethod saves it: the whole method's state dict and ``{"cfg": ...}`` hyper-parameters."""
    cfg = shipped_config("byol", cifar_mini, ["++backbone.name=vit_tiny",
                                              "++backbone.kwargs.patch_size=4"])
    torch.manual_seed(0)
    method = METHODS.get("byol")(cfg).eval()
    path = tmp_path_factory.mktemp("solo_vit") / "byol-vit.ckpt"
    torch.save({"epoch": 1, "global_step": 10, "state_dict": method.state_dict(),
                "hyper_parameters": {"cfg": cfg.to_dict()}}, path)
    return path, method.backbone


def test_our_vit_converts_to_timm_with_the_same_features(solo_vit, images, tmp_path, capsys):
    path, backbone = solo_vit
    out = tmp_path / "vit-timm.pth"
    assert main(["convert", str(path), "--to", "timm", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == str(out)
    assert ("load it with: timm.create_model('vit_tiny_patch16_224', num_classes=0, img_size=32, "
            "patch_size=4, num_heads=3, dynamic_img_size=True)") in printed.err
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=4,
                              num_heads=3, dynamic_img_size=True)
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    ours = features(backbone, images)
    torch.testing.assert_close(features(model, images), ours)
    # the timm file loads back on its own: name and geometry from the weights
    again = load_pretrained(out)
    assert (again.source_format, again.backbone_name, again.backbone_kwargs) == (
        "timm", "vit_tiny", {"img_size": 32, "patch_size": 4})
    assert torch.equal(features(again.backbone, images), ours)
    # ResNet-only targets say so, and write nothing
    assert main(["convert", str(path), "--to", "torchvision", "--out", str(tmp_path / "tv")]) == 1
    assert "--to torchvision writes ResNets; vit_tiny converts with --to timm" in \
        capsys.readouterr().err
    assert not (tmp_path / "tv").exists()


def test_solo_learn_vit_without_geometry_in_its_config(solo_vit, images, tmp_path, cifar_mini):
    _, backbone = solo_vit
    path = solo_learn_run(tmp_path, cifar_mini, {"name": "vit_tiny", "kwargs": {}},
                          backbone.state_dict(), 192)
    loaded = load_pretrained(path)
    assert (loaded.source_format, loaded.backbone_name, loaded.method) == ("solo-learn",
                                                                           "vit_tiny", "byol")
    assert loaded.backbone_kwargs == {"img_size": 32, "patch_size": 4} and not loaded.cifar_stem
    assert torch.equal(features(loaded.backbone, images), features(backbone, images))


def test_timm_checkpoint_with_a_classifier_loads_headless(tmp_path, images):
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4)
    assert "head.weight" in source.state_dict()
    torch.save(source.state_dict(), tmp_path / "vit-in1k.pth")
    loaded = load_pretrained(tmp_path / "vit-in1k.pth")
    with torch.no_grad():
        pre_logits = source.eval().forward_head(source.forward_features(images), pre_logits=True)
    assert torch.equal(features(loaded.backbone, images), pre_logits)
    # backbone.pretrained (pretraining from it) drops the head the same way
    target = build_backbone("vit_tiny", image_size=32, patch_size=4)
    load_backbone_weights(target, tmp_path / "vit-in1k.pth")
    assert torch.equal(features(target, images), pre_logits)


def old_timm_swin(model: nn.Module, classes: int = 0) -> dict[str, torch.Tensor]:
    """``model``'s weights as timm before 0.9 saved a Swin: the inverse of timm's
    swin_transformer.checkpoint_filter_fn. Stage N+1's leading patch merging is stage N's
    trailing ``downsample``; the relative position indexes (and each shifted block's attention
    mask) are stored; a classifier is ``head`` rather than ``head.fc``."""
    old = {}
    for key, value in model.state_dict().items():
        key = re.sub(r"^layers\.(\d+)\.downsample",
                     lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        old[key] = value
    for name, buffer in model.named_buffers():
        old[name] = buffer  # relative_position_index, persistent then
    for stage, layer in enumerate(model.layers):
        for index, block in enumerate(layer.blocks):
            if any(block.shift_size):
                height, width = block.input_resolution
                area = block.window_size[0] * block.window_size[1]
                windows = height * width // area
                old[f"layers.{stage}.blocks.{index}.attn_mask"] = torch.zeros(windows, area, area)
    if classes:
        old["head.weight"] = torch.randn(classes, model.num_features)
        old["head.bias"] = torch.zeros(classes)
    return old


def test_swin_in_the_old_timm_layout_loads(tmp_path, cifar_mini, images):
    # solo-learn's CIFAR Swin: swin_tiny at 32 px with window 4, from its backbone.kwargs
    geometry = {"img_size": 32, "window_size": 4}
    torch.manual_seed(0)
    reference = build_backbone("swin_tiny", **geometry)
    expected = features(reference, images)
    old = old_timm_swin(reference)
    assert "layers.0.downsample.reduction.weight" in old and "layers.0.blocks.1.attn_mask" in old
    assert "layers.3.downsample.reduction.weight" not in old
    path = solo_learn_run(tmp_path, cifar_mini, {"name": "swin_tiny", "kwargs": geometry}, old,
                          reference.num_features)
    loaded = load_pretrained(path)
    assert (loaded.source_format, loaded.backbone_name) == ("solo-learn", "swin_tiny")
    assert torch.equal(features(loaded.backbone, images), expected)

    # timm 0.6's own files: a classifier head, no config; the geometry must be given
    torch.save(old_timm_swin(reference, classes=1000), tmp_path / "swin-old.pth")
    with pytest.raises(CheckpointError, match=r"for swin_tiny does not fit: the weights are of "
                       r"another geometry than the model \(timm would resample them\): "
                       r"layers.0.blocks.0.attn.relative_position_bias_table \(checkpoint "
                       r"\(49, 3\), model \(169, 3\)\)"):
        load_pretrained(tmp_path / "swin-old.pth")  # timm's default is 224 px, window 7
    plain = load_pretrained(tmp_path / "swin-old.pth", backbone_kwargs=geometry)
    assert (plain.source_format, plain.backbone_name) == ("timm", "swin_tiny")
    assert torch.equal(features(plain.backbone, images), expected)


def official_convnext(model: nn.Module) -> dict[str, torch.Tensor]:
    """facebookresearch/ConvNeXt's names for a timm ConvNeXt (the inverse of timm's
    convnext.checkpoint_filter_fn): Linear point-wise layers, a top-level norm, a head."""
    official = {}
    for key, value in model.state_dict().items():
        key = re.sub(r"^stem\.", "downsample_layers.0.", key)
        key = re.sub(r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", key)
        key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", key)
        key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        key = re.sub(r"^head\.norm\.", "norm.", key)
        official[key] = value.flatten(1) if "pwconv" in key and key.endswith("weight") else value
    width = model.num_features
    return {**official, "head.weight": torch.randn(1000, width), "head.bias": torch.zeros(1000)}


def official_poolformer(model: nn.Module) -> dict[str, torch.Tensor]:
    """sail-sg/poolformer's names for timm's PoolFormer v1 (the inverse of timm's
    metaformer.checkpoint_filter_fn): stages and downsamplings interleaved in ``network``."""
    official = {}
    for key, value in model.state_dict().items():
        key = key.replace("stem.conv", "patch_embed.proj")
        key = re.sub(r"^stages\.(\d+)\.downsample\.conv",
                     lambda m: f"network.{2 * int(m.group(1)) - 1}.proj", key)
        key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)",
                     lambda m: f"network.{2 * int(m.group(1))}.{m.group(2)}", key)
        key = re.sub(r"layer_scale(\d)\.scale", r"layer_scale_\1", key)
        key = re.sub(r"^head\.norm\.", "norm.", key)
        official[key] = value
    width = model.num_features
    return {**official, "head.weight": torch.randn(1000, width), "head.bias": torch.zeros(1000)}


@pytest.mark.parametrize("name,backbone,to_official", [
    ("timm/convnext_atto", "timm/convnext_atto", official_convnext),  # not a registered size
    ("poolformer_s12", None, official_poolformer)])  # told from its widths and depths
def test_official_convnext_and_poolformer_layouts(tmp_path, images, name, backbone, to_official):
    torch.manual_seed(0)
    reference = build_backbone(name)
    path = tmp_path / "official.pth"
    torch.save({"model": to_official(reference)}, path)
    loaded = load_pretrained(path, backbone=backbone)
    assert loaded.backbone_name == name
    assert torch.equal(features(loaded.backbone, images), features(reference, images))


def test_the_weights_tell_every_registered_backbone():
    for name in BACKBONES.names():
        with torch.device("meta"):  # shapes only: no memory, no initialization
            weights = build_backbone(name).state_dict()
        assert infer_backbone_name(weights) == name, name
    with pytest.raises(ValueError, match="no registered ViT has width 192 and 6 blocks"):
        with torch.device("meta"):
            infer_backbone_name(timm.create_model("vit_tiny_patch16_224", depth=6).state_dict())
    with pytest.raises(ValueError, match=r"cannot tell the backbone from the weights.*\(first "
                                         r"keys: weight, bias\); pass backbone="):
        infer_backbone_name(nn.Linear(2, 2).state_dict())


def test_misfits_list_missing_unexpected_and_mis_shaped_keys(solo_vit, tmp_path):
    path, backbone = solo_vit
    with pytest.raises(CheckpointError) as info:
        load_pretrained(path, backbone="vit_small")
    message = str(info.value)
    assert "(solo format) for vit_small does not fit:" in message
    assert "shape mismatches (" in message and \
        "cls_token (checkpoint (1, 1, 192), model (1, 1, 384))" in message
    state = backbone.state_dict()
    del state["blocks.11.mlp.fc2.bias"]
    state["blocks.11.adapter.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError, match=r"\(timm format\) for vit_tiny does not fit:\n  "
                                              r"missing keys \(1\): blocks.11.mlp.fc2.bias\n  "
                                              r"unexpected keys \(1\): blocks.11.adapter.weight"):
        load_pretrained(tmp_path / "edited.pth")
    # solo-learn's WRN has no timm counterpart
    torch.save(build_backbone("wide_resnet28w2").state_dict(), tmp_path / "wrn.pth")
    assert load_pretrained(tmp_path / "wrn.pth").backbone_name == "wide_resnet28w2"
    with pytest.raises(CheckpointError, match="wide_resnet28w2 is not a timm model"):
        convert(tmp_path / "wrn.pth", "timm", tmp_path / "wrn-timm.pth")
    assert not (tmp_path / "wrn-timm.pth").exists()
