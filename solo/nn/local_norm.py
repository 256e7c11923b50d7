"""A batch norm whose statistics stay those of this process's batch, whatever sync_batchnorm says."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LocalBatchNorm1d(nn.Module):
    """``nn.BatchNorm1d(dim, affine=False)`` (same buffers, same state-dict keys) that is not a
    ``_BatchNorm``, so Lightning's ``sync_batchnorm`` leaves it alone: it normalizes with the
    statistics of the rows this process sees. TWIST's official last norm does so when each
    GPU's batch is one "bunch" (``--bunch-size`` = ``--batch-size``, its ResNet-50 recipe)."""

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training,
                            self.momentum, self.eps)
