"""solo-learn's module layout, rebuilt here from its method files (module names and layer order),
loads into our methods whole: backbone, online classifier, projector, predictor, momentum
networks and MoCo's queue, strictly, and computes the same outputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from solo.methods import METHODS
from solo.methods.state_dict import upgrade_state_dict
from tests.helpers import shipped_config
from tests.solo_learn import solo_learn_model


@pytest.mark.parametrize("method, momentum_classifier", [("byol", True), ("byol", False),
                                                          ("simclr", False), ("mocov2plus", True)])
def test_solo_learn_state_dict_loads_whole_and_computes_the_same(cifar_mini: Path, method: str,
                                                                 momentum_classifier: bool) -> None:
    cfg = shipped_config(method, cifar_mini, [f"++momentum.classifier={momentum_classifier}",
                                              "++method_kwargs.proj_hidden_dim=64",
                                              "++method_kwargs.proj_output_dim=32"]
                         + (["++method_kwargs.pred_hidden_dim=48"] if method == "byol" else [])
                         + (["++method_kwargs.queue_size=512"] if method == "mocov2plus" else []))
    theirs = solo_learn_model(method, dataclasses.asdict(cfg.method_kwargs), cfg.num_classes,
                              momentum_classifier)
    ours = METHODS.get(method)(cfg)
    state = theirs.state_dict()
    assert sorted(ours.state_dict()) == sorted(state)  # the same keys, nothing more or less
    ours.load_state_dict(state, strict=True)
    ours.eval()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        feats = ours.backbone(images)
        torch.testing.assert_close(feats, theirs.backbone(images))
        torch.testing.assert_close(ours.classifier(feats), theirs.classifier(feats))
        torch.testing.assert_close(ours.projector(feats), theirs.projector(feats))
        if method == "byol":
            z = theirs.projector(feats)
            torch.testing.assert_close(ours.predictor(z), theirs.predictor(z))
            torch.testing.assert_close(ours.momentum_projector(feats), theirs.momentum_projector(feats))
    if method == "mocov2plus":
        assert ours.queue_ptr.shape == (1,) and int(ours.queue_ptr) == 128
        assert torch.equal(ours.queue, theirs.queue)


def test_checkpoints_of_solo_0_1_still_load(cifar_mini: Path) -> None:
    """solo 0.1 kept the probe under 'probe.linear', had no bias before the heads' batch norm and
    a 0-d queue pointer: the upgraded state dict loads and gives the same projections."""
    cfg = shipped_config("mocov2plus", cifar_mini, ["++momentum.classifier=True",
                                                    "++method_kwargs.queue_size=512"])
    model = METHODS.get("mocov2plus")(cfg).eval()
    old = {}
    for key, value in model.state_dict().items():
        key = key.replace("momentum_classifier.", "momentum_probe.linear.")
        key = key.replace("classifier.", "probe.linear.") if key.startswith("classifier.") else key
        old[key] = value.reshape(()) if key == "queue_ptr" else value
    upgraded = upgrade_state_dict(old, model.state_dict())
    assert sorted(upgraded) == sorted(model.state_dict())
    model.load_state_dict(upgraded, strict=True)

    byol_cfg = shipped_config("byol", cifar_mini)
    byol = METHODS.get("byol")(byol_cfg).eval()
    without_bias = {k: v for k, v in byol.state_dict().items()
                    if k not in ("projector.0.bias", "predictor.0.bias", "momentum_projector.0.bias")}
    feats = torch.randn(8, 512)
    with torch.no_grad():
        byol.projector[0].bias.zero_()
        expected = byol.projector(feats)
        byol.projector[0].bias.fill_(3.0)
        byol.load_state_dict(upgrade_state_dict(without_bias, byol.state_dict()), strict=True)
        torch.testing.assert_close(byol.projector(feats), expected)


def test_solo_learn_swav_layout_loads_whole(cifar_mini: Path) -> None:
    # solo-learn's SwAV: prototypes = weight_norm(Linear) (weight_g, weight_v), a queue buffer
    # (crops, size, D) rolled newest-first and no pointer
    cfg = shipped_config("swav", cifar_mini, ["++method_kwargs.proj_hidden_dim=32",
                                              "++method_kwargs.proj_output_dim=8",
                                              "++method_kwargs.num_prototypes=10",
                                              "++method_kwargs.queue_size=32"])
    ours = METHODS.get("swav")(cfg)
    generator = torch.Generator().manual_seed(0)
    theirs = dict(ours.state_dict())
    del theirs["prototypes.weight"], theirs["queue_ptr"]
    direction = torch.randn(10, 8, generator=generator)
    scale = torch.rand(10, 1, generator=generator) + 0.5
    theirs["prototypes.weight_v"], theirs["prototypes.weight_g"] = direction, scale
    rolled = torch.randn(2, 32, 8, generator=generator)  # row 0 the newest
    theirs["queue"] = rolled
    ours.load_state_dict(upgrade_state_dict(theirs, ours.state_dict()), strict=True)
    torch.testing.assert_close(ours.prototypes.weight,
                               scale * direction / direction.norm(dim=1, keepdim=True))
    assert int(ours.queue_ptr) == 0
    # the next keys written replace the oldest: solo-learn's last rows
    ours.projection_queue.push(torch.zeros(2, 16, 8))
    assert torch.equal(ours.queue[:, 16:], rolled[:, :16].flip(1))
