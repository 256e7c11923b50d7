"""Checkpoints written atomically: a kill at any moment leaves the previous file intact.

Layout: ``<checkpoint.dir>/<method>/<run id>/<name>-<run id>-ep=<epoch>.ckpt`` at epoch ends,
``<name>-<run id>-ep=<epoch>-step=<global step>.ckpt`` inside an epoch (``every_n_steps``,
``every_n_minutes``, or a SIGTERM / SIGUSR1), and ``args.json`` (the resolved config and the run
id of the run that made the folder; a resumed run leaves it as it is) beside them.
"""

from __future__ import annotations

import errno as errno_codes
import json
import os
import secrets
import signal
import string
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from solo.utils.preemption import (SIGNALS, SignalCatcher, TrainingInterrupted, agree,
                                   requeue_signal, requeue_slurm_job)

RUN_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_run_id(length: int = 8) -> str:
    return "".join(secrets.choice(RUN_ID_ALPHABET) for _ in range(length))


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, I/O error); the previous one is kept."""


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; silently nothing where a folder
    cannot be opened or synced (Windows, some network file systems)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """``write(handle)`` into a temporary file beside ``path``, flushed to disk, then renamed over
    ``path`` and the folder synced: a crash or a kill leaves the old file or the new one, never
    half of one. A failed write removes the temporary file and leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically."""
    write_atomic(path, lambda handle: handle.write(json.dumps(data, indent=2, default=str).encode()))


def checkpoint_path(run_dir: Path, name: str, run_id: str, epoch: int) -> Path:
    return run_dir / f"{name}-{run_id}-ep={epoch}.ckpt"


def step_checkpoint_path(run_dir: Path, name: str, run_id: str, epoch: int, step: int) -> Path:
    """A checkpoint inside an epoch, after ``step`` optimizer steps in all."""
    return run_dir / f"{name}-{run_id}-ep={epoch}-step={step}.ckpt"


def write_error(path: Path, error: OSError, previous: Optional[Path]) -> CheckpointWriteError:
    """One message for a failed save: what, why, and what is still there."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    kept = (f"the previous checkpoint {previous} is intact" if previous is not None
            and previous.exists() else "no earlier checkpoint of this run exists")
    hint = " (free some space or set checkpoint.dir elsewhere)" \
        if error.errno in (errno_codes.ENOSPC, getattr(errno_codes, "EDQUOT", -1)) else ""
    failure = CheckpointWriteError(f"could not write checkpoint {path}: {reason}{hint}; {kept}")
    failure.errno = error.errno
    return failure


