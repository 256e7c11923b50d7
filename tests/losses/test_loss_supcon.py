"""SupCon's loss against a loop over its equation (arXiv:2004.11362, eq. 3, with the positives'
sum inside the log as solo-learn computes it), and on two processes."""

from __future__ import annotations

import math

import torch

from solo.losses import nt_xent_loss, supcon_loss
from tests.multiprocess import run_processes


def reference(z: torch.Tensor, labels: torch.Tensor, indexes: torch.Tensor, t: float) -> float:
    """Every row an anchor: -log(sum over positives of exp(s/T) / sum over all other rows of
    exp(s/T)). Positives: other rows with the same label; for an unlabelled row (-1), the other
    crops of its own image."""
    rows = [[a / math.sqrt(sum(b * b for b in r)) for a in r] for r in z.tolist()]
    ys, ids = labels.tolist(), indexes.tolist()
    total = 0.0
    for i, anchor in enumerate(rows):
        sims = {j: sum(a * b for a, b in zip(anchor, r)) / t for j, r in enumerate(rows) if j != i}
        if ys[i] >= 0:
            positive = [j for j in sims if ys[j] == ys[i]]
        else:
            positive = [j for j in sims if ids[j] == ids[i]]
        total += -math.log(sum(math.exp(sims[j]) for j in positive)
                           / sum(math.exp(s) for s in sims.values()))
    return total / len(rows)


def batch(seed: int, images: int = 8, crops: int = 2, dim: int = 5, classes: int = 3,
          unlabelled: int = 0):
    """Crops concatenated crop by crop; the last ``unlabelled`` images have label -1."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(crops * images, dim, generator=g)
    labels = torch.randint(classes, (images,), generator=g)
    labels[images - unlabelled:] = -1
    return z, labels.repeat(crops), torch.arange(images).repeat(crops)


def test_matches_the_loop_reference() -> None:
    for crops in (2, 3):
        z, labels, indexes = batch(0, crops=crops)
        for t in (0.1, 0.5):
            assert abs(supcon_loss(z, labels, indexes, t).item()
                       - reference(z, labels, indexes, t)) < 1e-5


def test_one_image_per_label_is_simclr() -> None:
    z, _, indexes = batch(1)
    assert torch.allclose(supcon_loss(z, indexes * 10, indexes, 0.2),
                          nt_xent_loss(z, indexes, 0.2), atol=1e-6)


def test_unlabelled_rows_are_not_positives_of_each_other() -> None:
    z, labels, indexes = batch(2, unlabelled=3)
    loss = supcon_loss(z, labels, indexes, 0.2)
    assert abs(loss.item() - reference(z, labels, indexes, 0.2)) < 1e-5
    # treating -1 as a class (what a plain label mask would do) gives another value
    assert abs(loss.item() - nt_xent_loss(z, labels, 0.2).item()) > 1e-3


def test_invariant_to_permuting_the_rows() -> None:
    z, labels, indexes = batch(3, crops=3, unlabelled=2)
    perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(4))
    assert torch.allclose(supcon_loss(z[perm], labels[perm], indexes[perm]),
                          supcon_loss(z, labels, indexes), atol=1e-6)


def test_gradient_reaches_every_row() -> None:
    z, labels, indexes = batch(5)
    z.requires_grad_(True)
    supcon_loss(z, labels, indexes).backward()
    assert (z.grad.norm(dim=1) > 0).all()


# --- two gloo processes --------------------------------------------------------------------------
def _halves(rank: int, z: torch.Tensor, labels: torch.Tensor, indexes: torch.Tensor):
    """Rank r's share: both crops of images [r * B/2, (r + 1) * B/2)."""
    images = len(z) // 2
    mine = torch.arange(rank * images // 2, (rank + 1) * images // 2)
    rows = torch.cat([mine, mine + images])
    return rows, z[rows], labels[rows], indexes[rows]


def _two_process_loss(rank: int, world: int, z, labels, indexes, t: float):
    rows, local, local_labels, local_indexes = _halves(rank, z, labels, indexes)
    local = local.clone().requires_grad_(True)
    loss = supcon_loss(local, local_labels, local_indexes, t)
    loss.backward()
    return rows, loss.detach(), local.grad


def test_two_processes_equal_one_on_the_global_batch() -> None:
    t = 0.3
    z, labels, indexes = batch(6, images=8, unlabelled=2)
    results = run_processes(_two_process_loss, z, labels, indexes, t)
    full = z.clone().requires_grad_(True)
    full_loss = supcon_loss(full, labels, indexes, t)
    full_loss.backward()
    # DDP averages the processes' gradients: the mean loss and the gradient / world
    assert torch.allclose(torch.stack([r[1] for r in results]).mean(), full_loss.detach(),
                          atol=1e-6)
    for rows, _, grad in results:
        assert torch.allclose(grad / 2, full.grad[rows], atol=1e-6)
