"""Converted weights give our features in torchvision and timm; detectron2 names follow its layout."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn

from solo.zoo import load_pretrained
from solo.zoo.__main__ import main
from solo.zoo.convert import convert, detectron2_key, patch_cifar_stem


def features(module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module.eval()(images)


def test_torchvision_conversion_gives_our_features(solo_run, images, tmp_path):
    out = convert(solo_run[0], "torchvision", tmp_path / "tv" / "resnet18.pth")
    weights = torch.load(out, weights_only=True)
    model = torchvision.models.resnet18()
    # the CIFAR stem, written out by hand as the module docstring tells users to
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    model.maxpool = nn.Identity()
    result = model.load_state_dict(weights, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys
    model.fc = nn.Identity()
    torch.testing.assert_close(features(model, images), features(solo_run[1].backbone, images))
    # and the written file loads back through load_pretrained to the same backbone
    again = load_pretrained(out)
    assert (again.backbone_name, again.cifar_stem) == ("resnet18", True)
    assert torch.equal(features(again.backbone, images), features(solo_run[1].backbone, images))


def test_timm_conversion_loads_strictly_and_gives_our_features(solo_run, images, tmp_path,
                                                               capsys):
    out = tmp_path / "timm.pth"
    assert main(["convert", str(solo_run[0]), "--to", "timm", "--out", str(out)]) == 0
    assert ("load it with: solo.zoo.convert.patch_cifar_stem(timm.create_model('resnet18', "
            "num_classes=0))") in capsys.readouterr().err
    model = patch_cifar_stem(timm.create_model("resnet18", num_classes=0))
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    torch.testing.assert_close(features(model, images), features(solo_run[1].backbone, images))


def test_imagenet_stem_resnet50_converts_for_timm(tmp_path, cifar_mini):
    torch.manual_seed(0)
    source = torchvision.models.resnet50()
    torch.save(source.state_dict(), tmp_path / "r50.pth")
    out = convert(tmp_path / "r50.pth", "timm", tmp_path / "r50-timm.pth")
    model = timm.create_model("resnet50", num_classes=0)
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    source.fc = nn.Identity()
    batch = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(features(model, batch), features(source, batch))


def expected_detectron2_names(blocks: list[int], bottleneck: bool) -> set[str]:
    """detectron2's ResNet parameter names, built from its architecture: BasicStem, then stages
    res2..res5 whose first block has a projection shortcut (for ResNet-18 all but res2's)."""
    norm = ["norm.weight", "norm.bias", "norm.running_mean", "norm.running_var"]
    names = {"stem.conv1.weight"} | {f"stem.conv1.{n}" for n in norm}
    convs = 3 if bottleneck else 2
    for stage, count in enumerate(blocks, start=2):
        for block in range(count):
            for conv in range(1, convs + 1):
                names |= {f"res{stage}.{block}.conv{conv}.weight"}
                names |= {f"res{stage}.{block}.conv{conv}.{n}" for n in norm}
            if block == 0 and (bottleneck or stage > 2):
                names |= {f"res{stage}.0.shortcut.weight"} | {f"res{stage}.0.shortcut.{n}"
                                                              for n in norm}
    return names


@pytest.mark.parametrize("name,blocks,bottleneck", [("resnet18", [2, 2, 2, 2], False),
                                                    ("resnet50", [3, 4, 6, 3], True)])
def test_detectron2_pickle_has_its_names_and_our_arrays(tmp_path, name, blocks, bottleneck):
    source = getattr(torchvision.models, name)()
    torch.save(source.state_dict(), tmp_path / "in.pth")
    out = convert(tmp_path / "in.pth", "detectron2", tmp_path / "out.pkl")
    with open(out, "rb") as handle:
        written = pickle.load(handle)
    assert written["__author__"] == "solo" and written["matching_heuristics"] is True
    model = written["model"]
    assert set(model) == expected_detectron2_names(blocks, bottleneck)
    assert all(isinstance(v, np.ndarray) for v in model.values())
    state = source.state_dict()
    np.testing.assert_array_equal(model["stem.conv1.weight"], state["conv1.weight"].numpy())
    np.testing.assert_array_equal(model["stem.conv1.norm.running_var"], state["bn1.running_var"].numpy())
    np.testing.assert_array_equal(model["res3.0.shortcut.norm.bias"],
                                  state["layer2.0.downsample.1.bias"].numpy())
    np.testing.assert_array_equal(model["res5.1.conv2.weight"], state["layer4.1.conv2.weight"].numpy())


def test_detectron2_key_examples():
    assert detectron2_key("bn1.weight") == "stem.conv1.norm.weight"
    assert detectron2_key("layer1.0.bn3.running_mean") == "res2.0.conv3.norm.running_mean"
    assert detectron2_key("layer4.0.downsample.0.weight") == "res5.0.shortcut.weight"
    assert detectron2_key("layer3.5.conv2.weight") == "res4.5.conv2.weight"


def test_cifar_stem_warns_for_detectron2_and_bad_target_fails(solo_run, tmp_path):
    with pytest.warns(UserWarning, match="7x7"):
        convert(solo_run[0], "detectron2", tmp_path / "d2.pkl")
    with pytest.raises(ValueError, match="unknown conversion target 'onnx'; valid: torchvision, "
                                         "timm, detectron2"):
        convert(solo_run[0], "onnx", tmp_path / "x")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob("*.tmp"))
