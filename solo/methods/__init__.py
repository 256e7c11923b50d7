"""SSL methods. Adding one: a file with a registered class and its import line here."""

from solo.methods.all4one import All4One
from solo.methods.barlow_twins import BarlowTwins
from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.mae import MAE
from solo.methods.byol import BYOL
from solo.methods.deepclusterv2 import DeepClusterV2
from solo.methods.dino import DINO
from solo.methods.mocov1 import MoCoV1
from solo.methods.mocov2 import MoCoV2
from solo.methods.mocov2plus import MoCoV2Plus
from solo.methods.mocov3 import MoCoV3
from solo.methods.momentum import MomentumMethod
from solo.methods.nnbyol import NNBYOL
from solo.methods.nnclr import NNCLR
from solo.methods.nnsiam import NNSiam
from solo.methods.registry import METHODS
from solo.methods.ressl import ReSSL
from solo.methods.simclr import SimCLR
from solo.methods.simsiam import SimSiam
from solo.methods.supcon import SupCon
from solo.methods.swav import SwAV
from solo.methods.twist import TWIST
from solo.methods.vibcreg import VIbCReg
from solo.methods.vicreg import VICReg
from solo.methods.wmse import WMSE

__all__ = ["METHODS", "BaseMethod", "EncodedBatch", "MomentumMethod", "BYOL", "MoCoV1", "MoCoV2",
           "MoCoV2Plus", "DINO", "SimCLR", "ReSSL", "SupCon", "MoCoV3",
           "SimSiam", "NNSiam", "BarlowTwins", "VICReg", "VIbCReg", "WMSE",
           "NNCLR", "NNBYOL", "All4One", "DeepClusterV2", "MAE", "TWIST", "SwAV"]
