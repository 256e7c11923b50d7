"""load_pretrained on every supported format, checked by the features it gives on real images."""

from __future__ import annotations

import argparse
import datetime
import json
import warnings
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from solo.zoo import CheckpointError, load_pretrained
from solo.zoo.resnet_layout import has_cifar_stem, infer_resnet_name
from tests.zoo.conftest import real_images


def features(module: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module.eval()(images)


def test_our_checkpoint_loads_with_its_config(solo_run, images):
    path, model = solo_run
    assert torch.load(path, map_location="cpu", weights_only=True)  # plain types only
    loaded = load_pretrained(path)
    assert (loaded.source_format, loaded.backbone_name, loaded.method) == ("solo", "resnet18", "byol")
    assert loaded.cfg["data"]["dataset"] == "cifar10" and loaded.cifar_stem
    assert not loaded.backbone.training
    assert "projector.0.weight" in loaded.state_dict and "predictor.0.weight" in loaded.state_dict
    assert torch.equal(features(loaded.backbone, images), features(model.backbone, images))
    assert features(loaded.backbone, images).shape == (8, 512)


def write_solo_learn(tmp_path: Path, solo_run, prefix: str, args: dict) -> Path:
    """A solo-learn-style checkpoint: backbone under ``prefix``, its online classifier and
    momentum backbone beside it, no hyper-parameters, and ``args.json`` in the same folder."""
    source = solo_run[1].state_dict()  # what the checkpoint holds, without reading 120 MB again
    state = {prefix + k[len("backbone."):]: v for k, v in source.items() if k.startswith("backbone.")}
    state.update({k: v for k, v in source.items() if k.startswith("momentum_backbone.")})
    state["classifier.weight"], state["classifier.bias"] = torch.randn(10, 512), torch.zeros(10)
    path = tmp_path / "byol-cifar10-abc123-ep=999.ckpt"
    torch.save({"epoch": 999, "global_step": 1, "state_dict": state}, path)
    (tmp_path / "args.json").write_text(json.dumps(args))
    return path


def test_old_solo_learn_checkpoint_with_encoder_prefix_and_flat_args(tmp_path, solo_run, images):
    flat = {"method": "byol", "encoder": "resnet18", "dataset": "cifar10", "max_epochs": 1000}
    loaded = load_pretrained(write_solo_learn(tmp_path, solo_run, "encoder.", flat))
    assert (loaded.source_format, loaded.backbone_name, loaded.method) == ("solo-learn", "resnet18",
                                                                            "byol")
    assert loaded.cfg == flat and loaded.cifar_stem
    assert "classifier.weight" in loaded.state_dict
    assert torch.equal(features(loaded.backbone, images), features(solo_run[1].backbone, images))


def test_solo_learn_checkpoint_with_backbone_prefix_and_nested_args(tmp_path, solo_run, images):
    nested = {"method": "byol", "backbone": {"name": "resnet18", "kwargs": {}},
              "data": {"dataset": "cifar100", "train_path": "./datasets"}}
    loaded = load_pretrained(write_solo_learn(tmp_path, solo_run, "backbone.", nested))
    assert (loaded.source_format, loaded.cfg, loaded.cifar_stem) == ("solo-learn", nested, True)
    assert torch.equal(features(loaded.backbone, images), features(solo_run[1].backbone, images))


def test_solo_learn_hyper_parameters_as_namespace_load_without_unpickling(tmp_path, solo_run):
    state = solo_run[1].state_dict()
    hparams = argparse.Namespace(backbone="resnet18", dataset="cifar10", method="simclr")
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": hparams}, path)
    loaded = load_pretrained(path, trust_pickle=False)  # Namespace is allowed explicitly
    assert (loaded.source_format, loaded.method, loaded.cfg["dataset"]) == ("solo-learn", "simclr",
                                                                             "cifar10")


def test_torchvision_state_dict_infers_resnet50_and_the_imagenet_stem(tmp_path, cifar_mini):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_pretrained(path)
    assert (loaded.source_format, loaded.backbone_name, loaded.cifar_stem) == ("torchvision",
                                                                               "resnet50", False)
    assert "fc.weight" in loaded.state_dict  # kept in the state dict, not in the backbone
    reference.fc = torch.nn.Identity()
    upscaled = real_images(cifar_mini, 2, size=64)
    torch.testing.assert_close(features(loaded.backbone, upscaled), features(reference, upscaled))


def test_timm_headless_state_dict(tmp_path, images):
    torch.manual_seed(0)
    reference = timm.create_model("resnet18", num_classes=0)
    path = tmp_path / "timm-resnet18.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_pretrained(path, cifar_stem=False)
    assert (loaded.source_format, loaded.backbone_name) == ("timm", "resnet18")
    torch.testing.assert_close(features(loaded.backbone, images), features(reference, images))
    # the Hugging Face hub's timm weights come as safetensors, with the fc head
    save_file(timm.create_model("resnet18").state_dict(), tmp_path / "model.safetensors")
    from_hub = load_pretrained(tmp_path / "model.safetensors")
    assert (from_hub.source_format, from_hub.cifar_stem, "fc.weight" in from_hub.state_dict) == (
        "timm", False, True)


def test_timm_training_checkpoint_and_ddp_prefix(tmp_path):
    state = {f"module.{k}": v for k, v in timm.create_model("resnet18").state_dict().items()}
    path = tmp_path / "checkpoint-9.pth.tar"
    torch.save({"epoch": 9, "arch": "resnet18", "state_dict": state}, path)
    loaded = load_pretrained(path)
    assert (loaded.source_format, loaded.backbone_name, loaded.cifar_stem) == ("timm", "resnet18",
                                                                               False)


def test_weights_alone_tell_the_cifar_stem(solo_run, tmp_path, images):
    backbone = solo_run[1].backbone
    path = tmp_path / "plain.pt"
    torch.save(backbone.state_dict(), path)
    loaded = load_pretrained(path)
    assert loaded.cifar_stem and loaded.backbone.conv1.padding == (2, 2)
    assert torch.equal(features(loaded.backbone, images), features(backbone, images))


def test_layout_inference():
    assert infer_resnet_name(torchvision.models.resnet18().state_dict()) == "resnet18"
    assert infer_resnet_name(torchvision.models.resnet34().state_dict()) == "resnet34"
    assert infer_resnet_name(torchvision.models.resnet50().state_dict()) == "resnet50"
    assert not has_cifar_stem(torchvision.models.resnet18().state_dict())
    with pytest.raises(ValueError, match="wide ResNet"):
        infer_resnet_name(torchvision.models.wide_resnet50_2().state_dict())


def test_wrong_backbone_lists_missing_and_unexpected_keys(solo_run):
    with pytest.raises(CheckpointError) as info:
        load_pretrained(solo_run[0], backbone="resnet50")
    message = str(info.value)
    assert "for resnet50 with the CIFAR stem does not fit" in message
    assert "missing keys (" in message and "layer1.0.conv3.weight" in message
    assert "unexpected keys (" not in message  # every resnet18 key name also exists in resnet50
    assert "shape mismatches (" in message and "layer1.0.conv1.weight (checkpoint (64, 64, 3, 3)" \
        in message


def test_wrong_stem_and_dropped_key_are_named(solo_run, tmp_path):
    with pytest.raises(CheckpointError, match=r"shape mismatches \(1\): conv1.weight \(checkpoint "
                                              r"\(64, 3, 3, 3\), model \(64, 3, 7, 7\)\)"):
        load_pretrained(solo_run[0], cifar_stem=False)
    state = solo_run[1].backbone.state_dict()
    del state["layer4.1.bn2.running_var"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): layer4.1.bn2.running_var"
                                              r"\n  unexpected keys \(1\): extra.weight"):
        load_pretrained(path)


