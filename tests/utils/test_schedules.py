"""warmup_cosine against solo-learn's recursive schedule written out in the test, hand-computed
points, and the schedulers build_scheduler hands to Lightning."""

import math

import pytest
import torch
from torch import nn

from solo.config import SchedulerConfig
from solo.utils.schedules import REDUCE_MONITOR, build_scheduler, warmup_cosine


def recursive_warmup_cosine(steps: int, warmup: float, total: float, base_lrs: list[float],
                            warmup_start_lr: float, min_lr: float) -> list[list[float]]:
    """solo-learn's LinearWarmupCosineAnnealingLR as it runs: each step's lr from the previous
    one, per group. Step 0: warmup_start_lr; below W: + (base - start) / (W - 1); at W: base;
    after W: lr = (lr - min) * (1 + cos(pi (e - W) / (T - W))) / (1 + cos(pi (e - 1 - W) / (T - W)))
    + min."""
    history = []
    lrs = [warmup_start_lr] * len(base_lrs)
    for e in range(steps):
        if e == 0:
            lrs = [warmup_start_lr] * len(base_lrs)
        elif e < warmup:
            lrs = [lr + (base - warmup_start_lr) / (warmup - 1) for lr, base in zip(lrs, base_lrs)]
        elif e == warmup:
            lrs = list(base_lrs)
        else:
            ratio = ((1 + math.cos(math.pi * (e - warmup) / (total - warmup)))
                     / (1 + math.cos(math.pi * (e - warmup - 1) / (total - warmup))))
            lrs = [(lr - min_lr) * ratio + min_lr for lr in lrs]
        history.append(list(lrs))
    return history


@pytest.mark.parametrize("warmup, total", [(10, 110), (3, 40), (1, 20), (2.5, 30), (195.31, 19531),
                                           (0.4, 12), (7, 7.5)])
def test_equals_solo_learns_recursive_schedule_step_for_step(warmup, total):
    base_lrs, start, end = [1.0, 0.1, 0.004], 3e-5, 1e-3
    steps = int(math.ceil(total))  # every optimizer step of the run
    reference = recursive_warmup_cosine(steps, warmup, total, base_lrs, start, end)
    for step in range(steps):
        ours = [warmup_cosine(step, warmup, total, base, start, end) for base in base_lrs]
        assert ours == pytest.approx(reference[step], rel=1e-9, abs=1e-12), step


def lr_at(step: int, warmup: float = 10, total: float = 110) -> float:
    return warmup_cosine(step, warmup, total, base_lr=1.0, warmup_start_lr=0.1, min_lr=0.2)


def test_warmup_rises_linearly_to_the_base_at_step_w_minus_1():
    assert lr_at(0) == pytest.approx(0.1)
    assert lr_at(3) == pytest.approx(0.1 + 3 * 0.9 / 9)
    assert lr_at(9) == pytest.approx(1.0)  # W - 1
    assert lr_at(10) == pytest.approx(1.0)  # W: still the base, the cosine starts here


def test_cosine_midpoint_quarter_and_end():
    assert lr_at(60) == pytest.approx((1.0 + 0.2) / 2)
    assert lr_at(35) == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_at(109) == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi * 99 / 100)) / 2)
    assert lr_at(110) == pytest.approx(0.2)
    assert lr_at(500) == pytest.approx(0.2)


def test_no_warmup_starts_at_base():
    assert lr_at(0, warmup=0, total=100) == pytest.approx(1.0)
    assert lr_at(50, warmup=0, total=100) == pytest.approx(0.6)


