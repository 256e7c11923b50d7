"""IterNorm (arXiv:1904.03441), VIbCReg's last projector layer: solo-learn's group sizes and
buffers, Newton's iteration against the ZCA whitening computed by an eigendecomposition, the
running estimates used in eval mode, and autograd's gradient against finite differences."""

from __future__ import annotations

import torch

from solo.nn import IterNorm
from solo.nn.iternorm import group_sizes


def zca(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """Each group of features of x (N, F) centred and multiplied by Sigma^-1/2 (eigh), Sigma the
    biased covariance plus eps I."""
    out = []
    for part in x.chunk(groups, dim=1):
        xc = part - part.mean(0)
        sigma = xc.T @ xc / len(x) + eps * torch.eye(part.size(1), dtype=x.dtype)
        values, vectors = torch.linalg.eigh(sigma)
        out.append(xc @ (vectors @ torch.diag(values.rsqrt()) @ vectors.T))
    return torch.cat(out, dim=1)


def test_group_sizes_and_buffers_are_solo_learns() -> None:
    assert group_sizes(2048, 64) == (64, 32)
    assert group_sizes(100, 64) == (50, 2)  # ceil(100 / 64) = 2 channels
    assert group_sizes(100, 32) == (25, 4)  # 4 channels divide 100
    assert group_sizes(99, 64) == (99, 1)  # 2 channels do not divide 99: halved to 1
    norm = IterNorm(2048, num_groups=64, T=5, dim=2)
    shapes = {k: tuple(v.shape) for k, v in norm.state_dict().items()}
    assert shapes == {"weight": (1, 2048), "bias": (1, 2048), "running_mean": (64, 32, 1),
                      "running_wm": (64, 32, 32)}


def test_newton_iteration_converges_to_zca_whitening() -> None:
    g = torch.Generator().manual_seed(0)
    mix = torch.eye(8) + 0.3 * torch.randn(8, 8, generator=g)
    x = (torch.randn(256, 8, generator=g) @ mix).double()
    # groups of 4; 12 steps converge in float64 (many more would not: the uncoupled Newton
    # iteration amplifies rounding errors, which is why it is run for few steps)
    norm = IterNorm(8, num_groups=2, T=12).double()
    out = norm(x)
    torch.testing.assert_close(out, zca(x, 2, norm.eps), rtol=1e-6, atol=1e-6)
    for part in out.chunk(2, dim=1):
        torch.testing.assert_close(part.T @ part / len(x), torch.eye(4, dtype=x.dtype),
                                   rtol=1e-4, atol=1e-4)
    # solo-learn's 5 steps already whiten a well-conditioned group closely
    five = IterNorm(8, num_groups=2, T=5).double()(x)
    cov = five[:, :4].T @ five[:, :4] / len(x)
    assert (cov - torch.eye(4, dtype=x.dtype)).abs().max() < 0.1


def test_eval_uses_the_running_estimates() -> None:
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    norm = IterNorm(8, num_groups=2, T=5, momentum=1.0)  # the estimates become the last batch's
    train_out = norm(x)
    assert not torch.equal(norm.running_wm, torch.eye(4).expand(2, 4, 4))
    torch.testing.assert_close(norm.eval()(x), train_out, rtol=1e-5, atol=1e-5)


def test_gradient_is_exact() -> None:
    norm = IterNorm(6, num_groups=2, T=3).double()
    x = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: norm(t), (x,))
