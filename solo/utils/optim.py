"""Parameter groups, the optimizer built from an ``OptimizerConfig``, and linear lr scaling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch

from solo.config import ConfigError, OptimizerConfig
from solo.utils.lars import LARS
from solo.utils.registry import did_you_mean


def param_groups(named_groups: list[dict], exclude_bias_n_norm_wd: bool) -> list[dict]:
    """Turn ``{"name", "params", ...}`` groups into optimizer param groups.

    ``params`` may hold tensors or ``(name, tensor)`` pairs. Frozen tensors are dropped. With
    ``exclude_bias_n_norm_wd`` each group is split into ``name`` (ndim > 1) and ``name_no_wd``
    (biases and norm weights, weight decay 0). Other keys (lr, weight_decay, ...) are kept; groups
    left empty are dropped.
    """
    out = []
    for group in named_groups:
        params = [p[1] if isinstance(p, tuple) else p for p in group["params"]]
        params = [p for p in params if p.requires_grad]
        extra = {k: v for k, v in group.items() if k != "params"}
        if not exclude_bias_n_norm_wd:
            out.append({**extra, "params": params})
            continue
        name = group.get("name", "group")
        out.append({**extra, "params": [p for p in params if p.ndim > 1]})
        out.append({**extra, "name": f"{name}_no_wd", "weight_decay": 0.0,
                    "params": [p for p in params if p.ndim <= 1]})
    return [g for g in out if g["params"]]


@dataclass(frozen=True)
class _OptimizerSpec:
    cls: type[torch.optim.Optimizer]
    defaults: dict[str, Any]  # every kwarg a config may set, with the value used when it does not


_OPTIMIZERS: dict[str, _OptimizerSpec] = {
    # momentum 0.9: the value every SSL recipe in solo-learn uses
    "sgd": _OptimizerSpec(torch.optim.SGD, {"momentum": 0.9, "nesterov": False, "dampening": 0.0}),
    # solo-learn's LARS defaults; its configs turn on clip_lr and exclude_bias_n_norm explicitly
    "lars": _OptimizerSpec(LARS, {"momentum": 0.9, "eta": 1e-3, "clip_lr": False,
                                  "exclude_bias_n_norm": False, "nesterov": False, "eps": 1e-8,
                                  "dampening": 0.0}),
    "adam": _OptimizerSpec(torch.optim.Adam, {"betas": (0.9, 0.999), "eps": 1e-8,
                                              "amsgrad": False}),
    "adamw": _OptimizerSpec(torch.optim.AdamW, {"betas": (0.9, 0.999), "eps": 1e-8,
                                                "amsgrad": False}),
}


def check_optimizer_kwargs(cfg: OptimizerConfig) -> None:
    """Reject an unknown kwarg of ``cfg.name``, naming it and the valid ones (a ConfigError).

    The name itself is checked by OptimizerConfig against ``solo.config.OPTIMIZERS``, which lists
    the keys of ``_OPTIMIZERS`` (a test keeps the two equal).
    """
    valid = _OPTIMIZERS[cfg.name].defaults
    for key in sorted(set(cfg.kwargs) - set(valid)):
        raise ConfigError(f"unknown key 'optimizer.kwargs.{key}'{did_you_mean(key, valid)} for "
                          f"optimizer '{cfg.name}'; valid kwargs: {', '.join(valid)}")


@dataclass(frozen=True)
class GroupOptions:
    """How the optimizer treats one module's parameters, declared by the method that owns it.

    ``lr`` is a base lr for a global batch of 256 (scaled like ``optimizer.lr``; None: the
    optimizer's). ``fixed_lr`` keeps the group at its starting lr whatever the scheduler does
    (SimSiam's predictor, solo-learn's ``static_lr``). ``lars_adaptation: False`` gives the group
    plain SGD steps under LARS (with its weight decay). ``weight_decay`` overrides
    ``optimizer.weight_decay`` (0: none). ``scaled: False`` takes ``lr`` as the run's lr, not
    scaled with the batch or gradient accumulation (solo-learn's All4One transformer: 0.1).
    """

    lr: Optional[float] = None
    fixed_lr: bool = False
    lars_adaptation: bool = True
    weight_decay: Optional[float] = None
    scaled: bool = True

    def group_keys(self, scale_lr: Callable[[float], float]) -> dict[str, Any]:
        """The keys these options add to a param group; ``scale_lr`` maps a base lr to the
        run's."""
        keys: dict[str, Any] = {}
        if self.lr is not None:
            keys["lr"] = scale_lr(self.lr) if self.scaled else self.lr
        if self.weight_decay is not None:
            keys["weight_decay"] = self.weight_decay
        if not self.lars_adaptation:
            keys["lars_adaptation"] = False
        if self.fixed_lr:
            keys["fixed_lr"] = True
        return keys


def build_optimizer(cfg: OptimizerConfig, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """Build ``cfg.name`` over ``groups`` with base lr ``lr`` and ``cfg.weight_decay``.

    Groups keep their own lr/weight_decay when they set one. ``cfg.kwargs`` override the
    optimizer's defaults; an unknown kwarg raises a ConfigError. Groups marked ``fixed_lr``
    remember their starting lr (see ``restore_fixed_lrs``).
    """
    check_optimizer_kwargs(cfg)
    spec = _OPTIMIZERS[cfg.name]
    kwargs = {**spec.defaults, **cfg.kwargs}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])  # YAML gives a list
    resolved = []
    for group in groups:
        group = dict(group)
        if group.get("fixed_lr") is True:
            group["fixed_lr"] = group.get("lr", lr)  # the value the schedule may not change
        resolved.append(group)
    return spec.cls(resolved, lr=lr, weight_decay=cfg.weight_decay, **kwargs)


def restore_fixed_lrs(optimizer: torch.optim.Optimizer) -> None:
    """Put every ``fixed_lr`` group back to its starting lr (after a scheduler moved it)."""
    for group in optimizer.param_groups:
        if group.get("fixed_lr") is not None:
            group["lr"] = group["fixed_lr"]


def scaled_lr(base_lr: float, batch_size: int, world_size: int, accumulate: int = 1) -> float:
    """Linear scaling rule (Goyal et al. 2017): ``base_lr`` is for a global batch of 256; gradient
    accumulation multiplies it once more (solo-learn's rule: the effective batch grows too)."""
    return base_lr * batch_size * world_size / 256 * accumulate


@torch.no_grad()
def clip_grad_per_parameter(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> None:
    """Scale each parameter's gradient down to an L2 norm of at most ``max_norm``, every tensor on
    its own (DINO's ``clip_gradients``, not torch's one norm over all of them)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    # min(1, max_norm / (norm + 1e-6)): DINO's coefficient, 1 where the norm is already small
    scales = torch._foreach_clamp_max(torch._foreach_reciprocal(torch._foreach_add(norms, 1e-6)),
                                      1.0 / max_norm)
    torch._foreach_mul_(scales, max_norm)
    torch._foreach_mul_(grads, scales)


def schedule_weight_decay(optimizer: torch.optim.Optimizer, ratio: float) -> None:
    """Every group's weight decay set to ``ratio`` times the one it was built with (kept in the
    group as ``initial_weight_decay``, so a resumed optimizer keeps it too); groups without
    weight decay stay without."""
    for group in optimizer.param_groups:
        initial = group.setdefault("initial_weight_decay", group["weight_decay"])
        group["weight_decay"] = initial * ratio
