import math

import torch

from solo.losses import byol_loss


def reference_byol(p: torch.Tensor, z: torch.Tensor) -> float:
    total = 0.0
    for pi, zi in zip(p.tolist(), z.tolist()):
        dot = sum(a * b for a, b in zip(pi, zi))
        norm_p = math.sqrt(sum(a * a for a in pi))
        norm_z = math.sqrt(sum(b * b for b in zi))
        total += 2 - 2 * dot / (norm_p * norm_z)
    return total / len(p)


def test_same_direction_is_zero_and_opposite_is_four() -> None:
    p = torch.tensor([[1.0, 2.0, -3.0]])
    assert abs(byol_loss(p, 5 * p).item()) < 1e-6
    assert abs(byol_loss(p, -0.5 * p).item() - 4.0) < 1e-6


def test_hand_computed_batch() -> None:
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[1.0, 1.0], [-3.0, 0.0], [0.0, 7.0]])
    # 45 degrees: 2 - sqrt(2); opposite: 4; same: 0
    expected = (2 - math.sqrt(2) + 4 + 0) / 3
    assert abs(byol_loss(p, z).item() - expected) < 1e-6


def test_matches_loop_reference_and_batch_permutation() -> None:
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    loss = byol_loss(p, z)
    assert abs(loss.item() - reference_byol(p, z)) < 1e-5
    perm = torch.randperm(16, generator=g)
    assert torch.allclose(byol_loss(p[perm], z[perm]), loss, atol=1e-6)


def test_gradient_flows_into_p_only() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.randn(4, 5, generator=g, requires_grad=True)
    z = torch.randn(4, 5, generator=g, requires_grad=True)
    byol_loss(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None


def test_half_precision_inputs_give_float32_loss() -> None:
    g = torch.Generator().manual_seed(2)
    p, z = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    loss = byol_loss(p.bfloat16(), z.bfloat16())
    assert loss.dtype == torch.float32
    assert abs(loss.item() - reference_byol(p.bfloat16().float(), z.bfloat16().float())) < 1e-5
