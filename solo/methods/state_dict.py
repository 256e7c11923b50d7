"""State dicts of earlier solo releases, read in today's layout (the method modules' names and
shapes), so their checkpoints still load."""

from __future__ import annotations

import torch
from torch import Tensor

# modules renamed to solo-learn's names (solo 0.1 checkpoints still load): old prefix -> new
_RENAMED_PREFIXES = {"probe.linear.": "classifier.", "momentum_probe.linear.": "momentum_classifier."}


def upgrade_state_dict(state: dict[str, Tensor], expected: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict of an earlier solo release in today's layout: the probes under solo-learn's
    names, a zero bias for head Linears that had none before their batch norm (the BN removes any
    constant, so the outputs are the same), MoCo's queue pointer as a (1,) tensor; and solo-learn's
    SwAV layout: weight-normed prototypes folded into one weight, a queue without a pointer."""
    upgraded = {}
    for key, value in state.items():
        for old, new in _RENAMED_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old):]
        if key in expected and value.dim() == 0 and expected[key].shape == (1,):
            value = value.reshape(1)
        upgraded[key] = value
    for key in [k for k in upgraded if k.endswith(".weight_v")]:
        # solo-learn's SwAV prototypes are torch's weight_norm(Linear) (weight_g, weight_v);
        # ours are a plain Linear kept at unit rows: the weight they compute, folded
        name = key[: -len("_v")]
        if name in expected and name not in upgraded and f"{name}_g" in upgraded:
            direction = upgraded.pop(key)
            scale = upgraded.pop(f"{name}_g")
            upgraded[name] = scale * direction / direction.norm(dim=1, keepdim=True)
    for key, value in expected.items():
        # solo-learn's SwAV queue has no pointer: it is rolled, newest rows first. Flipped, the
        # oldest come first, where our ring buffer, starting at row 0, overwrites first
        queue = key.replace("queue_ptr", "queue")
        if key.endswith("queue_ptr") and key not in upgraded and queue in upgraded:
            upgraded[queue] = upgraded[queue].flip(-2)
            upgraded[key] = torch.zeros_like(value)
    for key, value in expected.items():
        if key in upgraded or not key.endswith(".bias"):
            continue
        head, _, index = key[: -len(".bias")].rpartition(".")
        # only a Sequential's Linear followed by a batch norm, which cancels any constant
        before_batch_norm = index.isdigit() and f"{head}.{int(index) + 1}.running_mean" in expected
        if before_batch_norm and f"{head}.{index}.weight" in upgraded:
            upgraded[key] = torch.zeros_like(value)
    return upgraded
