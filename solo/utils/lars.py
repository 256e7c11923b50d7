"""LARS: SGD with momentum and a per-tensor trust ratio (You et al. 2017, arXiv:1708.03888).

Each tensor's step is rescaled by ``eta * ||p|| / ||g + wd * p||`` so that layers whose weights are
large relative to their gradients move as fast as the others; this is what lets SSL methods train
with batches of thousands of images.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import Tensor


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step for each tensor is scaled by the LARS trust ratio.

    ``clip_lr`` uses ``min(trust_ratio / lr, 1)`` instead (LARC's "clip" mode, as in solo-learn),
    so the adaptation can only slow a tensor down. ``exclude_bias_n_norm`` gives tensors with
    ``ndim <= 1`` (biases, norm weights) neither adaptation nor weight decay; a param group with
    ``"lars_exclude": True`` skips adaptation for all its tensors but keeps its weight decay.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 1e-3,
        nesterov: bool = False,
        clip_lr: bool = False,
        exclude_bias_n_norm: bool = False,
        eps: float = 1e-8,
    ) -> None:
        if lr < 0:
            raise ValueError(f"LARS: lr must be >= 0, got {lr}")
        if momentum < 0:
            raise ValueError(f"LARS: momentum must be >= 0, got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"LARS: weight_decay must be >= 0, got {weight_decay}")
        if eta <= 0:
            raise ValueError(f"LARS: eta must be > 0, got {eta}")
        if nesterov and momentum == 0:
            raise ValueError("LARS: nesterov needs momentum > 0")
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, nesterov=nesterov,
            clip_lr=clip_lr, exclude_bias_n_norm=exclude_bias_n_norm, eps=eps, lars_exclude=False,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._update_group(group)
        return loss

    def _update_group(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        lr, wd = group["lr"], group["weight_decay"]
        # biases and norm weights: plain SGD-momentum, no decay (decaying them hurts accuracy)
        plain = [group["exclude_bias_n_norm"] and p.ndim <= 1 for p in params]
        adapt = [not skip and not group["lars_exclude"] for skip in plain]

        # the update direction g + wd * p, in new tensors so p.grad is left as it was
        updates = [p.grad.clone() for p in params]
        decayed = [i for i, skip in enumerate(plain) if not skip]
        if wd != 0 and decayed:
            torch._foreach_add_([updates[i] for i in decayed], [params[i] for i in decayed],
                                alpha=wd)

        adapted = [i for i, yes in enumerate(adapt) if yes]
        if adapted:
            p_norm = torch.stack(torch._foreach_norm([params[i] for i in adapted]))
            g_norm = torch.stack(torch._foreach_norm([params[i].grad for i in adapted]))
            u_norm = torch.stack(torch._foreach_norm([updates[i] for i in adapted]))
            ratio = group["eta"] * p_norm / (u_norm + group["eps"])
            if group["clip_lr"]:
                ratio = torch.clamp(ratio / lr, max=1.0)
            # a zero tensor (fresh bias, dead layer) or zero gradient has no scale to adapt to
            ratio = torch.where((p_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
            torch._foreach_mul_([updates[i] for i in adapted], list(ratio.unbind()))

        momentum = group["momentum"]
        if momentum != 0:
            bufs = []
            for p, u in zip(params, updates):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = u.clone()
                else:
                    state["momentum_buffer"].mul_(momentum).add_(u)
                bufs.append(state["momentum_buffer"])
            if group["nesterov"]:
                torch._foreach_add_(updates, bufs, alpha=momentum)
            else:
                updates = bufs
        torch._foreach_add_(params, updates, alpha=-lr)
