"""Self-supervised losses as pure functions on tensors."""

from solo.losses.byol import byol_loss
from solo.losses.mocov2plus import moco_loss
from solo.losses.simclr import nt_xent_loss

__all__ = ["byol_loss", "moco_loss", "nt_xent_loss"]
