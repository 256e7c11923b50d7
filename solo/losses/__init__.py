"""Self-supervised losses as pure functions on tensors."""

from solo.losses.all4one import redundancy_loss
from solo.losses.barlow_twins import barlow_loss
from solo.losses.byol import byol_loss
from solo.losses.deepclusterv2 import deepclusterv2_loss
from solo.losses.mae import mae_loss, patchify
from solo.losses.dino import DINOLoss, dino_loss, target_entropy, teacher_targets, updated_center
from solo.losses.mocov2plus import moco_loss
from solo.losses.mocov3 import mocov3_loss
from solo.losses.nnclr import nnclr_loss
from solo.losses.ressl import relation_entropy, ressl_loss
from solo.losses.simclr import nt_xent_loss
from solo.losses.simsiam import simsiam_loss
from solo.losses.supcon import supcon_loss
from solo.losses.swav import local_share, sinkhorn_codes, swav_loss
from solo.losses.twist import self_label_loss, twist_loss
from solo.losses.vibcreg import vibcreg_loss
from solo.losses.vicreg import vicreg_loss
from solo.losses.wmse import wmse_loss

__all__ = ["barlow_loss", "byol_loss", "deepclusterv2_loss", "mae_loss", "patchify",
           "dino_loss", "DINOLoss", "updated_center", "teacher_targets", "target_entropy",
           "moco_loss", "mocov3_loss", "nnclr_loss", "nt_xent_loss",
           "redundancy_loss", "relation_entropy", "ressl_loss", "simsiam_loss", "supcon_loss",
           "vibcreg_loss", "vicreg_loss", "wmse_loss", "twist_loss", "self_label_loss",
           "local_share", "sinkhorn_codes", "swav_loss"]
