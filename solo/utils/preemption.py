"""Stopping a run cleanly when the scheduler asks: SIGTERM (preemption, ``scancel``, a requeue)
and SIGUSR1 (SLURM's ``--signal=USR1@<seconds>`` before the time limit).

A handler only records the signal; the ``Checkpointer`` acts on it at the next batch boundary,
where every rank saves the same step together and the run then stops with ``TrainingInterrupted``.
Under DDP the ranks agree first (one all-reduce per step), as a signal may reach only some of them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Optional, Sequence

import lightning.pytorch as pl
import torch

# what pretraining catches; SLURM's requeue signal, when Lightning's environment names another, too
SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None))
                if s is not None)


class TrainingInterrupted(Exception):
    """Raised (on every rank) after a signal's checkpoint is written: the run stops here."""

    def __init__(self, signal_name: str, checkpoint: Optional[Path], step: int, epoch: int,
                 requeued: bool = False) -> None:
        self.signal_name, self.checkpoint = signal_name, checkpoint
        self.step, self.epoch, self.requeued = step, epoch, requeued
        super().__init__(f"interrupted by {signal_name} at step {step} (epoch {epoch}); "
                         f"checkpoint: {checkpoint}")


class SignalCatcher:
    """Records the first of ``signals`` received in the main thread; ``restore`` puts back the
    handlers found at ``install``. ``chain`` maps a signal to a handler that runs after ours (the
    one the program had before Lightning's, when it is a function)."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}
        self._chain: dict[int, Callable[[int, Optional[FrameType]], Any]] = {}

    def install(self, signals: Sequence[int], chain: Optional[dict[int, Any]] = None) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python only lets the main thread set handlers
        self.received = None
        for signum in signals:
            if signum in self._previous:
                continue
            self._previous[signum] = signal.getsignal(signum)
            before = (chain or {}).get(signum)
            if callable(before):
                self._chain[signum] = before
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.received is None:  # no printing here: the signal may interrupt a print
            self.received = signum
        chained = self._chain.get(signum)
        if chained is not None:
            chained(signum, frame)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(signum, handler)
        self._previous, self._chain = {}, {}

    @property
    def installed(self) -> bool:
        return bool(self._previous)


def agree(trainer: pl.Trainer, flags: Sequence[float]) -> list[float]:
    """The element-wise maximum of ``flags`` over all ranks: one all-reduce, none in one process."""
    if trainer.world_size <= 1 or not (torch.distributed.is_available()
                                        and torch.distributed.is_initialized()):
        return [float(f) for f in flags]
    tensor = torch.tensor([float(f) for f in flags], device=trainer.strategy.root_device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return tensor.tolist()


def slurm_environment(trainer: pl.Trainer) -> Any:
    """Lightning's SLURM cluster environment of this run, None when not under SLURM."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    env = getattr(trainer.strategy, "cluster_environment", None)
    if env is None:
        env = getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)
    return env if isinstance(env, SLURMEnvironment) else None


def requeue_signal(trainer: pl.Trainer) -> Optional[int]:
    """The signal on which this job asks SLURM to requeue it (Lightning's ``auto_requeue``)."""
    env = slurm_environment(trainer)
    if env is None or not env.auto_requeue:
        return None
    return env.requeue_signal


def requeue_slurm_job() -> bool:
    """``scontrol requeue`` this job (an array task by its own id); True when it worked."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = (f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job
           else os.environ.get("SLURM_JOB_ID", ""))
    if not re.fullmatch(r"[0-9_]+", job):
        print(f"requeue: no SLURM job id in the environment ({job!r})", file=sys.stderr)
        return False
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    except OSError as error:
        print(f"requeue of SLURM job {job} failed: {error}", file=sys.stderr)
        return False
    if done.returncode != 0:
        print(f"requeue of SLURM job {job} failed ({done.returncode}): {done.stderr.strip()}",
              file=sys.stderr)
        return False
    print(f"requeued SLURM job {job}", file=sys.stderr)
    return True
