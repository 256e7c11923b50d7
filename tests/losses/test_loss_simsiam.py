"""SimSiam's negative cosine against a loop; the stop-gradient; its range."""

from __future__ import annotations

import math

import torch

from solo.losses import simsiam_loss


def reference(p: torch.Tensor, z: torch.Tensor) -> float:
    """-(1/B) sum_i p_i . z_i / (|p_i| |z_i|), the paper's D(p, z) averaged."""
    total = 0.0
    for pi, zi in zip(p.tolist(), z.tolist()):
        dot = sum(a * b for a, b in zip(pi, zi))
        total += -dot / math.sqrt(sum(a * a for a in pi) * sum(b * b for b in zi))
    return total / len(p)


def test_matches_the_loop_reference_and_its_range() -> None:
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    assert abs(simsiam_loss(p, z).item() - reference(p, z)) < 1e-6
    torch.testing.assert_close(simsiam_loss(p, 2.5 * p), torch.tensor(-1.0))
    torch.testing.assert_close(simsiam_loss(p, -p), torch.tensor(1.0))
    torch.testing.assert_close(simsiam_loss(4 * p, 0.1 * z), simsiam_loss(p, z))  # scale-free


def test_stop_gradient_and_float32() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.randn(4, 3, generator=g).requires_grad_(True)
    z = torch.randn(4, 3, generator=g).requires_grad_(True)
    loss = simsiam_loss(p.bfloat16(), z.bfloat16())
    assert loss.dtype == torch.float32
    loss.backward()
    assert z.grad is None and (p.grad.norm(dim=1) > 0).all()
