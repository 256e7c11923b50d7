"""Finding, on the CPU, the calls that would make a training step wait for a GPU.

On a GPU, CUDA's sync debug mode catches a device-to-host read as it happens
(tests/methods/test_no_host_sync.py). CI has no GPU, so this records, while active, every call
that reads a result back to the host on a GPU, made by solo's code or by Lightning's:

- at the dispatcher: ``aten._local_scalar_dense`` (``.item()``, ``bool(t)``, ``float(t)``) and the
  operators whose output size depends on the values (``nonzero``, ``masked_select``, selection
  with a boolean index, ``unique``, ``repeat_interleave`` without an output size, the linalg
  error checks);
- as Python calls: ``.tolist()``, ``.numpy()``, ``.cpu()``, ``.to("cpu")`` (the host by name:
  ``.to(x.device)`` names the CPU here but the GPU there), and
  ``torch.tensor(..., device=...)`` (a copy from pageable host memory that waits).

Each record names the innermost frame outside torch, torchvision and timm (the libraries solo
calls); only calls from the watched code count. Calls from inside torch's optimizers and data
loaders are left out: optimizers keep their step counts on the host, and loaders (in workers or
in the main process) make batches of host tensors, where ``.item()`` costs no sync.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from tests.helpers import ROOT

READ_BACK_OPS = {"_local_scalar_dense", "nonzero", "nonzero_static", "masked_select", "_unique2",
                 "unique_dim", "unique_consecutive", "repeat_interleave", "_linalg_check_errors"}
INDEXING_OPS = {"index", "index_put", "index_put_", "_index_put_impl_"}
READ_BACK_CALLS = {"tolist", "numpy", "cpu"}
LIBRARIES = ("/site-packages/torch/", "/site-packages/torchvision/", "/site-packages/timm/")
ON_THE_HOST = ("/site-packages/torch/optim/", "/site-packages/torch/utils/data/")
SOLO_AND_LIGHTNING = ("/solo/", "/lightning/")


@dataclass(frozen=True)
class HostRead:
    what: str  # the operator or call
    where: str  # file:line and source of the innermost frame outside the libraries

    def __str__(self) -> str:
        return f"{self.what} at {self.where}"


def _caller(watched: tuple[str, ...]) -> Optional[str]:
    """The innermost frame outside the libraries (and this file), or None when it is not in a
    file whose path holds one of ``watched``, or is inside a torch optimizer or data loader."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename == __file__:
            continue
        if any(host in frame.filename for host in ON_THE_HOST):
            return None
        if any(library in frame.filename for library in LIBRARIES):
            continue
        if not any(part in frame.filename for part in watched):
            return None
        path = frame.filename.split("/site-packages/")[-1]
        if path.startswith(str(ROOT)):
            path = os.path.relpath(path, ROOT)
        return f"{path}:{frame.lineno}: {frame.line}"
    return None


def _boolean_index(indices: Any) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())


class _Recording:
    """What both modes share: the list they append to, and which callers count."""

    def __init__(self, reads: list[HostRead], watched: tuple[str, ...]) -> None:
        super().__init__()
        self.reads, self.watched = reads, watched

    def record(self, what: str) -> None:
        where = _caller(self.watched)
        if where is not None:
            self.reads.append(HostRead(what, where))


class _Operators(_Recording, TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name in READ_BACK_OPS or (name in INDEXING_OPS and _boolean_index(args[1])):
            self.record(f"aten.{name}")
        return func(*args, **(kwargs or {}))


class _Calls(_Recording, TorchFunctionMode):

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        reads = name in READ_BACK_CALLS
        if name == "to":  # to "cpu" by name: ``.to(x.device)`` is the CPU here, not on a GPU
            reads = any(isinstance(a, str) and a == "cpu" for a in (*args[1:], *kwargs.values()))
        if name in ("tensor", "as_tensor"):
            reads = kwargs.get("device") is not None
        if reads:
            self.record(f"{name}()")
        return func(*args, **kwargs)


class HostReads:
    """Records the host reads that code in ``watched`` (parts of file paths) makes while active
    (``with HostReads() as reads: ...``; ``reads.found`` lists them). ``start`` and ``stop`` do
    the same across callbacks."""

    def __init__(self, watched: tuple[str, ...] = SOLO_AND_LIGHTNING) -> None:
        self.watched = watched
        self.found: list[HostRead] = []
        self._modes: list[Any] = []

    def start(self) -> None:
        self._modes = [_Calls(self.found, self.watched), _Operators(self.found, self.watched)]
        for mode in self._modes:
            mode.__enter__()

    def stop(self) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(None, None, None)
        self._modes = []

    def __enter__(self) -> "HostReads":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class HostReadWindow(pl.Callback):
    """Records the host reads of training batches ``first`` to ``last``, from the start of the
    batch (the step, backward, optimizer and momentum updates) to the end of Lightning's work
    after it (the logger connector), that is up to the start of batch ``last + 1``, which must
    run: train at least ``last + 2`` batches."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.reads = HostReads()
        self.batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.first:
            self.reads.start()
        if self.first < batch_idx <= self.last + 1:
            self.batches += 1
        if batch_idx == self.last + 1:
            self.reads.stop()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.reads.stop()

    def assert_read_nothing(self) -> None:
        """Fails unless every batch of the window ran and no host read was recorded."""
        assert self.batches == self.last - self.first + 1, (self.batches, self.first, self.last)
        assert not self.reads.found, "\n".join(map(str, self.reads.found))
