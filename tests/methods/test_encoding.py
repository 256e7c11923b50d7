"""Multi-crop encoding: one backbone call per crop by default (batch norm statistics per view, as
solo-learn and the BYOL and MoCo papers compute them), one per resolution with fuse_crops."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from solo.methods import METHODS
from tests.helpers import shipped_config

# BYOL's two 32 px groups become 2 large crops and 3 small 16 px ones
MULTICROP = ["++augmentations.0.num_crops=2", "++augmentations.1.crop_size=16",
             "++augmentations.1.num_crops=3"]


def crops_of(cfg, batch: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sizes = [a.crop_size for a in cfg.augmentations for _ in range(a.num_crops)]
    return [torch.randn(batch, 3, size, size, generator=g) for size in sizes]


def calls_and_features(model, crops, encoder) -> tuple[list[int], list[torch.Tensor]]:
    sizes: list[int] = []
    handle = encoder.register_forward_hook(lambda module, args, out: sizes.append(len(args[0])))
    try:
        feats = model.encode_crops(crops, encoder)
    finally:
        handle.remove()
    return sizes, feats


@pytest.mark.parametrize("method", ["byol", "mocov2plus"])
def test_each_crop_is_its_own_backbone_call_with_its_own_batch_statistics(cifar_mini: Path,
                                                                          method: str) -> None:
    cfg = shipped_config(method, cifar_mini)
    model = METHODS.get(method)(cfg).train()
    crops = crops_of(cfg)
    for encoder in (model.backbone, model.momentum_backbone):
        sizes, feats = calls_and_features(model, crops, encoder)
        assert sizes == [6, 6]  # the two views separately: queries and keys never share BN
        with torch.no_grad():
            for crop, feat in zip(crops, feats):
                torch.testing.assert_close(feat, encoder(crop))
        fused = encoder(torch.cat(crops)).chunk(2)
        assert not torch.allclose(feats[0], fused[0], atol=1e-3)  # BN over both views differs


def test_fuse_crops_makes_one_call_per_resolution(cifar_mini: Path) -> None:
    per_crop = shipped_config("byol", cifar_mini, MULTICROP)
    fused = shipped_config("byol", cifar_mini, MULTICROP + ["++performance.fuse_crops=True"])
    assert per_crop.num_large_crops == 2 and per_crop.num_small_crops == 3
    crops = crops_of(per_crop)
    torch.manual_seed(0)
    model = METHODS.get("byol")(per_crop).train()
    sizes, _ = calls_and_features(model, crops, model.backbone)
    assert sizes == [6] * 5
    model.cfg = fused
    sizes, feats = calls_and_features(model, crops, model.backbone)
    assert sizes == [12, 18]  # the large crops together, then the small ones
    with torch.no_grad():
        expected = model.backbone(torch.cat(crops[2:])).chunk(3)
    for feat, reference in zip(feats[2:], expected):
        torch.testing.assert_close(feat, reference)
