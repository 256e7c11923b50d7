"""DeepClusterV2, from "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments" (Caron et al., arXiv:2006.09882, the SwAV paper).

Offline clustering made online: a memory bank keeps the projection of every image each process
saw during the epoch; at the next epoch's start a spherical k-means over the banks of all
processes (several heads) gives each dataset index a cluster, and the prototypes, frozen, are
set to the centroids. Each crop's prototype scores are then trained to predict its image's
cluster. The first epoch has no clusters yet and trains nothing (solo-learn), unless
``init_memory`` fills the bank with a pass over the data first (the official code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from solo.config import ConfigError, check, check_positive
from solo.losses.deepclusterv2 import assignments_of, deepclusterv2_loss
from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.registry import METHODS
from solo.nn import mlp
from solo.nn.memory_bank import MemoryBank
from solo.data.gpu_pipeline import ResidentBatches
from solo.utils.kmeans import cluster_memory


def second_pass(loader: Any) -> Any:
    """An iterable over the training loader's epoch that leaves the trainer's own iterator alone
    (the init_memory pass runs after Lightning started it): a persistent-worker DataLoader is
    cloned without persistence, since iterating it again would reset the trainer's iterator."""
    if isinstance(loader, DataLoader):
        if not loader.persistent_workers:
            return loader
        return DataLoader(loader.dataset, batch_sampler=loader.batch_sampler,
                          num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                          pin_memory=loader.pin_memory)
    if isinstance(loader, ResidentBatches):  # each iteration is an independent generator
        return loader
    raise ConfigError(f"method_kwargs.init_memory: the {type(loader).__name__} loader of this "
                      "pipeline cannot be read twice in an epoch; use data.pipeline 'cpu' or the "
                      "gpu pipeline with resident images, or init_memory: False (any pipeline)")


@dataclass
class DeepClusterV2Config:
    proj_hidden_dim: int = 2048  # official main_deepclusterv2.py: hidden_mlp 2048
    proj_output_dim: int = 128  # official: feat_dim 128
    # solo-learn's and the official default: three heads of 3000 clusters
    num_prototypes: list[int] = field(default_factory=lambda: [3000, 3000, 3000])
    temperature: float = 0.1  # solo-learn and official
    kmeans_iters: int = 10  # solo-learn and official: nmb_kmeans_iters
    # False: epoch 0 has no targets (solo-learn); True: the bank is filled by a pass over the
    # training data before epoch 0, which is clustered too (the official init_memory)
    init_memory: bool = False

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "temperature")
        check(len(self.num_prototypes) > 0 and all(k > 0 for k in self.num_prototypes),
              "num_prototypes", f"must be a non-empty list of cluster counts > 0, got "
              f"{self.num_prototypes}")
        check(self.kmeans_iters >= 0, "kmeans_iters", f"must be >= 0, got {self.kmeans_iters}")