def test_unknown_backbone_and_bad_files(solo_run, tmp_path):
    with pytest.raises(CheckpointError) as info:
        load_pretrained(solo_run[0], backbone="resnet19")
    message = str(info.value)  # the registered names, then the closest timm models
    assert "unknown backbone 'resnet19' (did you mean \"resnet18\"?); valid: " in message
    assert ", resnet18, resnet50, " in message and ", vit_small, " in message
    assert "the closest timm models: timm/resnet18" in message
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_pretrained(tmp_path / "nope.ckpt")
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_pretrained(path)
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1), "meta": "x"}, path)
    with pytest.raises(CheckpointError, match=r"top-level keys are \['meta', 'weights'\]"):
        load_pretrained(path)
    for name, content in (("text.ckpt", b"not a checkpoint at all\n"),
                          ("cut.ckpt", solo_run[0].read_bytes()[:5000])):  # an interrupted copy
        (tmp_path / name).write_bytes(content)
        with warnings.catch_warnings(), pytest.raises(CheckpointError, match="not a readable checkpoint"):
            warnings.simplefilter("ignore")  # a text file first looks like a pickle to trust
            load_pretrained(tmp_path / name)


def test_pickled_objects_need_trust(solo_run, tmp_path):
    state = solo_run[1].backbone.state_dict()
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in state.items()},
                "hyper_parameters": {"saved_at": datetime.datetime(2024, 1, 1)}}, path)
    with pytest.raises(CheckpointError, match="holds objects other than tensors"):
        load_pretrained(path, trust_pickle=False)
    with pytest.warns(UserWarning, match="weights_only=False because it is a local file"):
        loaded = load_pretrained(path)
    assert loaded.cfg == {"saved_at": datetime.datetime(2024, 1, 1)}
