"""Training a Learner on a Dataset with a Lightning Trainer: DDP, checkpoints, resume.

What byol-pytorch's accelerate trainer does, on Lightning: batches from any Dataset of images (or
(image, label) tuples, labels ignored), one optimizer over the learner's parameters, the EMA
update after each optimizer step, checkpoints in a folder that a second call resumes from.
"""

from __future__ import annotations

import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.strategies import DDPStrategy
from PIL import Image
from torch import Tensor
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2.functional import pil_to_tensor

from solo.config import device_count
from solo.learner import Learner
from solo.methods.momentum import cosine_tau
from solo.utils.progress import LossProgressBar

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], Optimizer]
LAST_CHECKPOINT = "last.ckpt"


def collate_images(samples: list[Any]) -> Tensor:
    """A batch (B, 3, H, W) from a Dataset's items: image tensors (uint8 or [0, 1] float) or PIL
    images, alone or first in a tuple."""
    images = []
    for sample in samples:
        image = sample[0] if isinstance(sample, (tuple, list)) else sample
        if isinstance(image, Image.Image):
            image = pil_to_tensor(image.convert("RGB"))
        if not isinstance(image, Tensor):
            raise TypeError(f"the dataset returns a {type(image).__name__}; fit needs image "
                            "tensors (3, H, W) or PIL images, alone or first in a tuple")
        images.append(image)
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes in one batch ({sorted(shapes)[:3]}...); "
                         "resize them in the dataset (e.g. torchvision.transforms.v2.Resize)")
    return torch.stack(images)


class LearnerModule(pl.LightningModule):
    """A Learner as a LightningModule. Reload a checkpoint with
    ``LearnerModule.load_from_checkpoint(path, learner=Learner(net, ...))``: ``net`` then holds
    the trained weights."""

    def __init__(self, learner: Learner, optimizer: Optional[OptimizerFactory] = None,
                 lr: float = 3e-4) -> None:
        super().__init__()
        self.learner = learner
        # Adam at 3e-4: byol-pytorch's trainer default, which needs no tuning per batch size
        self.make_optimizer = optimizer or partial(torch.optim.Adam, lr=lr)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        loss = self.learner(batch)
        # no prog_bar: Lightning would read it back every step (LossProgressBar shows it)
        self.log("train_loss", loss.detach(), on_step=True, batch_size=len(batch))
        return loss

    def configure_optimizers(self) -> Optimizer:
        return self.make_optimizer([p for p in self.learner.parameters() if p.requires_grad])

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any,
                       optimizer_closure: Optional[Callable[[], Any]] = None) -> None:
        # Lightning calls this once per real step (not per accumulated batch); global_step
        # still counts the steps before this one, so the first update uses base_tau
        step, total = self.trainer.global_step, int(self.trainer.estimated_stepping_batches)
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.learner.uses_momentum:
            momentum = self.learner.cfg.momentum  # constant unless final_tau was set apart
            self.learner.update_moving_average(cosine_tau(step, total, momentum.base_tau,
                                                          momentum.final_tau))


def _process_count(devices: Union[int, str, list[int]], accelerator: str, num_nodes: int) -> int:
    """How many processes the Trainer will start, read as Lightning reads ``devices``."""
    count = device_count(devices)
    if count is None:  # "auto" or -1
        on_cpu = accelerator == "cpu" or not torch.cuda.is_available()
        every = str(devices).strip() == "-1"  # on the CPU Lightning counts every core
        count = ((os.cpu_count() or 1) if every else 1) if on_cpu else torch.cuda.device_count()
    return count * num_nodes


def fit(learner: Learner, dataset: Dataset, *, max_steps: int = -1,
        max_epochs: Optional[int] = None, batch_size: int = 64, lr: float = 3e-4,
        optimizer: Optional[OptimizerFactory] = None, devices: Union[int, str, list[int]] = 1,
        accelerator: str = "auto", num_nodes: int = 1, precision: str = "32-true",
        num_workers: int = 0, checkpoint_dir: Union[str, Path, None] = None,
        checkpoint_every: Optional[int] = None, resume: bool = True,
        sync_batchnorm: Optional[bool] = None, **trainer_kwargs: Any) -> pl.Trainer:
    """Train ``learner`` (and so its ``net``) on ``dataset`` for ``max_steps`` optimizer steps or
    ``max_epochs`` epochs; returns the Trainer.

    ``batch_size`` is per process. More than one device (or node) runs DDP, one process per
    device; ``sync_batchnorm`` (None: on GPUs when distributed, as byol-pytorch) shares the batch
    statistics. ``optimizer``: a factory from parameters to an optimizer (default Adam at ``lr``).
    ``checkpoint_dir``: Lightning checkpoints every ``checkpoint_every`` steps (None: each epoch)
    and ``last.ckpt`` at the end; with ``resume``, a ``last.ckpt`` already there is resumed
    (weights, optimizer, step count). Other keyword arguments go to ``lightning.Trainer``.
    """
    if max_steps == -1 and max_epochs is None:
        raise ValueError("fit needs max_steps or max_epochs")
    distributed = _process_count(devices, accelerator, num_nodes) > 1
    if sync_batchnorm is None:
        on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto"
                                                     and torch.cuda.is_available())
        sync_batchnorm = distributed and on_gpu  # torch's SyncBatchNorm runs on CUDA only
    callbacks = list(trainer_kwargs.pop("callbacks", []))
    if trainer_kwargs.get("enable_progress_bar", True) and not any(
            isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(LossProgressBar(shown=("train_loss",)))
    if checkpoint_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=str(checkpoint_dir), filename="{step}",
                                         every_n_train_steps=checkpoint_every, save_last=True))
    settings: dict[str, Any] = {
        "max_steps": max_steps, "max_epochs": max_epochs, "devices": devices,
        "accelerator": accelerator, "num_nodes": num_nodes, "precision": precision,
        # layers after hidden_layer (a ResNet's fc) run but get no gradient: DDP must look for
        # them, or it waits forever for their gradients
        "strategy": DDPStrategy(find_unused_parameters=True) if distributed else "auto",
        "sync_batchnorm": sync_batchnorm, "callbacks": callbacks,
        "enable_checkpointing": checkpoint_dir is not None,
        "default_root_dir": str(checkpoint_dir) if checkpoint_dir is not None else None,
        "logger": False, "enable_model_summary": False,
    }
    trainer = pl.Trainer(**{**settings, **trainer_kwargs})
    # drop_last: every process passes the same batch size (the gathered losses need it) and
    # batch norm never sees a batch of one
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=num_workers, collate_fn=collate_images,
                        pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)
    last = Path(checkpoint_dir) / LAST_CHECKPOINT if checkpoint_dir is not None else None
    ckpt_path = str(last) if resume and last is not None and last.is_file() else None
    with warnings.catch_warnings():
        if ckpt_path is not None:  # the folder holds checkpoints because this run wrote them
            warnings.filterwarnings("ignore", message="Checkpoint directory .* is not empty")
        trainer.fit(LearnerModule(learner, optimizer, lr), loader, ckpt_path=ckpt_path)
    if last is not None and checkpoint_every and trainer.global_step % checkpoint_every:
        # the callback saves every n steps only, so the steps since the last multiple would be
        # lost; every process calls this, rank 0 writes
        trainer.save_checkpoint(last)
    return trainer
