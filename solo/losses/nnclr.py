"""NNCLR's loss: "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations", arXiv:2104.14548.

The positive of a prediction is the nearest neighbour, in a support queue of past normalized
projections, of the other view's projection; as in solo-learn, the predictions are gathered
from every process (with gradient) and the neighbours stay local.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from solo.utils.distributed import gather_with_grad, gathered_rows
from solo.utils.precision import full_float32


def nnclr_loss(nn: Tensor, p: Tensor, temperature: float = 0.1) -> Tensor:
    """InfoNCE of each neighbour nn (B, D) against every process's predictions p (B, D): row i's
    positive is its own image's prediction p_i, the other predictions of the global batch its
    negatives (the paper's eq. 2). Both are L2-normalized; the mean over local rows.

    p is gathered with gradient (solo-learn's choice, "to be consistent with SimCLR"); nn is not
    (a queue row in NNCLR, but All4One's attention term passes an embedding with gradient).
    Every process must pass the same B.
    """
    # float32: logits of 1/T ~ 5-10 in half precision make the softmax inaccurate
    nn = F.normalize(nn.float(), dim=-1)
    p = F.normalize(p.float(), dim=-1)
    all_p = gather_with_grad(p)  # (world * B, D)
    with full_float32(nn.device.type):
        logits = nn @ all_p.T / temperature  # (B, world * B)
    # this process's predictions sit at [rank * B, (rank + 1) * B) of the gathered tensor
    targets = gathered_rows(len(nn), nn.device)
    return F.cross_entropy(logits, targets)
