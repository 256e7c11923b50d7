"""A per-process memory bank of the epoch's projections and their dataset indexes (DeepClusterV2's
``local_memory_index`` / ``local_memory_embeddings``, under solo-learn's buffer names).

Each process writes the rows of the batches it trains on, one after the other from the start of
the bank at each epoch; the bank holds as many rows as one process sees in an epoch
(batches x batch size, solo-learn's and the official size). Rows never written keep index -1
and take no part in the clustering. A checkpoint holds the rows of every process (gathered
when it is saved), and a resumed run shares them out again, whatever its number of processes:
the clustering only needs the union of the rows, not which process wrote them.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from solo.utils.distributed import gather_padded, rank, world_size

SAVED_WORLD_KEY = "memory_bank_world_size"  # in a checkpoint: its bank holds every process's rows


class MemoryBank:
    """``crops`` copies (one per large crop) of ``slots`` unit rows of width ``dim``, with the
    dataset index of each slot. Not an ``nn.Module``: the tensors are the owner's buffers, read by
    name each time because ``.to()`` replaces them; their size is set by ``allocate``."""

    def __init__(self, owner: nn.Module, crops: int, dim: int, prefix: str = "local_memory") -> None:
        self._owner, self.crops, self.dim, self.prefix = owner, crops, dim, prefix
        owner.register_buffer(f"{prefix}_index", torch.full((0,), -1, dtype=torch.long))
        owner.register_buffer(f"{prefix}_embeddings", torch.zeros(crops, 0, dim))
        owner.register_buffer(f"{prefix}_ptr", torch.zeros(1, dtype=torch.long))
        # each process's bank is its own: DDP would otherwise overwrite it with rank 0's before
        # every forward (it broadcasts all buffers). The names are the owner's, which must be the
        # module DDP wraps (a LightningModule is)
        owner._ddp_params_and_buffers_to_ignore = [
            *getattr(owner, "_ddp_params_and_buffers_to_ignore", []),
            *(f"{prefix}_{name}" for name in ("index", "embeddings", "ptr"))]
        self.pointer = 0  # a host copy of the buffer: no device read per step
        # a loaded bank (a checkpoint's, of any size) replaces the empty one
        owner.register_load_state_dict_pre_hook(self._fit_incoming)

    @property
    def indexes(self) -> Tensor:
        """(slots,) dataset index of each slot, -1 where none was written."""
        return getattr(self._owner, f"{self.prefix}_index")

    @property
    def embeddings(self) -> Tensor:
        """(crops, slots, dim) the stored rows."""
        return getattr(self._owner, f"{self.prefix}_embeddings")

    @property
    def slots(self) -> int:
        return len(self.indexes)

    def allocate(self, slots: int) -> None:
        """Resize to ``slots`` rows, keeping the rows already there that fit (a resumed bank)."""
        if slots == self.slots:
            return
        old_index, old_rows = self.indexes, self.embeddings
        index = torch.full((slots,), -1, dtype=torch.long, device=old_index.device)
        rows = old_rows.new_zeros(self.crops, slots, self.dim)
        kept = min(slots, self.slots)
        index[:kept], rows[:, :kept] = old_index[:kept], old_rows[:, :kept]
        setattr(self._owner, f"{self.prefix}_index", index)
        setattr(self._owner, f"{self.prefix}_embeddings", rows)
        self.rewind(min(self.pointer, slots))

    def rewind(self, pointer: int = 0) -> None:
        """The next write goes to slot ``pointer`` (0 at each epoch start)."""
        self.pointer = pointer
        getattr(self._owner, f"{self.prefix}_ptr").fill_(pointer)

    @torch.no_grad()
    def write(self, indexes: Tensor, rows: Sequence[Tensor]) -> None:
        """Store this process's batch: ``indexes`` (B,) and one (B, dim) tensor per crop, at the
        pointer (wrapping around past the end: the latest rows are kept)."""
        if self.slots == 0:
            raise RuntimeError("the memory bank has no slots: allocate() it first")
        slots = (self.pointer + torch.arange(len(indexes), device=indexes.device)) % self.slots
        self.indexes[slots] = indexes.to(self.indexes.dtype)
        for crop, values in enumerate(rows[: self.crops]):
            self.embeddings[crop, slots] = values.detach().to(self.embeddings.dtype)
        self.rewind((self.pointer + len(indexes)) % self.slots)

    def filled(self) -> tuple[Tensor, Tensor]:
        """The written slots: their indexes (M,) and rows (crops, M, dim)."""
        written = self.indexes >= 0
        return self.indexes[written], self.embeddings[:, written]

    # ------------------------------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------------------------------
    def gather_into(self, checkpoint: dict[str, Any], prefix: str = "") -> None:
        """Replace this process's bank in ``checkpoint["state_dict"]`` by every process's rows,
        in rank order (a collective: every process must call it, as Lightning's saves do)."""
        state = checkpoint["state_dict"]
        state[f"{prefix}{self.prefix}_index"] = gather_padded(self.indexes, fill=-1).cpu()
        rows = gather_padded(self.embeddings.transpose(0, 1).contiguous(), fill=0.0)
        state[f"{prefix}{self.prefix}_embeddings"] = rows.transpose(0, 1).contiguous().cpu()
        checkpoint[SAVED_WORLD_KEY] = world_size()

    def share_from(self, checkpoint: dict[str, Any], prefix: str = "") -> None:
        """This process's part of a gathered bank in ``checkpoint["state_dict"]``, in place:
        contiguous shares of the saved rows, one per process of this run."""
        if SAVED_WORLD_KEY not in checkpoint:
            return  # saved by other code (solo-learn): one process's bank, loaded as it is
        state = checkpoint["state_dict"]
        index_key, rows_key = f"{prefix}{self.prefix}_index", f"{prefix}{self.prefix}_embeddings"
        if index_key not in state or world_size() == 1:
            return
        share = rank()
        state[index_key] = state[index_key].tensor_split(world_size())[share].clone()
        state[rows_key] = state[rows_key].tensor_split(world_size(), dim=1)[share].clone()

    def _fit_incoming(self, module: nn.Module, state_dict: dict[str, Tensor], prefix: str,
                      *args: Any) -> None:
        if module is not self._owner:
            return
        for name in ("index", "embeddings"):
            key = f"{prefix}{self.prefix}_{name}"
            mine = getattr(self._owner, f"{self.prefix}_{name}")
            if key in state_dict and state_dict[key].shape != mine.shape:
                setattr(self._owner, f"{self.prefix}_{name}",
                        mine.new_empty(state_dict[key].shape))
        pointer = state_dict.get(f"{prefix}{self.prefix}_ptr")
        if pointer is not None:
            self.pointer = int(pointer.reshape(-1)[0])
