"""MomentumMethod: BaseMethod plus exponential-moving-average (EMA) copies of backbone and heads.

tau follows a per-step cosine from ``momentum.base_tau`` to ``momentum.final_tau`` (BYOL,
arXiv:2006.07733). The EMA is applied only after a real optimizer step, so gradient accumulation
does not apply it several times per step, and is computed as one fused foreach lerp.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from solo.config import ExperimentConfig
from solo.methods.base import BaseMethod, EncodedBatch
from solo.nn import OnlineProbe
from solo.utils.lightning_hooks import log_host_values
from solo.utils.schedules import cosine_schedule


def cosine_tau(step: int, total_steps: int, base_tau: float, final_tau: float) -> float:
    """EMA decay after ``step`` of ``total_steps`` optimizer steps: base_tau rising to final_tau."""
    return cosine_schedule(step, total_steps, base_tau, final_tau)


class OnlineTarget:
    """What ``momentum_copy`` returns with ``momentum.enabled: False``: the online module itself,
    called without gradient (SimSiam's stop-gradient target). Not an ``nn.Module``, so its
    weights are neither registered twice nor saved twice."""

    def __init__(self, online: nn.Module) -> None:
        self.online = online

    def __call__(self, *args: Any) -> Any:
        with torch.no_grad():
            return self.online(*args)


class MomentumMethod(BaseMethod):
    """A method with a momentum (EMA) backbone; subclasses add momentum heads with momentum_copy."""

    def __init__(self, cfg: ExperimentConfig | Mapping[str, Any],
                 backbone: nn.Module | None = None) -> None:
        super().__init__(cfg, backbone)
        self._momentum_pairs: list[tuple[str, str]] = []
        self.momentum_backbone = self.momentum_copy("backbone")
        self.momentum_classifier = (OnlineProbe(self.num_features, self.cfg.num_classes)
                                    if self.cfg.momentum.classifier else None)
        self.tau = self.cfg.momentum.base_tau

    def momentum_copy(self, name: str) -> nn.Module | OnlineTarget:
        """A frozen copy of child module ``name``, updated as its EMA after each optimizer step
        (with ``momentum.enabled: False``, the online module itself without gradient)."""
        online: nn.Module = getattr(self, name)
        if not self.cfg.momentum.enabled:
            return OnlineTarget(online)
        momentum = copy.deepcopy(online)
        for param in momentum.parameters():
            param.requires_grad = False
        self._momentum_pairs.append((name, f"momentum_{name}"))
        return momentum

    @property
    def has_momentum_copies(self) -> bool:
        """Whether any EMA copy exists (none with momentum.enabled False, or TWIST without its
        momentum encoder)."""
        return bool(self._momentum_pairs)

    def probe_modules(self) -> dict[str, str]:
        return {**super().probe_modules(), "momentum_classifier": "classifier_momentum"}

    # ------------------------------------------------------------------------------------------
    def encode_batch(self, batch: tuple[Tensor, list[Tensor], Tensor]) -> EncodedBatch:
        encoded = super().encode_batch(batch)
        with torch.no_grad():
            # the momentum backbone sees the large crops only (small crops are student-only)
            encoded.momentum_feats = self.encode_momentum(batch[1][: self.num_large_crops])
        return encoded

    def encode_momentum(self, crops: list[Tensor]) -> list[Tensor]:
        """Momentum-backbone features (no gradient) of the large crops; a method overrides it to
        encode fewer of them or to shuffle the batch first (MoCo's Shuffle BN)."""
        return self.encode_crops(crops, self.momentum_backbone)

    def extra_training_losses(self, encoded: EncodedBatch) -> tuple[Tensor | float, dict[str, Tensor]]:
        if self.momentum_classifier is None:
            return 0.0, {}
        feats = torch.cat(encoded.momentum_feats)
        loss, logs = self.momentum_classifier.loss(
            feats, encoded.targets.repeat(len(encoded.momentum_feats)))
        return loss, {f"train_momentum_{k}": v for k, v in logs.items()}

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        super().validation_step(batch, batch_idx, dataloader_idx)
        if self.momentum_classifier is not None and dataloader_idx == 0:
            images, targets = batch
            feats = self.encode_crops([images], self.momentum_backbone)[0]
            _, logs = self.momentum_classifier.loss(feats, targets)
            self.log_dict({f"val_momentum_{k}": v for k, v in logs.items()}, on_epoch=True,
                          sync_dist=True, add_dataloader_idx=False, batch_size=len(images))

    # ------------------------------------------------------------------------------------------
    # the EMA update
    # ------------------------------------------------------------------------------------------
    def _ema_tensors(self) -> tuple[list[Tensor], list[Tensor]]:
        online, momentum = [], []
        for online_name, momentum_name in self._momentum_pairs:
            online.extend(p.detach() for p in getattr(self, online_name).parameters())
            momentum.extend(p.detach() for p in getattr(self, momentum_name).parameters())
        return online, momentum

    def on_train_start(self) -> None:
        super().on_train_start()
        self.tau = cosine_tau(self.trainer.global_step, self.total_steps,
                              self.cfg.momentum.base_tau, self.cfg.momentum.final_tau)

    @torch.no_grad()
    def momentum_update(self, tau: float) -> None:
        """momentum <- tau * momentum + (1 - tau) * online, for every pair, in one fused op."""
        online, momentum = self._ema_tensors()
        torch._foreach_lerp_(momentum, online, 1.0 - tau)

    def after_optimizer_step(self, step: int) -> None:
        super().after_optimizer_step(step)
        if not self._momentum_pairs:
            return
        self.momentum_update(self.tau)
        self.tau = cosine_tau(step, self.total_steps,
                              self.cfg.momentum.base_tau, self.cfg.momentum.final_tau)
        log_host_values(self, {"tau": self.tau}, step)  # inside optimizer_step: not yet counted
