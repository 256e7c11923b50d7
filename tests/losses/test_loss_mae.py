"""MAE's masking, patch layout and loss against references written from the paper's equations."""

from __future__ import annotations

import math

import pytest
import torch

from solo.backbones.vit_mae import mae_sincos_embedding
from solo.losses import mae_loss, patchify
from solo.nn import random_masking


def test_masking_removes_the_stated_fraction_per_sample_differently() -> None:
    generator = torch.Generator().manual_seed(0)
    keep, mask, restore = random_masking(8, 64, 0.75, generator=generator)
    assert keep.shape == (8, 16) and mask.shape == restore.shape == (8, 64)
    assert (mask.sum(1) == 48).all()  # exactly 75% of every image's patches
    assert len({tuple(row.tolist()) for row in mask}) == 8  # a different mask per image
    for row in range(8):  # the kept indices are exactly the unmasked patches
        assert sorted(keep[row].tolist()) == torch.nonzero(mask[row] == 0).flatten().tolist()
    # restore undoes the shuffle: the kept patches first, then the removed ones, back in order
    shuffled = torch.cat([keep, torch.nonzero(mask == 1)[:, 1].view(8, 48)], dim=1)
    order = shuffled.gather(1, restore)
    assert torch.equal(order.sort(1).values, torch.arange(64).expand(8, -1))
    # int(L * (1 - ratio)) patches kept, in floating point as the official code: 0.75 of 10 keeps 2
    assert (random_masking(3, 10, 0.75)[1].sum(1) == 8).all()


def test_patchify_layout() -> None:
    images = torch.randn(2, 3, 8, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 6, 48)
    for i in range(2):
        for j in range(3):  # patch i * 3 + j: its pixels row by row, channels last
            expected = images[:, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4].permute(0, 2, 3, 1)
            assert torch.equal(patches[:, i * 3 + j], expected.reshape(2, 48))
    with pytest.raises(ValueError, match="patches"):
        patchify(images, 5)


def reference_loss(images, pred, mask, p, norm_pix):
    """Per masked patch: the mean squared error to its (optionally standardized) pixels."""
    total, count = 0.0, 0
    batch, _, h, w = images.shape
    for b in range(batch):
        for k in range(mask.shape[1]):
            if mask[b, k] == 0:
                continue
            r, c = divmod(k, w // p)
            target = images[b, :, r * p:(r + 1) * p, c * p:(c + 1) * p].permute(1, 2, 0).flatten()
            if norm_pix:
                n = target.numel()
                mean = target.sum() / n
                var = ((target - mean) ** 2).sum() / (n - 1)  # unbiased, as the official code
                target = (target - mean) / math.sqrt(var + 1e-6)
            total += float(((pred[b, k] - target) ** 2).mean())
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_matches_the_equation(norm_pix: bool) -> None:
    torch.manual_seed(0)
    images, pred = torch.randn(3, 3, 8, 8) * 2 + 1, torch.randn(3, 4, 48)
    _, mask, _ = random_masking(3, 4, 0.5)
    loss = mae_loss(images, pred, mask, 4, norm_pix_loss=norm_pix)
    assert float(loss) == pytest.approx(reference_loss(images, pred, mask, 4, norm_pix), rel=1e-5)


def test_only_masked_patches_count() -> None:
    torch.manual_seed(0)
    images, pred = torch.randn(2, 3, 16, 16), torch.randn(2, 16, 48, requires_grad=True)
    _, mask, _ = random_masking(2, 16, 0.75)
    loss = mae_loss(images, pred, mask, 4, norm_pix_loss=True)
    visible = (mask == 0)[..., None]
    changed_visible = pred.detach() + 5.0 * visible
    assert torch.equal(mae_loss(images, changed_visible, mask, 4, norm_pix_loss=True), loss.detach())
    changed_masked = pred.detach() + 5.0 * ~visible
    assert not torch.allclose(mae_loss(images, changed_masked, mask, 4, True), loss.detach())
    loss.backward()  # and no gradient reaches a visible patch's prediction
    assert (pred.grad * visible).abs().sum() == 0 and (pred.grad * ~visible).abs().sum() > 0


def test_sincos_embedding_matches_the_equation() -> None:
    grid, dim = 3, 8
    table = mae_sincos_embedding(grid, dim)
    assert table.shape == (1, 1 + grid * grid, dim) and (table[0, 0] == 0).all()
    for k in range(grid * grid):
        row, col = divmod(k, grid)
        expected = []
        for position in (col, row):  # the column's code first, as the official meshgrid order
            omegas = [1 / 10000 ** (i / (dim / 4)) for i in range(dim // 4)]
            expected += [math.sin(position * o) for o in omegas]
            expected += [math.cos(position * o) for o in omegas]
        torch.testing.assert_close(table[0, 1 + k], torch.tensor(expected), rtol=0, atol=1e-6)
