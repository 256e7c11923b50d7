"""On a GPU, a training step with views made on the device never waits for the device: CUDA's
sync debug mode turns any device-to-host synchronisation into an error. Skipped without a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from solo.data.batch_augment import BatchMultiCrop
from solo.methods import METHODS
from tests.helpers import shipped_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_views_step_and_momentum_update_do_not_sync(cifar_mini: Path) -> None:
    cfg = shipped_config("byol", cifar_mini, ["++data.pipeline=gpu", "++knn_eval.enabled=False"])
    model = METHODS.get("byol")(cfg).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=True)
    generator = torch.Generator("cuda").manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device="cuda")
    indexes = torch.arange(64, device="cuda")
    targets = torch.randint(0, 10, (64,), device="cuda")
    multicrop = BatchMultiCrop(cfg.augmentations)

    def step() -> None:
        views = multicrop(images, generator=generator)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model.training_step((indexes, views, targets), 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.momentum_update(0.99)

    step()  # first call: allocator growth and kernel selection may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