@METHODS.register("deepclusterv2")
class DeepClusterV2(BaseMethod):
    Config = DeepClusterV2Config
    needs_dataset_indexes: ClassVar[bool] = True  # its targets are looked up by dataset index

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim)
        # bias-free, never trained: set to the centroids at each clustering (solo-learn's keys)
        self.prototypes = nn.ModuleList(nn.Linear(k.proj_output_dim, n, bias=False)
                                        for n in k.num_prototypes)
        with torch.no_grad():
            for proto in self.prototypes:
                proto.weight.copy_(F.normalize(proto.weight, dim=-1))
        self.prototypes.requires_grad_(False)
        self.memory_bank = MemoryBank(self, self.num_large_crops, k.proj_output_dim)
        # (heads, N) cluster of each dataset index, -1 unknown; sized at the first clustering
        self.register_buffer("assignments", torch.full((len(k.num_prototypes), 0), -1,
                                                       dtype=torch.long))
        # the epoch whose clustering ``assignments`` holds: a resume mid-epoch keeps it
        self.register_buffer("clustered_epoch", torch.full((1,), -1, dtype=torch.long))
        self.register_load_state_dict_pre_hook(self._fit_assignments)

    def _fit_assignments(self, module: nn.Module, state: dict[str, Tensor], prefix: str,
                         *args: Any) -> None:
        saved = state.get(f"{prefix}assignments")  # a checkpoint's table replaces the empty one
        if module is self and saved is not None and saved.shape != self.assignments.shape:
            self.assignments = self.assignments.new_empty(saved.shape)

    def project(self, feats: Tensor) -> Tensor:
        return F.normalize(self.projector(feats), dim=-1)

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        z = [self.project(f) for f in batch.feats]  # every crop, (B, D) each
        scores = [torch.stack([proto(zc) for zc in z]) for proto in self.prototypes]
        targets = assignments_of(self.assignments, batch.indexes)
        loss = deepclusterv2_loss(scores, targets, self.kwargs.temperature)
        if self.training and self.memory_bank.slots:
            self.memory_bank.write(batch.indexes, z[: self.num_large_crops])
        return loss, {"deepcluster_loss": loss.detach()}

    # ------------------------------------------------------------------------------------------
    # the clustering
    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def cluster_memory(self, dataset_size: int = 0) -> None:
        """k-means of the memory banks of all processes: ``assignments`` by dataset index
        (at least ``dataset_size`` long) and the prototypes set to the centroids. The centroids
        start from random rows of rank 0, drawn from the seed and the epoch, so a resumed run
        clusters as the uninterrupted one."""
        epoch = self.current_epoch if self._trainer is not None else 0
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        indexes, rows = self.memory_bank.filled()
        table, centroids = cluster_memory(indexes, rows, self.kwargs.num_prototypes,
                                          self.kwargs.kmeans_iters, dataset_size, generator)
        self.assignments = table
        for proto, center in zip(self.prototypes, centroids):
            proto.weight.copy_(center)

    @torch.no_grad()
    def cluster_batch(self, batch: EncodedBatch) -> None:
        """The bank replaced by this batch's large-crop projections, then clustered: the targets
        the method would train on if the batch were the whole epoch (outside a trainer)."""
        self.memory_bank.allocate(len(batch.indexes))
        self.memory_bank.rewind()
        self.memory_bank.write(batch.indexes, [self.project(f) for f in batch.feats])
        self.cluster_memory()

    @torch.no_grad()
    def fill_memory(self) -> None:
        """The bank filled by a pass over this epoch's training batches without gradient (the
        official init_memory); the batch-norm statistics update as in training."""
        limit = self.trainer.num_training_batches
        for step, batch in enumerate(second_pass(self.trainer.train_dataloader)):
            if step >= limit:
                break
            batch = self.trainer.strategy.batch_to_device(batch)
            encoded = self.encode_batch(batch)
            self.memory_bank.write(encoded.indexes,
                                   [self.project(f) for f in encoded.feats[: self.num_large_crops]])

    # ------------------------------------------------------------------------------------------
    # epoch hooks and checkpoints
    # ------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        super().on_train_start()
        loader = self.trainer.train_dataloader
        try:  # what one process sees in an epoch: solo-learn's len(loader) * batch_size
            slots = len(loader) * self.cfg.optimizer.batch_size
        except TypeError:  # a loader without a length
            slots = -(-self.train_dataset_size // self.trainer.world_size)
        self.memory_bank.allocate(slots)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        epoch = self.current_epoch
        if int(self.clustered_epoch) == epoch:
            return  # resumed inside this epoch: its assignments and bank pointer are restored
        self.memory_bank.rewind()
        if epoch == 0 and self.kwargs.init_memory:
            self.fill_memory()
            self.memory_bank.rewind()
        if epoch > 0 or self.kwargs.init_memory:
            self.cluster_memory(self.train_dataset_size)
        self.clustered_epoch.fill_(epoch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        self.memory_bank.gather_into(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.memory_bank.share_from(checkpoint)
        super().on_load_checkpoint(checkpoint)
