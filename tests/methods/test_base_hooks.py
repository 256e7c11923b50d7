"""The base's hooks for what several methods need: frozen modules, per-parameter clipping,
hyperparameter schedules of the optimizer step (resumable), the weight-decay schedule."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from solo.config import ConfigError
from solo.methods import SimCLR
from solo.utils.optim import clip_grad_per_parameter
from solo.utils.schedules import cosine_schedule, linear_warmup
from tests.methods.test_methods import fit, recipe


class ScheduledSimCLR(SimCLR):
    """SimCLR with a scheduled attribute and a frozen projector, recording what each step saw."""

    def __init__(self, cfg, freeze_epochs: int = 0, clip: float = 0.0) -> None:
        super().__init__(cfg)
        self.ramp = linear_warmup(0, 3, 0.0, 1.0)
        self.freeze_for_epochs(self.projector, freeze_epochs)
        self.clip_grad_per_parameter = clip
        self.seen: list[tuple[int, float, list[float]]] = []
        self.largest_grads: list[float] = []  # per step, after the base's hook

    def scheduled_values(self, step: int) -> dict[str, float]:
        return {"ramp": linear_warmup(step, 3, 0.0, 1.0)}

    def on_before_optimizer_step(self, optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        self.largest_grads.append(max(float(p.grad.norm()) for p in self.parameters()
                                      if p.grad is not None))

    def ssl_loss(self, batch):
        decays = [g["weight_decay"] for g in self.trainer.optimizers[0].param_groups]
        self.seen.append((self.trainer.global_step, self.ramp, decays))
        return super().ssl_loss(batch)


class Snapshots(pl.Callback):
    """The projector's and backbone's first weights at the end of each epoch."""

    def __init__(self) -> None:
        self.projector: list[torch.Tensor] = []
        self.backbone: list[torch.Tensor] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.projector.append(next(pl_module.projector.parameters()).detach().clone())
        self.backbone.append(next(pl_module.backbone.parameters()).detach().clone())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.on_train_start(trainer, pl_module)


def test_clip_grad_per_parameter_is_dinos_clip_gradients():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in [(3, 4), (5,), (2, 2)]]
    for p, scale in zip(params, [10.0, 0.01, 3.0]):
        p.grad = torch.randn_like(p) * scale
    expected = []
    for p in params:  # DINO: clip_coef = clip / (norm + 1e-6), applied where it is < 1
        coef = 2.0 / (p.grad.norm(2) + 1e-6)
        expected.append(p.grad * coef if coef < 1 else p.grad.clone())
    clip_grad_per_parameter(params, 2.0)
    for p, want in zip(params, expected):
        torch.testing.assert_close(p.grad, want)


def test_frozen_module_schedules_weight_decay_and_clipping_in_a_real_run(cifar_mini: Path,
                                                                          tmp_path: Path):
    cfg = recipe("simclr", cifar_mini, ["++optimizer.weight_decay=0.04",
                                        "++optimizer.weight_decay_end=0.4"])
    model = ScheduledSimCLR(cfg, freeze_epochs=1, clip=0.05)
    snapshots = Snapshots()
    model, trainer = fit(cfg, max_epochs=2, batches=2, callbacks=[snapshots], model=model)

    # the projector is untouched in epoch 0, trained in epoch 1; the backbone trains throughout
    assert torch.equal(snapshots.projector[0], snapshots.projector[1])
    assert not torch.equal(snapshots.projector[1], snapshots.projector[2])
    assert not torch.equal(snapshots.backbone[0], snapshots.backbone[1])
    # every gradient the optimizer used had a norm of at most the clip
    assert len(model.largest_grads) == 4 and max(model.largest_grads) <= 0.05 * (1 + 1e-4)

    total = trainer.estimated_stepping_batches
    assert [s for s, _, _ in model.seen] == [0, 1, 2, 3]
    assert [r for _, r, _ in model.seen] == pytest.approx([linear_warmup(s, 3, 0, 1)
                                                           for s in range(4)])
    initial = [g["initial_weight_decay"] for g in trainer.optimizers[0].param_groups]
    assert sorted(set(initial)) == [0.0, 0.04]  # the probe has none, the rest the config's
    for step, _, decays in model.seen:
        ratio = cosine_schedule(step, total, 0.04, 0.4) / 0.04
        assert decays == pytest.approx([d * ratio for d in initial])


def test_a_resumed_run_continues_the_schedules(cifar_mini: Path, tmp_path: Path):
    cfg = recipe("simclr", cifar_mini, ["++optimizer.weight_decay=0.04",
                                        "++optimizer.weight_decay_end=0.4"])
    _, trainer = fit(cfg, max_epochs=1, batches=2, model=ScheduledSimCLR(cfg))
    trainer.save_checkpoint(tmp_path / "epoch1.ckpt")

    resumed, trainer = fit(cfg, max_epochs=2, batches=2, model=ScheduledSimCLR(cfg),
                           ckpt_path=str(tmp_path / "epoch1.ckpt"))
    assert [s for s, _, _ in resumed.seen] == [2, 3]
    assert [r for _, r, _ in resumed.seen] == pytest.approx([2 / 3, 1.0])
    total = trainer.estimated_stepping_batches
    for step, _, decays in resumed.seen:
        assert max(decays) == pytest.approx(cosine_schedule(step, total, 0.04, 0.4))


def test_weight_decay_end_without_weight_decay_is_an_error(cifar_mini: Path):
    with pytest.raises(ConfigError, match="weight_decay_end.*weight_decay > 0"):
        recipe("simclr", cifar_mini, ["++optimizer.weight_decay=0",
                                      "++optimizer.weight_decay_end=0.4"])


def test_train_dataset_size_counts_every_training_image(cifar_mini: Path):
    sizes = []

    class Size(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            sizes.append(pl_module.train_dataset_size)

    fit(recipe("simclr", cifar_mini), max_epochs=1, batches=1, callbacks=[Size()])
    assert sizes == [len(list((cifar_mini / "train").rglob("*.jpg")))]
