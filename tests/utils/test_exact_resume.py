"""A run resumed from a checkpoint written at the end of a training step (inside an epoch or at
its end) trains the same steps as the uninterrupted run: the same batches (no image repeated or
skipped), the same views, the same model-side random numbers, so on the CPU in float32 the same
losses and weights, exactly.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from solo.config import parse_config
from solo.data import build_pipeline
from solo.data.epochs import EpochSampler, training_position
from solo.methods import METHODS
from solo.pretrain import trainer_kwargs
from solo.utils.random_state import StepSeeds
from tests.helpers import CIFAR_CONFIGS, load_raw, small_cpu_overrides

BATCH = 8
STEPS_PER_EPOCH = 3  # data.fraction 0.015 of the 2000 images: 30, three batches of 8
EPOCHS = 2


class Record(pl.Callback):
    """Every step's loss, dataset indexes, (epoch, batch) and the data position a checkpoint
    written then records; with ``save_at``, such a checkpoint after that step's optimizer step
    (the run goes on: what it saves is what a run killed right after would have left)."""

    def __init__(self, save_at: int = 0, path: Path | None = None) -> None:
        self.save_at, self.path = save_at, path
        self.losses: list[torch.Tensor] = []
        self.indexes: list[list[int]] = []
        self.positions: list[tuple[int, int]] = []
        self.saved_positions: list[tuple[int, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].detach().clone())
        self.indexes.append(batch[0].tolist())
        self.positions.append((trainer.current_epoch, batch_idx))
        self.saved_positions.append(training_position(trainer))
        if self.save_at and trainer.global_step == self.save_at:
            trainer.save_checkpoint(self.path)


def config(cifar_mini: Path, pipeline: str, workers: int):
    overrides = small_cpu_overrides(cifar_mini, batch_size=BATCH) + [
        f"++data.pipeline={pipeline}", f"++data.num_workers={workers}", "++data.fraction=0.015",
        "++knn_eval.enabled=False", f"++max_epochs={EPOCHS}",
        # 16 px crops and narrow heads: the same code paths, a few times faster
        "++augmentations.0.crop_size=16", "++augmentations.1.crop_size=16",
        "++method_kwargs.proj_hidden_dim=64", "++method_kwargs.proj_output_dim=32",
        "++method_kwargs.pred_hidden_dim=64"]
    return parse_config(load_raw(CIFAR_CONFIGS, "byol.yaml", overrides))


def fit(cfg, record: Record, seed: int, ckpt_path: Path | None = None) -> pl.LightningModule:
    pl.seed_everything(seed, workers=True, verbose=False)  # as pretrain() does
    model = METHODS.get(cfg.method)(cfg)
    kwargs = {**trainer_kwargs(cfg), "logger": False, "enable_progress_bar": False,
              "enable_model_summary": False, "limit_val_batches": 0, "num_sanity_val_steps": 0}
    trainer = pl.Trainer(callbacks=[StepSeeds(cfg.seed), record], **kwargs)
    trainer.fit(model, datamodule=build_pipeline(cfg), ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize("pipeline,workers,stop_at", [
    ("cpu", 0, 3),  # after the last batch of the first epoch
    ("cpu", 2, 4),  # inside the second epoch, persistent worker processes
    ("gpu", 0, 5),  # the device pipeline (run on the CPU), two batches into the epoch
], ids=["cpu-epoch-end", "cpu-2-workers-mid-epoch", "gpu-mid-epoch"])
def test_resumed_run_equals_uninterrupted_run(cifar_mini: Path, tmp_path: Path, pipeline: str,
                                              workers: int, stop_at: int) -> None:
    cfg = config(cifar_mini, pipeline, workers)
    ckpt = tmp_path / "step.ckpt"
    whole = Record(save_at=stop_at, path=ckpt)
    uninterrupted = fit(cfg, whole, cfg.seed)
    steps = STEPS_PER_EPOCH * EPOCHS
    assert len(whole.losses) == steps
    assert whole.positions == [(e, b) for e in range(EPOCHS) for b in range(STEPS_PER_EPOCH)]
    # where a resume from each step's end continues: the next batch, the next epoch's first
    assert whole.saved_positions == [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]
    for epoch in range(EPOCHS):  # every image of an epoch's full batches once
        seen = sum(whole.indexes[epoch * STEPS_PER_EPOCH: (epoch + 1) * STEPS_PER_EPOCH], [])
        assert len(set(seen)) == len(seen) == STEPS_PER_EPOCH * BATCH
    assert whole.indexes[:STEPS_PER_EPOCH] != whole.indexes[STEPS_PER_EPOCH:]  # reshuffled
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain data only
    assert checkpoint["global_step"] == stop_at

    rest = Record()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # another seed before the resume: nothing after it may depend on the global generators
        resumed = fit(cfg, rest, cfg.seed + 1, ckpt_path=ckpt)
    assert not [w for w in caught if "not resumable" in str(w.message)]
    assert rest.positions == whole.positions[stop_at:]
    assert rest.indexes == whole.indexes[stop_at:]  # the remaining batches, none again or skipped
    assert len(rest.losses) == steps - stop_at
    for step, (loss, expected) in enumerate(zip(rest.losses, whole.losses[stop_at:]), stop_at + 1):
        assert torch.equal(loss, expected), f"step {step}: {loss.item()} != {expected.item()}"
    final, expected = resumed.state_dict(), uninterrupted.state_dict()
    assert final.keys() == expected.keys()
    assert [key for key in expected if not torch.equal(final[key], expected[key])] == []


def test_epoch_sampler_shards_and_starts_mid_epoch() -> None:
    data = list(range(103))
    cut = lambda r, start=lambda: None: EpochSampler(data, 4, 7, r, 3, lambda: 2, start)  # noqa: E731
    keys = [list(cut(rank)) for rank in range(3)]
    assert [len(k) for k in keys] == [len(cut(0))] * 3 == [32] * 3  # 34 per rank: 8 full batches
    indexes = [i for k in keys for i, _ in k]
    assert len(set(indexes)) == 96  # disjoint shards
    assert list(cut(1, lambda: (2, 3))) == keys[1][3 * 4:]  # from batch 3 of epoch 2
    assert list(cut(1, lambda: (3, 0))) != keys[1]  # another epoch, another order and seeds
    seeds = [seed for k in keys for _, seed in k]
    assert len(set(seeds)) == len(seeds)
    assert EpochSampler(data, 4, 7, 0, 3, lambda: 2).keys(2) == keys[0]  # recomputed, not replayed


def test_cpu_views_do_not_depend_on_worker_processes(cifar_mini: Path) -> None:
    """Each image's views come from its own seed: any number of workers makes the same batches;
    making them leaves the caller's torch generator as it was."""
    def epoch(workers: int) -> list:
        return list(build_pipeline(config(cifar_mini, "cpu", workers)).train_dataloader())

    alone, with_workers = epoch(0), epoch(2)
    dataset = build_pipeline(config(cifar_mini, "cpu", 0)).train_dataloader().dataset
    state = torch.get_rng_state()
    first, again = dataset[(3, 77)], dataset[(3, 77)]
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(first[1], again[1]))
    assert len(alone) == len(with_workers) == STEPS_PER_EPOCH
    for (i0, views0, t0), (i2, views2, t2) in zip(alone, with_workers):
        assert torch.equal(i0, i2) and torch.equal(t0, t2)
        assert all(torch.equal(a, b) for a, b in zip(views0, views2))
        assert not torch.equal(views0[0], views0[1])  # two views drawn apart
