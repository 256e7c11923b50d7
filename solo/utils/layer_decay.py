"""Layer-wise learning-rate decay for fine-tuning ViTs (BEiT, arXiv:2106.08254; MAE,
arXiv:2111.06377, appendix A.2): the deeper a layer, the larger its lr.

A ViT of depth D has D + 2 layers: 0 holds the embeddings (patch projection, class token,
positions), 1 .. D the blocks, D + 1 what follows them (the final norm, and the head). Layer i
trains at ``lr * layer_decay ** (D + 1 - i)``: the head at ``lr``, the embeddings at
``lr * layer_decay ** (D + 1)``.
"""

from __future__ import annotations

from torch import nn

from solo.config import ConfigError

EMBEDDING_PREFIXES = ("cls_token", "pos_embed", "reg_token", "dist_token", "patch_embed",
                      "norm_pre")


def vit_depth(backbone: nn.Module, name: str = "the backbone") -> int:
    """The number of transformer blocks of a ViT (its ``blocks``); a ConfigError otherwise."""
    blocks = getattr(backbone, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or len(blocks) == 0:
        raise ConfigError(f"optimizer.layer_decay: needs a ViT (a backbone with transformer "
                          f"'blocks'), got {name} ({type(backbone).__name__}); set "
                          "optimizer.layer_decay: 0")
    return len(blocks)


def vit_layer_id(param_name: str, depth: int) -> int:
    """The layer of a ViT parameter: 0 for the embeddings, i + 1 for ``blocks.i``, else
    ``depth + 1``."""
    if param_name.startswith(EMBEDDING_PREFIXES):
        return 0
    if param_name.startswith("blocks."):
        return int(param_name.split(".")[1]) + 1
    return depth + 1


def layer_decay_groups(backbone: nn.Module, lr: float, layer_decay: float,
                       name: str = "the backbone") -> list[dict]:
    """Param groups ``backbone_layer<i>`` (weight decay as the optimizer's) and
    ``backbone_layer<i>_no_wd`` (1-D tensors and the backbone's ``no_weight_decay()`` names, as
    the MAE and BEiT recipes), each with ``lr`` scaled by its layer. Frozen tensors are left out."""
    depth = vit_depth(backbone, name)
    no_wd = set(backbone.no_weight_decay()) if hasattr(backbone, "no_weight_decay") else set()
    groups: dict[str, dict] = {}
    for param_name, param in backbone.named_parameters():
        if not param.requires_grad:
            continue
        layer = vit_layer_id(param_name, depth)
        skip_wd = param.ndim == 1 or param_name in no_wd
        key = f"backbone_layer{layer}{'_no_wd' if skip_wd else ''}"
        if key not in groups:
            groups[key] = {"name": key, "params": [], "lr": lr * layer_decay ** (depth + 1 - layer)}
            if skip_wd:
                groups[key]["weight_decay"] = 0.0
        groups[key]["params"].append(param)
    return list(groups.values())
