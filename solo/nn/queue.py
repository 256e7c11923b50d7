"""A ring buffer of past embeddings (MoCo's negatives, NNCLR's support set, ReSSL's relations).

The buffers are registered on the method that owns the queue, under solo-learn's names
(``queue``, ``queue_y``, ``queue_ptr``), so its checkpoints load into ours and a resume keeps
the queue. Writes gather the keys of every process first: every process holds the same queue.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo.config import check_queue_size
from solo.utils.precision import full_float32
from solo.utils.distributed import gather_no_grad


class FeatureQueue:
    """``size`` slots of ``dim``-wide keys, optionally ``copies`` independent queues (MoCo v2+
    keeps one per view) and a label per slot (-1 until written).

    Layout: ``(copies, size, dim)`` (without the copies axis when ``copies`` is None), or with
    ``keys_last`` the transposed ``(copies, dim, size)`` of solo-learn's and the official MoCo's
    queue. Not an ``nn.Module``: its tensors are the owner's buffers, read by name each time
    because ``.to()`` replaces them.
    """

    def __init__(self, owner: nn.Module, size: int, dim: int, *, copies: Optional[int] = None,
                 labels: bool = False, indexes: bool = False, keys_last: bool = False,
                 name: str = "queue") -> None:
        if size < 1 or dim < 1:
            raise ValueError(f"a queue needs size and dim >= 1, got {size} and {dim}")
        self._owner, self.name, self.size, self.keys_last = owner, name, size, keys_last
        lead = () if copies is None else (copies,)
        # random unit keys: negatives (or neighbours) no better than chance until overwritten
        keys = F.normalize(torch.randn(*lead, size, dim), dim=-1)
        owner.register_buffer(name, keys.transpose(-1, -2).contiguous() if keys_last else keys)
        self.has_labels = labels
        if labels:
            owner.register_buffer(f"{name}_y", torch.full((size,), -1, dtype=torch.long))
        self.has_indexes = indexes  # the dataset index of each key (All4One's queue_index)
        if indexes:
            owner.register_buffer(f"{name}_index", torch.full((size,), -1, dtype=torch.long))
        # (1,), as in solo-learn's checkpoints
        owner.register_buffer(f"{name}_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def keys(self) -> Tensor:
        """The stored keys, in the queue's layout (a view of the buffer: clone before a write)."""
        return getattr(self._owner, self.name)

    @property
    def labels(self) -> Tensor:
        """(size,) label of each slot, -1 where none was written."""
        return getattr(self._owner, f"{self.name}_y")

    @property
    def indexes(self) -> Tensor:
        """(size,) dataset index of each slot's image, -1 where none was written."""
        return getattr(self._owner, f"{self.name}_index")

    @property
    def pointer(self) -> Tensor:
        return getattr(self._owner, f"{self.name}_ptr")

    def rows(self) -> Tensor:
        """The keys as (copies, size, dim) or (size, dim), a detached copy safe to use in a loss
        computed before this step's ``push``."""
        keys = self.keys.detach().clone()
        return keys.transpose(-1, -2) if self.keys_last else keys

    @torch.no_grad()
    def push(self, keys: Tensor, labels: Optional[Tensor] = None,
             indexes: Optional[Tensor] = None) -> None:
        """Write keys ((copies,) B, dim) of every process, in rank order, at the pointer, wrapping
        around; ``labels`` and ``indexes`` (B,) beside them when the queue keeps them."""
        copies = keys.dim() == 3
        gathered = torch.stack([gather_no_grad(k) for k in keys]) if copies else gather_no_grad(keys)
        count = gathered.shape[-2]
        slots = (self.pointer + torch.arange(count, device=keys.device)) % self.size
        values = gathered.to(self.keys.dtype)
        if self.keys_last:
            self.keys[..., slots] = values.transpose(-1, -2)
        else:
            self.keys[..., slots, :] = values
        if self.has_labels:
            if labels is None:
                raise ValueError(f"queue '{self.name}' keeps labels: push them with the keys")
            self.labels[slots] = gather_no_grad(labels.to(self.labels.dtype))
        if self.has_indexes:
            if indexes is None:
                raise ValueError(f"queue '{self.name}' keeps indexes: push them with the keys")
            self.indexes[slots] = gather_no_grad(indexes.to(self.indexes.dtype))
        self.pointer.copy_((self.pointer + count) % self.size)

    def label_accuracy(self, index: Tensor, targets: Tensor) -> Tensor:
        """How often the stored label of slot ``index`` (B,) is the image's own target (B,): the
        nearest-neighbour accuracy NNCLR and its relatives log (solo-learn's ``nn_acc``)."""
        return (self.labels[index] == targets).float().mean()

    def check_size(self, global_batch: int) -> None:
        """A ConfigError unless the size is a multiple of the keys written per step."""
        check_queue_size(self.size, global_batch)


@torch.no_grad()
def nearest_neighbours(z: Tensor, support: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
    """The ``k`` rows of ``support`` (K, D) most cosine-similar to each row of z (B, D), most
    similar first: their indices (B, k) and the rows themselves (B, k, D), without gradient.
    The support holds unit rows (a FeatureQueue of normalized projections), so the largest dot
    product with the normalized z is the largest cosine."""
    q = F.normalize(z.float(), dim=-1)
    with full_float32(q.device.type):  # TF32 could swap two close neighbours
        similarity = q @ support.float().T  # (B, K)
    index = similarity.topk(k, dim=1).indices
    return index, support[index]
