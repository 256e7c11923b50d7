"""SupCon's loss: "Supervised Contrastive Learning", arXiv:2004.11362."""

from __future__ import annotations

import torch
from torch import Tensor

from solo.losses.simclr import nt_xent_loss


def supcon_loss(z: Tensor, labels: Tensor, indexes: Tensor, temperature: float = 0.1,
                check_positives: bool = True) -> Tensor:
    """Supervised NT-Xent: every other crop with the same label, on any process, is a positive.

    z (N, D) are this process's projections (crops concatenated crop by crop), labels (N,) their
    classes and indexes (N,) their image ids. Per anchor i, with s the cosine similarities,

        -log( sum over positives p of exp(s_ip / T) / sum over all a != i of exp(s_ia / T) )

    (solo-learn's objective: the sum of the positives inside the log, the paper's L_in form up to
    a constant), averaged over anchors, the rows gathered from every process with gradient. An
    unlabelled row (label -1) is no positive of another unlabelled row: its positives are the
    other crops of its own image, SimCLR's, and it is a negative of everything else.
    ``check_positives``: as in ``nt_xent_loss``.
    """
    labels = labels.to(indexes.device)
    # one id per positive set: the class, or, unlabelled, -1 - the image id (never a class)
    ids = torch.where(labels >= 0, labels, -1 - indexes)
    return nt_xent_loss(z, ids, temperature, check_positives)
