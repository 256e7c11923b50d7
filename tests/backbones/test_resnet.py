import pytest
import torch
from torch import nn

from solo.backbones import BACKBONES, build_backbone


@pytest.mark.parametrize("name, features", [("resnet18", 512), ("resnet50", 2048)])
def test_headless_with_num_features(name: str, features: int) -> None:
    model = build_backbone(name)
    assert model.num_features == features and isinstance(model.fc, nn.Identity)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, features)


def test_cifar_stem_matches_solo_learn_checkpoint_layout() -> None:
    model = build_backbone("resnet18", small_images=True)
    conv = model.conv1
    assert (conv.kernel_size, conv.stride, conv.padding, conv.bias) == ((3, 3), (1, 1), (2, 2), None)
    assert isinstance(model.maxpool, nn.Identity)
    # padding 2 grows 32x32 to 34x34 before layer1; the pooled features stay (B, 512)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    assert model.conv1.weight.shape == (64, 3, 3, 3)


def test_unknown_backbone_suggests_the_closest() -> None:
    with pytest.raises(KeyError, match='did you mean "resnet18"'):
        build_backbone("resnet19")
    assert {"resnet18", "resnet50"} <= set(BACKBONES.names())
