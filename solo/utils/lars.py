"""LARS: SGD with momentum and a per-tensor trust ratio (You et al. 2017, arXiv:1708.03888).

Each tensor's step is rescaled by the trust ratio of eq. 6, ``eta * ||p|| / (||g|| + wd * ||p||)``,
so that layers whose weights are large relative to their gradients move as fast as the others; this
is what lets SSL methods train with batches of thousands of images. The update is solo-learn's
(whose CIFAR and ImageNet accuracies our recipes reproduce), step for step.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import Tensor


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step for each tensor is scaled by the LARS trust ratio.

    For a tensor p with gradient g, when ``||p||`` and ``||g||`` are both non-zero::

        ratio = eta * ||p|| / (||g|| + weight_decay * ||p|| + eps)
        ratio = min(ratio / lr, 1)                # with clip_lr (LARC's "clip" mode)
        d = ratio * (g + weight_decay * p)

    and otherwise ``d = g``: a zero tensor (a fresh bias, a dead layer) or a zero gradient gets
    neither scaling nor weight decay. With ``exclude_bias_n_norm`` the 1-d tensors (biases and
    norm weights) also take ``d = g``. Then, as torch's SGD: ``buf = momentum * buf +
    (1 - dampening) * d`` (``buf = d`` at the first step), ``d = d + momentum * buf`` with
    nesterov else ``d = buf``, and ``p -= lr * d``. A param group with ``lars_adaptation: False``
    takes SGD's ``d = g + weight_decay * p`` for all its tensors.
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
        dampening: float = 0.0,
    ) -> None:
        if lr < 0:
            raise ValueError(f"LARS: lr must be >= 0, got {lr}")
        if momentum < 0:
            raise ValueError(f"LARS: momentum must be >= 0, got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"LARS: weight_decay must be >= 0, got {weight_decay}")
        if eta <= 0:
            raise ValueError(f"LARS: eta must be > 0, got {eta}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("LARS: nesterov needs momentum > 0 and dampening 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                        nesterov=nesterov, clip_lr=clip_lr, exclude_bias_n_norm=exclude_bias_n_norm,
                        eps=eps, dampening=dampening)
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

    def _directions(self, group: dict, params: list[Tensor]) -> list[Tensor]:
        """The step direction d of every tensor, before momentum; new tensors, p.grad untouched.

        Computed for all tensors at once with foreach ops and no value read back to the host."""
        lr, wd = group["lr"], group["weight_decay"]
        directions = [p.grad.clone() for p in params]
        if not group.get("lars_adaptation", True):  # a group the method keeps out of LARS
            if wd != 0:
                torch._foreach_add_(directions, params, alpha=wd)
            return directions
        adapted = [i for i, p in enumerate(params)
                   if not (group["exclude_bias_n_norm"] and p.ndim == 1)]
        if not adapted:
            return directions
        weights = [params[i] for i in adapted]
        p_norm = torch.stack(torch._foreach_norm(weights))
        g_norm = torch.stack(torch._foreach_norm([p.grad for p in weights]))
        ratio = group["eta"] * p_norm / (g_norm + wd * p_norm + group["eps"])
        if group["clip_lr"]:
            ratio = torch.clamp(ratio / lr, max=1.0) if lr > 0 else torch.ones_like(ratio)
        valid = (p_norm != 0) & (g_norm != 0)
        # d = scale * g + decay * p: ratio * (g + wd * p) where valid, g itself elsewhere
        scale = torch.where(valid, ratio, torch.ones_like(ratio))
        decay = torch.where(valid, ratio * wd, torch.zeros_like(ratio))
        adapted_directions = [directions[i] for i in adapted]
        torch._foreach_mul_(adapted_directions, list(scale.unbind()))
        if wd != 0:
            torch._foreach_add_(adapted_directions,
                                torch._foreach_mul(weights, list(decay.unbind())))
        return directions

    def _update_group(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        updates = self._directions(group, params)
        momentum = group["momentum"]
        if momentum != 0:
            bufs = []
            for p, u in zip(params, updates):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = u.clone()
                else:
                    state["momentum_buffer"].mul_(momentum).add_(u, alpha=1 - group["dampening"])
                bufs.append(state["momentum_buffer"])
            if group["nesterov"]:
                torch._foreach_add_(updates, bufs, alpha=momentum)
            else:
                updates = bufs
        torch._foreach_add_(params, updates, alpha=-group["lr"])
