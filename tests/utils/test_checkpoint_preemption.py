"""Checkpoints inside epochs (every_n_steps, every_n_minutes), SIGTERM / SIGUSR1 saving the current
step, a failed write keeping the previous file, args.json kept on resume, folder fsyncs."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from solo.config import ConfigError
from solo.utils import checkpoint as checkpoint_module
from solo.utils.checkpoint import (Checkpointer, CheckpointWriteError, fsync_dir, write_atomic,
                                   write_json_atomic)
from solo.utils.preemption import TrainingInterrupted, requeue_slurm_job
from solo.utils.resume import epoch_of, find_resume_point, position_of
from tests.helpers import shipped_config

BATCHES = 4  # per epoch


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(BATCHES * 2, 4)), batch_size=2)


class SendAtStep(pl.Callback):
    """Sends ``signum`` to this process at the end of training step ``step``."""

    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def fit(run_dir: Path, epochs: int = 2, callbacks=(), **checkpointer) -> Checkpointer:
    checkpointer.setdefault("handle_signals", True)  # as pretraining's
    saver = Checkpointer(run_dir, "tiny", "run0", {"cfg": {"name": "tiny"}}, **checkpointer)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[*callbacks, saver])
    trainer.fit(Tiny())
    return saver


def steps(run_dir: Path) -> dict[str, int]:
    return {p.name: torch.load(p, weights_only=False)["global_step"]
            for p in sorted(run_dir.glob("*.ckpt"))}


def test_every_n_steps_names_step_checkpoints_and_skips_the_epoch_ends_duplicate(
        tmp_path: Path) -> None:
    fit(tmp_path, every_n_steps=3, keep_prev=True)
    # step 3 and 6 inside the epochs; step 4 and 8 are the epochs' ends, saved once, by epoch
    assert steps(tmp_path) == {"tiny-run0-ep=0-step=3.ckpt": 3, "tiny-run0-ep=0.ckpt": 4,
                               "tiny-run0-ep=1-step=6.ckpt": 6, "tiny-run0-ep=1.ckpt": 8}
    assert not list(tmp_path.glob("*.tmp"))


def test_without_keep_prev_only_the_newest_remains(tmp_path: Path) -> None:
    saver = fit(tmp_path, epochs=1, every_n_steps=1, frequency=5)
    # frequency 5 > 1 epoch: the last epoch still saves at its end, replacing step 3's file
    assert steps(tmp_path) == {"tiny-run0-ep=0.ckpt": 4}
    assert saver.last_path == tmp_path / "tiny-run0-ep=0.ckpt"


def test_every_n_minutes_saves_when_the_interval_has_passed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 10_000, 40))  # each look at the clock: 40 s later
    monkeypatch.setattr(checkpoint_module.time, "monotonic", lambda: next(clock))
    fit(tmp_path, epochs=1, every_n_minutes=1.0, keep_prev=True)
    # on_train_start reads 0; steps 1, 2, 3 read 40, 80 (due: saved, reset to 120), 160
    assert steps(tmp_path) == {"tiny-run0-ep=0-step=2.ckpt": 2, "tiny-run0-ep=0.ckpt": 4}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_saves_the_current_step_then_stops_and_restores_handlers(
        signum: int, tmp_path: Path) -> None:
    seen = []

    def own(signum: int, frame) -> None:  # the program's own handler, there before the run
        seen.append(signum)

    before = signal.signal(signum, own)
    try:
        with pytest.raises(TrainingInterrupted) as stop:
            fit(tmp_path, callbacks=[SendAtStep(signum, 6)], every_n_steps=5)
        assert signal.getsignal(signum) is own  # put back after the run
    finally:
        signal.signal(signum, before)
    assert stop.value.signal_name == signal.Signals(signum).name
    assert stop.value.step == 6 and stop.value.epoch == 1 and not stop.value.requeued
    # step 5's checkpoint replaced by the signal's; the second epoch never ended
    assert steps(tmp_path) == {"tiny-run0-ep=1-step=6.ckpt": 6}
    assert stop.value.checkpoint == tmp_path / "tiny-run0-ep=1-step=6.ckpt"
    assert seen == [signum]  # chained: the program's handler ran too
    assert position_of(stop.value.checkpoint) == (1, 0, 6)  # what auto-resume sorts by


def test_signal_after_a_scheduled_save_at_that_step_saves_once(tmp_path: Path) -> None:
    with pytest.raises(TrainingInterrupted) as stop:
        fit(tmp_path, callbacks=[SendAtStep(signal.SIGTERM, 2)], every_n_steps=2, keep_prev=True)
    assert steps(tmp_path) == {"tiny-run0-ep=0-step=2.ckpt": 2}
    assert stop.value.checkpoint.name == "tiny-run0-ep=0-step=2.ckpt"


def test_signal_at_an_epochs_last_step_saves_and_stops_at_the_epochs_end(tmp_path: Path) -> None:
    # a checkpoint of the last step would resume without the epoch's end and the next one's start
    with pytest.raises(TrainingInterrupted) as stop:
        fit(tmp_path, epochs=3, callbacks=[SendAtStep(signal.SIGTERM, BATCHES)], frequency=2,
            every_n_steps=BATCHES)
    assert steps(tmp_path) == {"tiny-run0-ep=0.ckpt": BATCHES}  # not due by frequency: forced
    assert stop.value.checkpoint == tmp_path / "tiny-run0-ep=0.ckpt" and stop.value.epoch == 0


def test_requeue_signal_requeues_after_the_checkpoint_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order = []
    monkeypatch.setattr(checkpoint_module, "requeue_signal", lambda trainer: signal.SIGUSR1)
    monkeypatch.setattr(checkpoint_module, "requeue_slurm_job",
                        lambda: order.append(sorted(p.name for p in tmp_path.glob("*"))) or True)
    with pytest.raises(TrainingInterrupted) as stop:
        fit(tmp_path, callbacks=[SendAtStep(signal.SIGUSR1, 1)])
    assert order == [["args.json", "tiny-run0-ep=0-step=1.ckpt"]] and stop.value.requeued


def test_requeue_slurm_job_calls_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "scontrol"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "called"}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    assert requeue_slurm_job()
    assert (tmp_path / "called").read_text().split() == ["requeue", "4242"]
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert requeue_slurm_job()
    assert (tmp_path / "called").read_text().split() == ["requeue", "77_3"]


def test_disk_full_keeps_the_previous_checkpoint_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    write = TorchCheckpointIO.save_checkpoint

    def fill_disk(self, checkpoint, path, storage_options=None):
        if checkpoint["global_step"] < 4:
            return write(self, checkpoint, path, storage_options)
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", fill_disk)
    previous = tmp_path / "tiny-run0-ep=0-step=2.ckpt"
    kept = {}

    class Snapshot(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if trainer.global_step == 3:
                kept["bytes"] = previous.read_bytes()

    with pytest.raises(CheckpointWriteError) as failure:
        fit(tmp_path, callbacks=[Snapshot()], every_n_steps=2)
    message = str(failure.value)
    assert failure.value.errno == errno.ENOSPC
    assert f"could not write checkpoint {tmp_path / 'tiny-run0-ep=0.ckpt'}" in message
    assert "No space left on device" in message
    assert f"the previous checkpoint {previous} is intact" in message
    assert previous.read_bytes() == kept["bytes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["args.json", previous.name]


def test_args_json_is_written_once_per_run_folder(tmp_path: Path) -> None:
    fit(tmp_path, epochs=1)
    first = (tmp_path / "args.json").read_bytes()
    saver = Checkpointer(tmp_path, "tiny", "run0", {"cfg": {"name": "tiny", "max_epochs": 9}},
                         resumed_from=tmp_path / "tiny-run0-ep=0.ckpt")
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, callbacks=[saver],
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(Tiny(), ckpt_path=tmp_path / "tiny-run0-ep=0.ckpt")
    assert (tmp_path / "args.json").read_bytes() == first
    assert json.loads(first)["cfg"] == {"name": "tiny"}
    assert steps(tmp_path) == {"tiny-run0-ep=1.ckpt": 8}


def test_write_atomic_syncs_the_folder_and_cleans_up_a_failed_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = []
    monkeypatch.setattr(checkpoint_module, "fsync_dir", lambda folder: synced.append(folder))
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert synced == [tmp_path]

    def fail(handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(tmp_path / "a.json", fail)
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_fsync_dir_is_quiet_where_a_folder_cannot_be_opened(tmp_path: Path) -> None:
    fsync_dir(tmp_path)  # works on Linux
    fsync_dir(tmp_path / "missing")  # as os.open of a folder fails on Windows: nothing raised


def test_checkpointer_save_syncs_the_run_folder(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    synced = []
    monkeypatch.setattr(checkpoint_module, "fsync_dir", lambda folder: synced.append(folder))
    fit(tmp_path, epochs=1)
    assert synced.count(tmp_path) == 2  # args.json, then the checkpoint


@pytest.mark.parametrize("override, expected", [
    ("++checkpoint.every_n_steps=0", "checkpoint.every_n_steps: must be >= 1 or null, got 0"),
    ("++checkpoint.every_n_minutes=0", "checkpoint.every_n_minutes: must be > 0 or null, got 0"),
    ("++checkpoint.every_n_minutes=-1.5", "checkpoint.every_n_minutes: must be > 0 or null"),
])
def test_bad_intervals_name_the_key(override: str, expected: str, cifar_mini: Path) -> None:
    with pytest.raises(ConfigError, match="") as error:
        shipped_config("byol", cifar_mini, [override])
    assert expected in str(error.value)


def test_intervals_parse_and_may_change_on_resume(cifar_mini: Path, tmp_path: Path) -> None:
    cfg = shipped_config("byol", cifar_mini, ["++checkpoint.every_n_steps=100",
                                              "++checkpoint.every_n_minutes=30"])
    assert cfg.checkpoint.every_n_steps == 100 and cfg.checkpoint.every_n_minutes == 30
    saved = json.loads(json.dumps(shipped_config("byol", cifar_mini).to_dict(), default=str))
    run_dir = tmp_path / "byol" / "abc"
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / "args.json", {"run_id": "abc", "cfg": saved})
    (run_dir / f"{saved['name']}-abc-ep=0-step=7.ckpt").write_bytes(b"x")
    current = json.loads(json.dumps(cfg.to_dict(), default=str))
    point = find_resume_point(tmp_path, "byol", current, max_hours=1)
    assert point is not None and point.checkpoint.name.endswith("-ep=0-step=7.ckpt")


def test_resume_takes_the_newest_of_step_and_epoch_checkpoints(tmp_path: Path) -> None:
    run_dir = tmp_path / "m" / "r1"
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / "args.json", {"run_id": "r1", "cfg": {"name": "n"}})
    stamp = time.time()
    names = ["n-r1-ep=0-step=3.ckpt", "n-r1-ep=0.ckpt", "n-r1-ep=1-step=6.ckpt",
             "n-r1-ep=1-step=10.ckpt"]
    for name in names:
        (run_dir / name).write_bytes(b"x")
        os.utime(run_dir / name, (stamp, stamp))  # the same mtime: the names decide
    point = find_resume_point(tmp_path, "m", {"name": "n"}, max_hours=1, defaults={})
    assert point is not None and point.checkpoint.name == "n-r1-ep=1-step=10.ckpt"
    assert sorted(names, key=lambda n: position_of(Path(n))) == [
        "n-r1-ep=0-step=3.ckpt", "n-r1-ep=0.ckpt", "n-r1-ep=1-step=6.ckpt",
        "n-r1-ep=1-step=10.ckpt"]
    assert [epoch_of(Path(n)) for n in names] == [0, 0, 1, 1]
    assert epoch_of(Path("other.ckpt")) == -1 and position_of(Path("other.ckpt")) == (-1, 0, 0)
