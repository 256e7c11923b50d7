"""A whole pretraining method (backbone, heads, momentum networks, queues) from a checkpoint of
ours or of solo-learn, rebuilt from the config the run saved."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from solo.zoo.checkpoints import CheckpointError, Pretrained, load_pretrained, load_weights_strictly

if TYPE_CHECKING:
    from solo.methods import BaseMethod


def rebuild_method(pretrained: Pretrained) -> BaseMethod:
    """The method the checkpoint was pretrained with, freshly initialised from its saved config
    (read leniently: solo-learn's args.json holds keys of its own); no weights loaded."""
    from solo.config import ConfigError, parse_saved_config
    from solo.methods import METHODS

    if pretrained.method is None or pretrained.cfg is None:
        raise CheckpointError("the checkpoint records no method and config to rebuild the method "
                              "from (only a backbone can be loaded from it)")
    try:
        method_cls = METHODS.get(pretrained.method)
        # the config of the run, whose data paths need not exist any more
        return method_cls(parse_saved_config(pretrained.cfg, f"the config of the "
                                                             f"{pretrained.source_format} checkpoint"))
    except (KeyError, ConfigError, TypeError) as error:
        raise CheckpointError(f"cannot rebuild method '{pretrained.method}' from the checkpoint's "
                              f"config: {error}") from None


def load_method(path: str | os.PathLike) -> BaseMethod:
    """Every weight of a pretraining checkpoint, ours or solo-learn's, in our method class, loaded
    strictly (a layout that does not fit fails listing the keys); in eval mode."""
    from solo.methods.state_dict import upgrade_state_dict

    pretrained = load_pretrained(path)
    model = rebuild_method(pretrained)
    state = upgrade_state_dict(pretrained.state_dict, model.state_dict())
    load_weights_strictly(model, state, f"'{path}' ({pretrained.source_format} format) for "
                                        f"{pretrained.method}")
    return model.eval()