def test_warmup_as_long_as_training_never_divides_by_zero():
    assert lr_at(5, warmup=10, total=10) == pytest.approx(0.1 + 5 * 0.9 / 9)
    assert lr_at(10, warmup=10, total=10) == pytest.approx(1.0)


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
def test_warmup_cosine_scheduler_gives_every_group_the_absolute_start_and_end(interval, per_epoch):
    cfg = SchedulerConfig(name="warmup_cosine", warmup_epochs=2, warmup_start_lr=0.01,
                          min_lr=0.05, interval=interval)
    optimizer = sgd(0.5, 5.0, 0.2)
    optimizer.param_groups[2]["fixed_lr"] = True  # e.g. SimSiam's predictor: no schedule
    config = build_scheduler(cfg, optimizer, total_steps=18, max_epochs=6, lr_multiplier=4)
    assert config["interval"] == interval and config["frequency"] == 1
    total = 6 * per_epoch
    seen = lrs_over(optimizer, config["scheduler"], total + 2)
    # the absolute values are scaled by the accumulation factor; the bases are the groups' own
    reference = recursive_warmup_cosine(total + 1, 2 * per_epoch, total, [0.5, 5.0], 0.04, 0.2)
    for step, (lr, probe_lr, fixed_lr) in enumerate(seen):
        expected = reference[min(step, total)]
        assert [lr, probe_lr] == pytest.approx(expected), step
        assert fixed_lr == 0.2, step
    assert seen[0][:2] == pytest.approx([0.04, 0.04])  # both groups start at warmup_start_lr
    assert seen[2 * per_epoch][:2] == pytest.approx([0.5, 5.0])
    assert seen[total][:2] == pytest.approx([0.2, 0.2])  # and end at min_lr


def test_warmup_steps_are_warmup_epochs_times_the_steps_per_epoch_unrounded():
    # 10 warmup epochs of 1000 with 19531 steps: W = 195.31, so steps 0..195 warm up
    cfg = SchedulerConfig(name="warmup_cosine", warmup_epochs=10, warmup_start_lr=0.0, min_lr=0.0)
    optimizer = sgd(1.0)
    scheduler = build_scheduler(cfg, optimizer, total_steps=19531, max_epochs=1000)["scheduler"]
    assert scheduler.warmup_steps == pytest.approx(195.31) and scheduler.total_steps == 19531
    assert scheduler.get_last_lr()[0] == 0.0
    for _ in range(195):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(195 / 194.31)  # the last warmup step


def test_step_scheduler_decays_at_milestones_per_epoch():
    cfg = SchedulerConfig(name="step", lr_decay_steps=[2, 4], gamma=0.1, interval="step")
    optimizer = sgd(1.0)
    config = build_scheduler(cfg, optimizer, total_steps=600, max_epochs=6)
    assert config["interval"] == "epoch"
    seen = [lrs[0] for lrs in lrs_over(optimizer, config["scheduler"], 6)]
    assert seen == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_exponential_scheduler_multiplies_by_gamma_each_epoch():
    optimizer = sgd(1.0)
    config = build_scheduler(SchedulerConfig(name="exponential", gamma=0.5), optimizer, 40, 4)
    assert config["interval"] == "epoch"
    seen = [lrs[0] for lrs in lrs_over(optimizer, config["scheduler"], 4)]
    assert seen == pytest.approx([1.0, 0.5, 0.25, 0.125])


def test_reduce_scheduler_monitors_train_loss_and_cuts_lr_after_patience():
    optimizer = sgd(1.0)
    config = build_scheduler(SchedulerConfig(name="reduce"), optimizer, 200, 20)
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
            self.config = build_scheduler(cfg, optimizer, total_steps=8, max_epochs=2)
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


# ----------------------------------------------------------------------------------------------
# schedules of other hyperparameters
# ----------------------------------------------------------------------------------------------
def test_cosine_schedule_is_dinos_cosine_scheduler_step_for_step():
    # DINO's cosine_scheduler(base, final, epochs, niter_per_ep): the value at iteration i of
    # N = epochs * niter_per_ep is final + (base - final) * (1 + cos(pi i / N)) / 2
    from solo.utils.schedules import cosine_schedule

    start, end, total = 0.04, 0.4, 37
    for i in range(total):
        expected = end + 0.5 * (start - end) * (1 + math.cos(math.pi * i / total))
        assert cosine_schedule(i, total, start, end) == pytest.approx(expected, abs=1e-12)
    assert cosine_schedule(total + 5, total, start, end) == end


def test_linear_warmup_is_a_linspace_then_constant():
    from solo.utils.schedules import linear_warmup

    assert [linear_warmup(e, 4, 0.04, 0.08) for e in range(7)] == pytest.approx(
        [0.04, 0.05, 0.06, 0.07, 0.08, 0.08, 0.08])
    assert linear_warmup(0, 0, 0.04, 0.07) == 0.07
