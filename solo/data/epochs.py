"""The order of an epoch's training items, and where a resumed run continues in it.

Every pipeline's training order is a permutation seeded by (seed, epoch), shared by all processes
and split by rank (``epoch_order``), so it can be recomputed at any point instead of replayed.
A checkpoint records, in the datamodule's state (``ResumableData``, which Lightning saves in
every checkpoint and restores before the training iterator is created), how many batches of
which epoch were trained; the resumed run's first training iterator starts there, so the epoch
ends with exactly the batches the uninterrupted run would have seen, none repeated or skipped.

Lightning itself, resuming from a checkpoint written inside an epoch, does not re-run the last
saved batch and runs the epoch's remaining count only; but with a plain data loader it draws
them from the start of a new iterator (other items) and warns that the loader is not resumable.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterator, Optional

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from solo.utils.random_state import mix_seed

Start = Optional[tuple[int, int]]  # (epoch, batches of it already trained); None: the trainer's


def epoch_order(num_items: int, shuffle: bool, drop_last: bool, seed: int, epoch: int, rank: int,
                world_size: int, device: torch.device) -> Tensor:
    """This process's item positions for one epoch: one permutation shared by all processes
    (seeded by the epoch), split by rank; without drop_last padded by wrapping around so every
    process gets as many items (as DistributedSampler does)."""
    if shuffle:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(num_items, generator=generator)
    else:
        order = torch.arange(num_items)
    if drop_last:
        order = order[: num_items - num_items % world_size]
    else:
        total = math.ceil(num_items / world_size) * world_size
        order = torch.cat([order, order[: total - num_items]]) if total > num_items else order
    return order[rank::world_size].to(device)  # one small copy per epoch


def batches_per_epoch(num_items: int, batch_size: int, train: bool, world_size: int) -> int:
    """Training drops the incomplete last batch (and the items no rank can share); validation
    keeps every item, padded so that all ranks get as many."""
    if train:
        return num_items // world_size // batch_size
    return math.ceil(math.ceil(num_items / world_size) / batch_size)


def training_position(trainer: pl.Trainer) -> tuple[int, int]:
    """(epoch, batches of it trained) from which a run resumed from a checkpoint written now
    continues: inside an epoch (``on_train_batch_end``, after that batch's optimizer step, or
    a validation inside the epoch) the batches whose step ran; at or after an epoch's end the
    start of the next."""
    epochs = trainer.fit_loop.epoch_progress.current
    if epochs.processed > epochs.completed:  # in on_train_epoch_end
        return epochs.processed, 0
    if epochs.started == epochs.processed:  # between epochs (before the first, after the last)
        return epochs.completed, 0
    trained = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    if trained >= trainer.num_training_batches:  # the epoch's last batch: the next epoch
        return epochs.processed + 1, 0
    return epochs.processed, trained


class ResumableData:
    """A LightningDataModule mixin: the training position goes into every checkpoint, and the
    first training iterator after a restore starts from it (``take_start``)."""

    _resume_start: Start = None

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return {}
        epoch, batches = training_position(trainer)
        return {"train_position": {"epoch": epoch, "batches": batches,
                                   "batch_size": self._batch_size(), "world_size": trainer.world_size}}

    def _batch_size(self) -> int:
        return int(self.cfg.optimizer.batch_size)  # type: ignore[attr-defined]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        position = state_dict.get("train_position")
        if position is None:
            return
        self._resume_start = int(position["epoch"]), int(position["batches"])
        trainer = getattr(self, "trainer", None)
        now = (self._batch_size(), trainer.world_size if trainer is not None else 1)
        saved = (position.get("batch_size", now[0]), position.get("world_size", now[1]))
        if self._resume_start[1] and saved != now:
            warnings.warn(f"resuming inside epoch {self._resume_start[0]} with (batch size, "
                          f"processes) {now} instead of the checkpoint's {saved}: the epoch goes on "
                          f"after its first {self._resume_start[1]} batches of the new shape, so "
                          "some of its images are seen twice or not at all", stacklevel=2)
        # Lightning warns that a loader without state_dict() cannot resume mid-epoch: ours does
        warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended "
                                r"before the epoch ended", category=PossibleUserWarning)

    def take_start(self) -> Start:
        """The restored position, once: the first training iterator after a resume starts there,
        later ones at the start of the trainer's current epoch (None)."""
        start, self._resume_start = self._resume_start, None
        return start

    def current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return trainer.current_epoch if trainer is not None else 0


class EpochSampler(DistributedSampler):
    """This process's training items of an epoch, as ``(index, augmentation seed)`` keys: the
    epoch's permutation (``epoch_order``), its share for this rank, the items of full batches
    only; a resumed epoch starts after its trained batches. The seed is keyed by (seed, epoch,
    index), so an image's views do not depend on the worker that makes them, nor on the number
    of workers or processes.

    A DistributedSampler, so that Lightning does not put one of its own in its place under DDP:
    it shards by rank itself. ``set_epoch`` is ignored; the epoch is the trainer's when iterated.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, rank: int, world_size: int,
                 epoch: Callable[[], int], start: Callable[[], Start] = lambda: None) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.num_items, self.batch_size = len(dataset), batch_size  # type: ignore[arg-type]
        self.current_epoch, self.start = epoch, start

    def __len__(self) -> int:
        return batches_per_epoch(self.num_items, self.batch_size, True, self.num_replicas) \
            * self.batch_size

    def keys(self, epoch: int, skip_batches: int = 0) -> list[tuple[int, int]]:
        order = epoch_order(self.num_items, True, True, self.seed, epoch, self.rank,
                            self.num_replicas, torch.device("cpu"))
        positions = order[skip_batches * self.batch_size: len(self)].tolist()
        return [(i, mix_seed(self.seed, 0xA06, epoch, i)) for i in positions]

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        start = self.start()
        epoch, skip = start if start is not None else (self.current_epoch(), 0)
        return iter(self.keys(epoch, skip))
