"""A run folder as solo-learn writes it (args.json with its own keys, a Lightning checkpoint in its
layout) loads with every reader: load_pretrained, load_method (every weight), and the configs it
holds are read leniently, while a user's YAML with the same keys stays strict."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from solo.config import ConfigError, parse_config, parse_saved_config
from solo.methods import METHODS as ALL_METHODS
from solo.zoo import load_method, load_pretrained
from tests.solo_learn import solo_learn_args, write_solo_learn_run

METHODS = ["byol", "simclr", "mocov2plus"]


@pytest.mark.parametrize("method", METHODS)
def test_every_weight_loads_into_our_method(tmp_path: Path, cifar_mini: Path, method: str) -> None:
    checkpoint, theirs = write_solo_learn_run(tmp_path, method, cifar_mini)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the keys solo-learn writes are known: no warning
        ours = load_method(checkpoint)
    assert isinstance(ours, ALL_METHODS.get(method)) and not ours.training
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours.projector(ours.backbone(images)),
                                   theirs.projector(theirs.backbone(images)))
    loaded = load_pretrained(checkpoint)
    assert (loaded.source_format, loaded.method, loaded.cifar_stem) == ("solo-learn", method, True)


def test_unknown_saved_keys_are_dropped_with_one_warning(tmp_path: Path, cifar_mini: Path) -> None:
    args = solo_learn_args("byol", cifar_mini)
    args["some_future_key"] = 1
    args["data"]["prefetch"] = 2
    args["method_kwargs"]["pred_bias"] = False
    with pytest.warns(UserWarning) as caught:
        cfg = parse_saved_config(args, "args.json")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert "ignored 3 key(s)" in messages[0]
    for key in ("some_future_key", "data.prefetch", "method_kwargs.pred_bias"):
        assert key in messages[0]
    assert "wandb_run_id" not in messages[0] and "num_large_crops" not in messages[0]
    assert cfg.method_kwargs.pred_hidden_dim == 48 and cfg.num_large_crops == 2


def test_a_users_yaml_with_those_keys_is_still_strict(cifar_mini: Path) -> None:
    args = solo_learn_args("byol", cifar_mini)
    with pytest.raises(ConfigError, match="unknown key 'wandb_run_id'"):
        parse_config(args)
    del args["wandb_run_id"]
    with pytest.raises(ConfigError, match=r"unknown key 'data\.num_large_crops'"):
        parse_config(args)


def test_args_json_is_read_as_written(tmp_path: Path, cifar_mini: Path) -> None:
    checkpoint, _ = write_solo_learn_run(tmp_path, "mocov2plus", cifar_mini)
    saved = json.loads((checkpoint.parent / "args.json").read_text())
    cfg = parse_saved_config(saved, "args.json")
    assert cfg.method == "mocov2plus" and cfg.method_kwargs.queue_size == 512
    assert cfg.momentum.final_tau == 0.999 and cfg.optimizer.kwargs["momentum"] == 0.9
