"""Optimizers and schedulers, each through a real (short) training run of a method."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from solo.data import build_pipeline
from solo.methods import METHODS
from solo.pretrain import trainer_kwargs
from solo.utils.optim import GroupOptions
from tests.helpers import shipped_config


def train(cfg, epochs: int = 2, model: pl.LightningModule | None = None
          ) -> tuple[pl.LightningModule, pl.Trainer, list[float]]:
    pl.seed_everything(0, verbose=False)
    model = model or METHODS.get(cfg.method)(cfg)
    lrs: list[float] = []

    class RecordLR(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = pl.Trainer(**{**trainer_kwargs(cfg), "max_epochs": epochs, "limit_train_batches": 1,
                            "limit_val_batches": 0, "logger": False, "enable_progress_bar": False,
                            "enable_model_summary": False}, callbacks=[RecordLR()])
    trainer.fit(model, datamodule=build_pipeline(cfg))
    return model, trainer, lrs


@pytest.mark.parametrize("scheduler, expected_lrs", [
    # lr 0.4 x 16 / 256 = 0.025; one step per epoch
    (["++scheduler.name=step", "++scheduler.lr_decay_steps=[1]", "++scheduler.gamma=0.5"],
     [0.025, 0.0125]),
    (["++scheduler.name=exponential", "++scheduler.gamma=0.5"], [0.025, 0.0125]),
    (["++scheduler.name=none"], [0.025, 0.025]),
    (["++scheduler.name=reduce"], [0.025, 0.025]),  # needs the logged train_loss to exist
    (["++scheduler.name=warmup_cosine", "++scheduler.warmup_epochs=1",
      "++scheduler.warmup_start_lr=0.0", "++scheduler.interval=epoch"], [0.0, 0.025]),
])
def test_every_scheduler_drives_a_real_run(scheduler: list[str], expected_lrs: list[float],
                                           cifar_mini: Path) -> None:
    cfg = shipped_config("simclr", cifar_mini, scheduler + ["++knn_eval.enabled=False"])
    _, trainer, lrs = train(cfg)
    assert trainer.global_step == 2
    assert lrs == pytest.approx(expected_lrs)


@pytest.mark.parametrize("name, kwargs", [("sgd", {"momentum": 0.9}), ("adam", {}),
                                          ("adamw", {"betas": [0.9, 0.95]}),
                                          ("lars", {"eta": 0.02, "clip_lr": True})])
def test_every_optimizer_trains(name: str, kwargs: dict, cifar_mini: Path) -> None:
    cfg = shipped_config("simclr", cifar_mini, [f"++optimizer.name={name}", "~optimizer.kwargs",
                                                "++optimizer.exclude_bias_n_norm_wd=True"])
    cfg.optimizer.kwargs = kwargs
    model, trainer, _ = train(cfg, epochs=1)
    optimizer = trainer.optimizers[0]
    assert type(optimizer).__name__.lower() == name
    groups = {g["name"]: g for g in optimizer.param_groups}
    # the probe has its own lr and no weight decay; biases and norms no weight decay either
    assert groups["classifier"]["initial_lr"] == pytest.approx(0.1 * 16 / 256)  # before the schedule
    assert groups["classifier"]["weight_decay"] == 0 and groups["backbone_no_wd"]["weight_decay"] == 0
    assert groups["backbone"]["weight_decay"] == pytest.approx(1e-4)


def test_momentum_classifier_trains_its_own_probe(cifar_mini: Path) -> None:
    cfg = shipped_config("byol", cifar_mini, ["++momentum.classifier=True"])
    pl.seed_everything(0, verbose=False)
    model = METHODS.get("byol")(cfg)
    before = model.momentum_classifier.weight.detach().clone()
    model, trainer, _ = train(cfg, epochs=1, model=model)
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    assert groups["classifier_momentum"]["initial_lr"] == pytest.approx(0.1 * 16 / 256)
    assert groups["classifier_momentum"]["weight_decay"] == 0
    assert not torch.equal(model.momentum_classifier.weight, before)  # it learned
    assert "train_momentum_acc1_epoch" in trainer.callback_metrics


def test_a_compiled_backbone_trains_like_the_eager_one(cifar_mini: Path) -> None:
    # aot_eager traces forward and backward as inductor does, without its C++ compile step
    common = ["++knn_eval.enabled=False", "++optimizer.batch_size=8"]
    eager, _, _ = train(shipped_config("byol", cifar_mini, common), epochs=1)
    compiled, trainer, _ = train(shipped_config("byol", cifar_mini, common + [
        "++performance.compile=True", "++performance.compile_backend=aot_eager"]), epochs=1)
    assert trainer.global_step == 1
    assert compiled.backbone._compiled_call_impl is not None
    assert compiled.momentum_backbone._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no "_orig_mod." prefixes
    for name, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[name], value, atol=1e-4, rtol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_gradient_accumulation_scales_every_lr_of_the_schedule(cifar_mini: Path) -> None:
    """solo-learn's rule: under accumulate_grad_batches=A, lr, classifier_lr, warmup_start_lr and
    min_lr are all multiplied by A; the schedule runs over the optimizer steps."""
    from tests.utils.test_schedules import recursive_warmup_cosine

    accumulate, epochs = 2, 3
    cfg = shipped_config("simclr", cifar_mini, [
        "++knn_eval.enabled=False", f"++accumulate_grad_batches={accumulate}",
        "++scheduler.warmup_epochs=1", "++scheduler.warmup_start_lr=0.001",
        "++scheduler.min_lr=0.002"])
    pl.seed_everything(0, verbose=False)
    model = METHODS.get(cfg.method)(cfg)
    seen: list[list[float]] = []

    class RecordLRs(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            groups = {g["name"]: g["lr"] for g in optimizer.param_groups}
            seen.append([groups["backbone"], groups["classifier"]])

    trainer = pl.Trainer(**{**trainer_kwargs(cfg), "max_epochs": epochs, "limit_train_batches": 4,
                            "limit_val_batches": 0, "logger": False, "enable_progress_bar": False,
                            "enable_model_summary": False}, callbacks=[RecordLRs()])
    trainer.fit(model, datamodule=build_pipeline(cfg))
    steps = epochs * 4 // accumulate  # 2 optimizer steps per epoch
    assert trainer.global_step == steps == len(seen)
    scale = 16 / 256 * accumulate  # batch 16, one device
    reference = recursive_warmup_cosine(steps, 1 * steps / epochs, steps,
                                        [0.4 * scale, 0.1 * scale], 0.001 * accumulate,
                                        0.002 * accumulate)
    assert seen == [pytest.approx(lrs) for lrs in reference]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_a_compiled_step_on_the_gpu_equals_the_eager_one(cifar_mini: Path, mode: str) -> None:
    """inductor (and CUDA graphs with reduce-overhead) on the GPU: the weights after a step equal
    eager ones to float32 kernel noise, and validation with the kNN (whose features outlive a
    graph replay) runs."""
    common = ["++accelerator=gpu", "++data.pipeline=gpu", "++optimizer.batch_size=32",
              "++precision=32", "++performance.tf32=False", "++knn_eval.enabled=True"]
    eager, _, _ = train(shipped_config("byol", cifar_mini, common), epochs=1)
    compiled, trainer, _ = train(shipped_config("byol", cifar_mini, common + [
        "++performance.compile=True", f"++performance.compile_mode={mode}"]), epochs=1)
    assert trainer.global_step == 1
    for name, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[name].cpu(), value.cpu(), atol=1e-3,
                                   rtol=1e-3, msg=lambda m, name=name: f"{name}: {m}")
    validator = pl.Trainer(**{**trainer_kwargs(compiled.cfg), "limit_val_batches": 2,
                              "logger": False, "enable_progress_bar": False})
    results = validator.validate(compiled, datamodule=build_pipeline(compiled.cfg), verbose=False)
    assert 0 <= results[0]["knn_acc1"] <= 1


@pytest.mark.parametrize("every", [0, 1])
def test_log_every_n_steps_zero_logs_no_steps_and_runs(cifar_mini: Path, every: int) -> None:
    """Lightning's meaning of 0: no step logging (our lr/tau logging divided by it once)."""
    cfg = shipped_config("byol", cifar_mini, [f"++log_every_n_steps={every}",
                                              "++knn_eval.enabled=False"])
    pl.seed_everything(0, verbose=False)
    model = METHODS.get(cfg.method)(cfg)
    logged: list[set[str]] = []

    class Keys(pl.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            logged.append(set(trainer.logged_metrics))

    trainer = pl.Trainer(**{**trainer_kwargs(cfg), "max_epochs": 1, "limit_train_batches": 2,
                            "limit_val_batches": 0, "logger": False, "enable_progress_bar": False,
                            "enable_model_summary": False}, callbacks=[Keys()])
    trainer.fit(model, datamodule=build_pipeline(cfg))
    assert trainer.global_step == 2
    step_keys = set().union(*logged)
    assert ("tau" in step_keys) == (every == 1) and ("lr" in step_keys) == (every == 1)


class SimCLRWithFixedProjector(METHODS.get("simclr")):
    """A method that declares group options: its projector at a fixed lr, no weight decay, out
    of LARS (as SimSiam's predictor and All4One's transformer are)."""

    def param_group_options(self):
        return {**super().param_group_options(),
                "projector": GroupOptions(fixed_lr=True, weight_decay=0.0, lars_adaptation=False)}


def test_declared_group_options_survive_the_schedule(cifar_mini: Path) -> None:
    cfg = shipped_config("simclr", cifar_mini, ["++scheduler.warmup_epochs=1",
                                                "++scheduler.warmup_start_lr=0.0"])
    pl.seed_everything(0, verbose=False)
    model, trainer, lrs = train(cfg, epochs=2, model=SimCLRWithFixedProjector(cfg))
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    scaled = 0.4 * 16 / 256  # the recipe's lr at batch 16
    assert lrs[0] == 0.0 and lrs[1] > 0  # the backbone warmed up from 0 ...
    assert groups["projector"]["lr"] == pytest.approx(scaled)  # ... the projector did not move
    assert groups["projector"]["weight_decay"] == 0 and not groups["projector"]["lars_adaptation"]
    assert groups["classifier"]["weight_decay"] == 0
