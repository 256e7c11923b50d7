"""MoCo v1: Momentum Contrast for Unsupervised Visual Representation Learning (He et al.,
arXiv:1911.05722), as the official code (facebookresearch/moco) runs it.

One direction: the query of view 1 (online encoder) against the key of view 2 (momentum encoder,
computed on a batch shuffled across processes: Shuffle BN) and a queue of past keys; a linear head.
``split_bn`` imitates N processes' batch norm on one (the authors' CIFAR-10 demo).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from solo.config import ConfigError, check, check_positive
from solo.losses import moco_loss
from solo.methods.base import EncodedBatch
from solo.methods.momentum import MomentumMethod
from solo.methods.registry import METHODS
from solo.nn.split_batchnorm import convert_split_batchnorm
from solo.utils.distributed import batch_shuffle, batch_unshuffle, world_size


@dataclass
class MoCoV1Config:
    proj_output_dim: int = 128  # official main_moco.py --moco-dim
    temperature: float = 0.07  # official --moco-t
    queue_size: int = 65536  # official --moco-k
    shuffle_bn: bool = True  # official: keys from a batch shuffled across GPUs (paper, sec. 3.3)
    split_bn: int = 1  # BN sub-batches per process; the CIFAR demo's --bn-splits is 8

    def __post_init__(self) -> None:
        check_positive(self, "proj_output_dim", "temperature", "queue_size", "split_bn")


@METHODS.register("mocov1")
class MoCoV1(MomentumMethod):
    Config = MoCoV1Config

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        k = self.kwargs
        self.require_crops(large=2)
        if k.split_bn > 1:
            self._split_batch_norm(k.split_bn)
        self.projector = self.build_projector()
        self.momentum_projector = self.momentum_copy("projector")
        self.key_queue = self.add_queue(k.queue_size, k.proj_output_dim, keys_last=True)  # (D, K)

    def build_projector(self) -> nn.Module:
        """v1's head: the ResNet's fc replaced by a Linear to proj_output_dim."""
        return nn.Linear(self.num_features, self.kwargs.proj_output_dim)

    def _split_batch_norm(self, splits: int) -> None:
        batch_size = self.cfg.optimizer.batch_size
        check(batch_size % splits == 0, "method_kwargs.split_bn",
              f"{splits} does not divide optimizer.batch_size {batch_size}")
        check(not self.cfg.trainer.get("sync_batchnorm", False), "method_kwargs.split_bn",
              "split batch norm and sync_batchnorm: True exclude each other")
        for net in (self.backbone, self.momentum_backbone):
            if isinstance(net, nn.Module) and convert_split_batchnorm(net, splits) == 0:
                raise ConfigError(f"method_kwargs.split_bn: {splits} > 1, but the backbone has "
                                  "no nn.BatchNorm2d to split")

    def online_crops(self, crops: list[Tensor]) -> list[Tensor]:
        return crops[:1]  # the query view

    def encode_momentum(self, crops: list[Tensor]) -> list[Tensor]:
        key_view = crops[1]
        # a local shuffle changes nothing unless the batch norm is split
        if not (self.kwargs.shuffle_bn and (world_size() > 1 or self.kwargs.split_bn > 1)):
            return self.encode_crops([key_view], self.momentum_backbone)
        shuffled, unshuffle = batch_shuffle(key_view)
        keys = self.encode_crops([shuffled], self.momentum_backbone)[0]
        return [batch_unshuffle(keys, unshuffle)]

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        query = self.projector(batch.feats[0])
        key = F.normalize(self.momentum_projector(batch.momentum_feats[0]), dim=-1)
        queue = self.key_queue.keys.clone()  # (D, K), before this step's keys join it
        loss = moco_loss(query, key, queue, self.kwargs.temperature)
        self.key_queue.push(key)  # every process's keys, in rank order
        return loss, {}
