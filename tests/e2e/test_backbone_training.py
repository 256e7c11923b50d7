"""Every backbone name, and a timm model outside the registry, trains BYOL on real CIFAR-10
images through main_pretrain's code path (the shipped YAML composed by Hydra, then pretrain)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from solo.backbones import BACKBONES
from solo.config import parse_config
from solo.pretrain import pretrain
from tests.helpers import CIFAR_CONFIGS, load_raw, small_cpu_overrides

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
TIMM_OUTSIDE_THE_REGISTRY = "timm/resnet10t"  # 5 M parameters: any timm model builds by name


def two_step_overrides(backbone: str) -> list[str]:
    return [f"++backbone.name={backbone}", "++max_epochs=1", "++limit_train_batches=2",
            "++limit_val_batches=0", "++knn_eval.enabled=False", "++data.pipeline=cpu",
            "++method_kwargs.proj_hidden_dim=64", "++method_kwargs.pred_hidden_dim=64",
            "++enable_progress_bar=False", "++scheduler.warmup_epochs=0"]


@pytest.mark.parametrize("backbone", [*BACKBONES.names(), TIMM_OUTSIDE_THE_REGISTRY])
def test_two_byol_steps_change_every_backbone(backbone: str, cifar_mini: Path,
                                              tmp_path: Path) -> None:
    overrides = small_cpu_overrides(cifar_mini, batch_size=4) + two_step_overrides(backbone)
    overrides.append(f"++checkpoint.dir={tmp_path}")  # the CSV logs go there, not the checkout
    cfg = parse_config(load_raw(CIFAR_CONFIGS, "byol.yaml", overrides))
    result = pretrain(cfg)
    model = result.model
    assert model.trainer.global_step == 2
    assert math.isfinite(result.metrics["train_loss_epoch"])
    # the momentum backbone starts as a copy of the online one and moves only a fraction of the
    # way toward it after each step: the two differ exactly when the online weights have moved
    online = dict(model.backbone.named_parameters())
    momentum = dict(model.momentum_backbone.named_parameters())
    assert online.keys() == momentum.keys()
    changed = [k for k, v in online.items() if v.requires_grad and not torch.equal(v, momentum[k])]
    assert changed, f"{backbone}: no backbone weight changed in two steps"
    assert all(torch.isfinite(v).all() for v in online.values())


def test_main_pretrain_trains_a_vit_from_the_command_line(cifar_mini: Path, tmp_path: Path) -> None:
    overrides = small_cpu_overrides(cifar_mini, batch_size=4) + two_step_overrides("vit_tiny")
    overrides += ["++backbone.kwargs.patch_size=4", f"++checkpoint.dir={tmp_path}",
                  "++checkpoint.enabled=True"]
    run = subprocess.run([sys.executable, "main_pretrain.py", "--config-path",
                          str(CIFAR_CONFIGS), "--config-name", "byol.yaml", *overrides],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    # patch 4 on 32 px crops: an 8 x 8 grid of patches plus the class token
    assert state["backbone.pos_embed"].shape == (1, 65, 192)
    assert state["backbone.patch_embed.proj.weight"].shape == (192, 3, 4, 4)
