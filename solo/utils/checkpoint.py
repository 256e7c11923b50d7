"""Checkpoints written atomically: a kill at any moment leaves the previous file intact.

Layout: ``<checkpoint.dir>/<method>/<run id>/<name>-<run id>-ep=<epoch>.ckpt`` and ``args.json``
(the resolved config and the run id) beside them.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path
from typing import Any, BinaryIO, Callable

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

RUN_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_run_id(length: int = 8) -> str:
    return "".join(secrets.choice(RUN_ID_ALPHABET) for _ in range(length))


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """``write(handle)`` into a temporary file beside ``path``, flushed to disk, then renamed over
    ``path``: a crash or a kill leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically."""
    write_atomic(path, lambda handle: handle.write(json.dumps(data, indent=2, default=str).encode()))


def checkpoint_path(run_dir: Path, name: str, run_id: str, epoch: int) -> Path:
    return run_dir / f"{name}-{run_id}-ep={epoch}.ckpt"


class Checkpointer(Callback):
    """Saves every ``frequency`` epochs (and after the last) with temp file + rename."""

    def __init__(self, run_dir: str | Path, name: str, run_id: str, args: dict[str, Any],
                 frequency: int = 1, keep_prev: bool = False,
                 resumed_from: str | Path | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.name, self.run_id, self.args = name, run_id, args
        self.frequency, self.keep_prev = frequency, keep_prev
        # a resumed run's first checkpoint replaces the one it continued from, if it is ours
        resumed = Path(resumed_from) if resumed_from else None
        self.last_path = resumed if resumed and resumed.parent == self.run_dir else None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.run_dir.glob("*.tmp"):  # left by a kill in the middle of a save
                stale.unlink()
            write_json_atomic(self.run_dir / "args.json", {"run_id": self.run_id, **self.args})

    def save(self, trainer: pl.Trainer) -> None:
        path = checkpoint_path(self.run_dir, self.name, self.run_id, trainer.current_epoch)
        tmp = path.with_name(path.name + ".tmp")
        trainer.save_checkpoint(tmp)  # every rank takes part; rank zero writes
        if trainer.is_global_zero:
            _fsync(tmp)
            os.replace(tmp, path)
            if self.last_path is not None and self.last_path != path and not self.keep_prev:
                self.last_path.unlink(missing_ok=True)
        self.last_path = path
        trainer.strategy.barrier()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.frequency == 0 or last:
            self.save(trainer)