class Checkpointer(Callback):
    """Saves every ``frequency`` epochs (and after the last), every ``every_n_steps`` optimizer
    steps and every ``every_n_minutes`` inside epochs, with temp file + rename; the previous file
    is removed once the new one is in place (all are kept with ``keep_prev``).

    With ``handle_signals``, SIGTERM and SIGUSR1 (and Lightning's SLURM requeue signal) received
    during training make every rank save the current step at the next batch end; the job is then
    requeued (SLURM with Lightning's ``auto_requeue``, on its requeue signal) and
    ``TrainingInterrupted`` stops the run. These handlers replace Lightning's own during
    training (its SLURM handler would write a second, ``hpc_ckpt_*`` checkpoint elsewhere) and
    are put back after it."""

    def __init__(self, run_dir: str | Path, name: str, run_id: str, args: dict[str, Any],
                 frequency: int = 1, keep_prev: bool = False,
                 resumed_from: str | Path | None = None, every_n_steps: Optional[int] = None,
                 every_n_minutes: Optional[float] = None, handle_signals: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.name, self.run_id, self.args = name, run_id, args
        self.frequency, self.keep_prev = frequency, keep_prev
        self.every_n_steps, self.every_n_minutes = every_n_steps, every_n_minutes
        self.handle_signals = handle_signals
        # a resumed run's first checkpoint replaces the one it continued from, if it is ours
        resumed = Path(resumed_from) if resumed_from else None
        self.last_path = resumed if resumed and resumed.parent == self.run_dir else None
        self.signals = SignalCatcher()
        self._before_fit: dict[int, Any] = {}
        self._last_save_time = time.monotonic()
        self._last_saved_step = -1
        # a save, or a signal's save and stop, that fell on an epoch's last step: at its end
        self._due_at_epoch_end = False
        self._stop_at_epoch_end: Optional[int] = None
        self._requeue_signal: Optional[int] = None  # Lightning's SLURM requeue signal, if any

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # the handlers the program had before Lightning registers its own (after this hook)
        self._before_fit = {s: signal.getsignal(s) for s in SIGNALS}
        if trainer.is_global_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.run_dir.glob("*.tmp"):  # left by a kill in the middle of a save
                stale.unlink()
            args_file = self.run_dir / "args.json"
            if not args_file.exists():  # a resumed run keeps the config of the run it continues
                write_json_atomic(args_file, {"run_id": self.run_id, **self.args})

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save_time = time.monotonic()
        self._last_saved_step = trainer.global_step
        self._requeue_signal = requeue_signal(trainer)  # fixed for the run: looked up once
        if self.handle_signals:
            signals = list(SIGNALS)
            requeue = self._requeue_signal
            if requeue is not None and requeue not in signals:
                signals.append(requeue)
            self.signals.install(signals, chain=self._before_fit)

    def save(self, trainer: pl.Trainer, path: Optional[Path] = None) -> Path:
        """Write ``path`` (the epoch's checkpoint by default) on every rank together; raise
        ``CheckpointWriteError`` on every rank when rank zero could not write it."""
        path = path or checkpoint_path(self.run_dir, self.name, self.run_id, trainer.current_epoch)
        tmp = path.with_name(path.name + ".tmp")
        error: Optional[OSError] = None
        try:
            trainer.save_checkpoint(tmp)  # every rank takes part; rank zero writes
        except OSError as failure:
            error = failure
            if trainer.world_size > 1:
                trainer.strategy.barrier()  # the one that save_checkpoint skipped on this rank
        if trainer.is_global_zero:
            try:
                if error is None:
                    _fsync(tmp)
                    os.replace(tmp, path)
                    fsync_dir(self.run_dir)
            except OSError as failure:
                error = failure
            if error is not None:
                tmp.unlink(missing_ok=True)
        failed = agree(trainer, [error is not None])[0]  # also the barrier after the write
        if failed:
            if error is None:  # another rank's failure
                error = OSError(errno_codes.EIO, "the write failed on another process")
            raise write_error(path, error, self.last_path) from error
        if trainer.is_global_zero and self.last_path is not None and self.last_path != path \
                and not self.keep_prev:
            self.last_path.unlink(missing_ok=True)
        self.last_path = path
        self._last_save_time = time.monotonic()
        self._last_saved_step = trainer.global_step
        return path

    def _epoch_save_due(self, trainer: pl.Trainer) -> bool:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        return (epoch + 1) % self.frequency == 0 or last

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        by_steps = bool(self.every_n_steps) and step != self._last_saved_step \
            and step % self.every_n_steps == 0  # the same on every rank
        by_time = bool(self.every_n_minutes) and step != self._last_saved_step \
            and time.monotonic() - self._last_save_time >= 60 * self.every_n_minutes
        received = self.signals.received
        if self.signals.installed or self.every_n_minutes:
            # a signal may reach some ranks only, and clocks differ: every rank takes the maximum
            # (the requeue signal first, so that a job asked to requeue is requeued)
            requeue = self._requeue_signal
            got_requeue, signum, by_time = agree(
                trainer, [received is not None and received == requeue, received or 0, by_time])
            received = requeue if got_requeue else (int(signum) or None)
        if received is None and not (by_steps or by_time):
            return
        loop = trainer.fit_loop.epoch_loop
        if loop.batch_progress.is_last_batch or \
                loop.batch_progress.current.ready >= trainer.num_training_batches:
            # Lightning resumes a checkpoint of an epoch's last step in the next epoch without
            # that epoch's end nor the next one's start (epoch hooks, k-means, epoch schedulers):
            # the save (and the stop) waits for this epoch's end, after its validation
            self._due_at_epoch_end = True
            self._stop_at_epoch_end = received
            return
        if received is not None:
            self._stop(trainer, received)
        self.save(trainer, step_checkpoint_path(self.run_dir, self.name, self.run_id,
                                                trainer.current_epoch, step))

    def _stop(self, trainer: pl.Trainer, signum: int) -> None:
        step, epoch = trainer.global_step, trainer.current_epoch
        if step == self._last_saved_step and self.last_path is not None:
            path = self.last_path  # this step is saved already
        else:
            path = self.save(trainer, step_checkpoint_path(self.run_dir, self.name, self.run_id,
                                                           epoch, step))
        name = signal.Signals(signum).name
        if trainer.is_global_zero:
            print(f"{name} received: saved {path} at step {step}; stopping", file=sys.stderr,
                  flush=True)
        requeued = False
        if signum == self._requeue_signal and trainer.is_global_zero:
            requeued = requeue_slurm_job()  # only now that the checkpoint is in place
        self.signals.restore()
        raise TrainingInterrupted(name, path, step, epoch, requeued)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._epoch_save_due(trainer) or self._due_at_epoch_end:
            self.save(trainer)
        self._due_at_epoch_end = False
        if self._stop_at_epoch_end is not None:
            self._stop(trainer, self._stop_at_epoch_end)  # the step is saved: stops with it

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.signals.restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self.signals.restore()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.signals.restore()
