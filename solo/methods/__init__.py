"""SSL methods. Adding one: a file with a registered class and its import line here."""

from solo.methods.base import BaseMethod, EncodedBatch
from solo.methods.byol import BYOL
from solo.methods.mocov2plus import MoCoV2Plus
from solo.methods.momentum import MomentumMethod
from solo.methods.registry import METHODS
from solo.methods.simclr import SimCLR

__all__ = ["METHODS", "BaseMethod", "EncodedBatch", "MomentumMethod", "BYOL", "MoCoV2Plus", "SimCLR"]
