"""IterNorm: "Iterative Normalization: Beyond Standardization towards Efficient Whitening"
(Huang et al., arXiv:1904.03441), VIbCReg's last projector layer.

Group whitening by Newton's iteration: the features are split into groups, and each group's
covariance Sigma, normalized by its trace, is inverted to the power 1/2 by T steps of
P <- (3 P - P^3 Sigma_N) / 2 from P = I, which converge to Sigma_N^-1/2 (ZCA whitening). The
module names, buffers (``running_mean``, ``running_wm``) and their shapes are solo-learn's, so its
VIbCReg checkpoints load whole; the gradient is autograd's through the same iteration.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def group_sizes(num_features: int, num_groups: int,
                num_channels: int | None = None) -> tuple[int, int]:
    """(groups, channels per group) as solo-learn picks them: ceil(num_features / num_groups)
    channels, halved until they divide num_features."""
    if num_channels is None:
        num_channels = (num_features - 1) // num_groups + 1
    while num_features % num_channels:
        num_channels //= 2
    return num_features // num_channels, num_channels


def newton_whitening_matrix(sigma: Tensor, iterations: int) -> Tensor:
    """Approximately sigma^-1/2 for a batch (G, C, C) of covariances, by ``iterations`` Newton
    steps on the trace-normalized matrix."""
    eye = torch.eye(sigma.size(-1), dtype=sigma.dtype, device=sigma.device).expand_as(sigma)
    inv_trace = 1 / sigma.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]  # (G, 1, 1)
    sigma_n = sigma * inv_trace
    p = eye
    for _ in range(iterations):
        p = 1.5 * p - 0.5 * torch.linalg.matrix_power(p, 3) @ sigma_n
    return p * inv_trace.sqrt()


class IterNorm(nn.Module):
    """Whitening of (N, num_features[, ...]) inputs over the batch (and any spatial dims) in
    groups of ``num_channels``; running estimates (``momentum``) of the mean and of the whitening
    matrix are used in eval mode; then a per-feature affine map when ``affine``."""

    def __init__(self, num_features: int, num_groups: int = 64, num_channels: int | None = None,
                 T: int = 5, dim: int = 2, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True) -> None:
        super().__init__()
        self.num_features, self.T, self.dim = num_features, T, dim
        self.eps, self.momentum, self.affine = eps, momentum, affine
        self.num_groups, self.num_channels = group_sizes(num_features, num_groups, num_channels)
        shape = [1] * dim
        shape[1] = num_features
        if affine:
            self.weight = nn.Parameter(torch.ones(shape))
            self.bias = nn.Parameter(torch.zeros(shape))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        g, c = self.num_groups, self.num_channels
        self.register_buffer("running_mean", torch.zeros(g, c, 1))
        self.register_buffer("running_wm", torch.eye(c).expand(g, c, c).clone())  # whitening matrix

    def forward(self, x: Tensor) -> Tensor:
        """The whitened x; half-precision inputs are whitened (and returned) in float32."""
        with torch.autocast(x.device.type, enabled=False):  # Newton's iteration needs float32
            if x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()
            # (N, F, ...) -> (G, C, N * ...)
            grouped = x.transpose(0, 1).reshape(self.num_groups, self.num_channels, -1)
            if self.training:
                mean = grouped.mean(-1, keepdim=True)
                centred = grouped - mean
                eye = torch.eye(self.num_channels, dtype=x.dtype, device=x.device)
                sigma = self.eps * eye + centred @ centred.transpose(1, 2) / centred.size(-1)
                wm = newton_whitening_matrix(sigma, self.T)
                with torch.no_grad():
                    self.running_mean.lerp_(mean, self.momentum)
                    self.running_wm.lerp_(wm, self.momentum)
            else:
                centred, wm = grouped - self.running_mean, self.running_wm
            out = (wm @ centred).reshape(x.size(1), x.size(0), *x.shape[2:]).transpose(0, 1)
            if self.affine:
                out = out * self.weight + self.bias
        return out

    def extra_repr(self) -> str:
        return (f"{self.num_features}, num_groups={self.num_groups}, "
                f"num_channels={self.num_channels}, T={self.T}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}")
