"""MAE's reconstruction loss: "Masked Autoencoders Are Scalable Vision Learners",
arXiv:2111.06377."""

from __future__ import annotations

from torch import Tensor


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, 3, H, W) -> (B, (H/p) * (W/p), p * p * 3): patches in row-major order, each patch's
    pixels row by row with the channels last (the official code's layout)."""
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"images of {height}x{width} do not split into {patch_size}-pixel patches")
    h, w = height // patch_size, width // patch_size
    x = images.reshape(batch, channels, h, patch_size, w, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, h * w, patch_size ** 2 * channels)


def mae_loss(images: Tensor, pred: Tensor, mask: Tensor, patch_size: int,
             norm_pix_loss: bool = False) -> Tensor:
    """Mean squared error between predicted and true pixels, over the masked patches only.

    images (B, 3, H, W); pred (B, L, p*p*3) in ``patchify``'s layout; mask (B, L), 1 where a patch
    was masked. With ``norm_pix_loss`` each target patch is standardized by its own mean and
    (unbiased) variance, (x - mean) / sqrt(var + 1e-6), the paper's better-performing target.
    The per-patch mean error is averaged over the masked patches of the whole batch.
    """
    target = patchify(images.float(), patch_size)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred.float() - target).pow(2).mean(dim=-1)  # (B, L)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum()
