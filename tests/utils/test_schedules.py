"""warmup_cosine at hand-computed points, and the schedulers build_scheduler hands to Lightning."""

import math

import pytest
import torch
from torch import nn

from solo.config import SchedulerConfig
from solo.utils.schedules import REDUCE_MONITOR, build_scheduler, warmup_cosine


def lr_at(step: float, warmup: float = 10, total: float = 110) -> float:
    return warmup_cosine(step, warmup, total, base_lr=1.0, warmup_start_lr=0.1, min_lr=0.2)


def test_warmup_is_linear_from_start_to_base():
    assert lr_at(0) == pytest.approx(0.1)
    assert lr_at(5) == pytest.approx(0.55)
    assert lr_at(10) == pytest.approx(1.0)


def test_cosine_midpoint_quarter_and_end():
    assert lr_at(60) == pytest.approx((1.0 + 0.2) / 2)
    assert lr_at(35) == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_at(110) == pytest.approx(0.2)
    assert lr_at(500) == pytest.approx(0.2)


def test_no_warmup_starts_at_base():
    assert lr_at(0, warmup=0, total=100) == pytest.approx(1.0)
    assert lr_at(50, warmup=0, total=100) == pytest.approx(0.6)


def test_warmup_as_long_as_training_never_divides_by_zero():
    assert lr_at(5, warmup=10, total=10) == pytest.approx(0.55)
    assert lr_at(10, warmup=10, total=10) == pytest.approx(0.2)


def sgd(*lrs: float) -> torch.optim.SGD:
    return torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs])


def lrs_over(optimizer: torch.optim.Optimizer, scheduler, steps: int) -> list[list[float]]:
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize("interval, per_epoch", [("step", 3), ("epoch", 1)])
def test_warmup_cosine_scheduler_follows_the_function_in_every_group(interval, per_epoch):
    cfg = SchedulerConfig(name="warmup_cosine", warmup_epochs=2, warmup_start_lr=0.01,
                          min_lr=0.05, interval=interval)
    optimizer = sgd(0.5, 5.0)
    config = build_scheduler(cfg, optimizer, steps_per_epoch=3, max_epochs=6)
    assert config["interval"] == interval and config["frequency"] == 1
    total = 6 * per_epoch
    seen = lrs_over(optimizer, config["scheduler"], total + 2)
    for step, (lr, probe_lr) in enumerate(seen):
        expected = warmup_cosine(step, 2 * per_epoch, total, 0.5, 0.01, 0.05)
        assert lr == pytest.approx(expected), step
        assert probe_lr == pytest.approx(10 * expected), step
    assert seen[0][0] == pytest.approx(0.01) and seen[2 * per_epoch][0] == pytest.approx(0.5)


def test_step_scheduler_decays_at_milestones_per_epoch():
    cfg = SchedulerConfig(name="step", lr_decay_steps=[2, 4], gamma=0.1, interval="step")
    optimizer = sgd(1.0)
    config = build_scheduler(cfg, optimizer, steps_per_epoch=100, max_epochs=6)
    assert config["interval"] == "epoch"
    seen = [lrs[0] for lrs in lrs_over(optimizer, config["scheduler"], 6)]
    assert seen == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_exponential_scheduler_multiplies_by_gamma_each_epoch():
    optimizer = sgd(1.0)
    config = build_scheduler(SchedulerConfig(name="exponential", gamma=0.5), optimizer, 10, 4)
    assert config["interval"] == "epoch"
    seen = [lrs[0] for lrs in lrs_over(optimizer, config["scheduler"], 4)]
    assert seen == pytest.approx([1.0, 0.5, 0.25, 0.125])


def test_reduce_scheduler_monitors_train_loss_and_cuts_lr_after_patience():
    optimizer = sgd(1.0)
    config = build_scheduler(SchedulerConfig(name="reduce"), optimizer, 10, 20)
    assert config["monitor"] == REDUCE_MONITOR == "train_loss"
    assert config["interval"] == "epoch"
    for _ in range(11):  # the first sets the best loss, then 10 epochs without improvement
        config["scheduler"].step(1.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0)
    config["scheduler"].step(1.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_none_builds_nothing():
    assert build_scheduler(SchedulerConfig(name="none"), sgd(1.0), 10, 5) is None


def fit_tiny(scheduler: str) -> tuple[list[float], object]:
    """Train a one-layer model for 2 epochs of 4 steps; return the lr seen at each step."""
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 1)
            self.seen: list[float] = []

        def training_step(self, batch, batch_idx):
            self.seen.append(self.optimizers().param_groups[0]["lr"])
            loss = self.layer(batch[0]).pow(2).mean()
            self.log(REDUCE_MONITOR, loss, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.4)
            cfg = SchedulerConfig(name=scheduler, warmup_epochs=1, warmup_start_lr=0.0,
                                  min_lr=0.0)
            self.config = build_scheduler(cfg, optimizer, steps_per_epoch=4, max_epochs=2)
            return {"optimizer": optimizer, "lr_scheduler": self.config}

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 2))
    model = Tiny()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=2))
    return model.seen, model.config["scheduler"]


def test_lightning_steps_the_warmup_cosine_scheduler_every_optimizer_step():
    seen, _ = fit_tiny("warmup_cosine")
    assert seen == pytest.approx([warmup_cosine(s, 4, 8, 0.4, 0.0, 0.0) for s in range(8)])


def test_lightning_feeds_the_logged_train_loss_to_reduce():
    seen, scheduler = fit_tiny("reduce")
    assert seen == pytest.approx([0.4] * 8)  # patience 10 is not exhausted in 2 epochs
    assert math.isfinite(scheduler.best)  # starts at inf; only a stepped scheduler has a best
