"""W-MSE: Whitening for Self-Supervised Representation Learning (Ermolov et al.,
arXiv:2007.06346).

No negatives: the embeddings of each view are whitened (Cholesky) in random sub-batches, which
scatters them on the sphere, and every pair of large crops is pulled together by the MSE of the
normalized whitened embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from solo.config import check, check_positive
from solo.losses import wmse_loss
from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.registry import METHODS
from solo.nn import mlp


@dataclass
class WMSEConfig:
    proj_hidden_dim: int = 1024  # paper, section 5; solo-learn's recipes
    proj_output_dim: int = 64  # paper (CIFAR); solo-learn's recipes
    whitening_size: int = 256  # solo-learn's default (its recipes: 128, the paper's CIFAR value)
    whitening_iters: int = 1  # solo-learn's default (paper: 1 on CIFAR)
    whitening_eps: float = 0.0  # solo-learn's default: no shrinkage of the covariance

    def __post_init__(self) -> None:
        check_positive(self, "proj_hidden_dim", "proj_output_dim", "whitening_iters")
        check(0 <= self.whitening_eps < 1, "whitening_eps",
              f"must be in [0, 1), got {self.whitening_eps}")
        # a covariance of n embeddings has rank n - 1 at most: below the width it is singular
        check(self.whitening_eps > 0 or self.whitening_size > self.proj_output_dim,
              "whitening_size", f"must exceed proj_output_dim ({self.proj_output_dim}) for the "
              f"sub-batch covariance to be invertible, got {self.whitening_size}; or set "
              "whitening_eps > 0")
        check(self.whitening_size >= 2, "whitening_size",
              f"must be >= 2, got {self.whitening_size}")


@METHODS.register("wmse")
class WMSE(BaseMethod):
    Config = WMSEConfig

    def __init__(self, cfg, backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        self.require_crops(large=2, at_least=True)
        k = self.kwargs
        # Linear-BN-ReLU-Linear, solo-learn's projector.0 ... projector.3 (its whitening module
        # has no state)
        self.projector = mlp(self.num_features, k.proj_hidden_dim, k.proj_output_dim)

    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        # every pair of large crops, as solo-learn; small crops are not projected
        views = [self.projector(f) for f in batch.feats[: self.num_large_crops]]
        k = self.kwargs
        loss = wmse_loss(views, k.whitening_size, k.whitening_iters, k.whitening_eps,
                         check_singular=self.checks_inputs)
        return loss, {}
