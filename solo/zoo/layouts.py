"""Where the official MoCo v1/v2, MoCo v3 and DINO checkpoints keep their backbone.

- MoCo v1/v2 (github.com/facebookresearch/moco, main_moco.py): ``{"epoch", "arch", "state_dict",
  "optimizer"}``, the model saved under DistributedDataParallel: ``module.encoder_q.*`` is the query
  encoder, a torchvision ResNet whose ``fc`` is the projection (v1: one ``fc``, v2: the MLP
  ``fc.0`` / ``fc.2``), ``module.encoder_k.*`` its momentum copy, then ``module.queue`` and
  ``module.queue_ptr``.
- MoCo v3 (github.com/facebookresearch/moco-v3): ``state_dict`` with ``module.base_encoder.*`` (timm
  ViT keys, its ``head.*`` the projector MLP; or a torchvision ResNet-50 whose ``fc.*`` is the
  projector), ``module.momentum_encoder.*`` and ``module.predictor.*``.
- DINO (github.com/facebookresearch/dino) training checkpoints: ``{"student", "teacher",
  "optimizer", "epoch", "args", "dino_loss"}``, each network a ``backbone.*`` and a DINO
  ``head.*`` (under ``module.`` where DistributedDataParallel wrapped it). The teacher is the
  network DINO evaluates, so it is the one loaded. DINO's released backbones
  (``dino_deitsmall16_pretrain.pth``, ...) are plain timm-layout ViT state dicts, read as timm's.

The projection heads (``fc``, ``head``) are left to the classifier filter of the loader, which
drops what the headless backbone does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from torch import Tensor


@dataclass(frozen=True)
class OfficialLayout:
    source_format: str  # the name load_pretrained reports
    container: str  # the checkpoint's key that holds the state dict
    prefixes: tuple[str, ...]  # where the backbone is in it, with and without DDP's "module."


OFFICIAL_LAYOUTS = (
    OfficialLayout("moco", "state_dict", ("module.encoder_q.", "encoder_q.")),
    OfficialLayout("mocov3", "state_dict", ("module.base_encoder.", "base_encoder.")),
    OfficialLayout("dino", "teacher", ("module.backbone.", "backbone.")),
)


@dataclass
class OfficialCheckpoint:
    source_format: str
    method: str  # mocov1, mocov2, mocov3 or dino
    state_dict: dict[str, Tensor]  # the whole network the backbone came from (DINO: the teacher)
    weights: dict[str, Tensor]  # the backbone's, prefix removed, projection head still in


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def split_official(checkpoint: Mapping[str, Any]) -> OfficialCheckpoint | None:
    """The backbone of a MoCo v1/v2, MoCo v3 or DINO checkpoint; None for other layouts."""
    for layout in OFFICIAL_LAYOUTS:
        state = checkpoint.get(layout.container)
        if not is_state_dict(state):
            continue
        prefix = next((p for p in layout.prefixes if any(k.startswith(p) for k in state)), None)
        if prefix is None:
            continue
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        method = layout.source_format
        if method == "moco":  # v2 replaced v1's fc by a two-layer MLP
            method = "mocov2" if "fc.0.weight" in weights else "mocov1"
        return OfficialCheckpoint(layout.source_format, method, dict(state), weights)
    return None


# official MoCo v1/v2 module -> the module of our mocov1 / mocov2 methods (first match wins)
_MOCO_MODULES = (("encoder_q.fc.", "projector."), ("encoder_q.", "backbone."),
                 ("encoder_k.fc.", "momentum_projector."), ("encoder_k.", "momentum_backbone."),
                 ("queue", "queue"))


def moco_method_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official MoCo v1/v2 ``state_dict`` (with or without DDP's ``module.``) in the keys of
    our mocov1 / mocov2 methods, whole: the query encoder's ResNet and fc (v1's Linear, v2's
    ``fc.0``/``fc.2`` MLP) become backbone and projector, the key encoder's their momentum
    copies, ``queue`` (dim, K) and ``queue_ptr`` stay. Only our online probes are not in it."""
    converted = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        for old, new in _MOCO_MODULES:
            if key.startswith(old):
                converted[new + key[len(old):]] = value
                break
    return converted
