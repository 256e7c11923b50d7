"""Finding the checkpoint to continue: the whole resolved config must match but for the changes a
restart may bring; age; newest first."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import pytest

from solo.config import ExperimentConfig
from solo.methods import BYOL
from solo.utils.checkpoint import write_json_atomic
from solo.utils.resume import config_differences, find_resume_point, run_id_of, schema_defaults
from tests.helpers import shipped_config


@pytest.fixture(scope="module")
def cfg(cifar_mini: Path) -> dict:
    return json.loads(json.dumps(shipped_config("byol", cifar_mini).to_dict(), default=str))


@pytest.fixture(scope="module")
def defaults() -> dict:
    return {**schema_defaults(ExperimentConfig),
            **{f"method_kwargs.{k}": v for k, v in schema_defaults(BYOL.Config).items()}}


def make_run(root: Path, run_id: str, cfg: dict, epochs: list[int], age_hours: float = 0) -> Path:
    run_dir = root / "byol" / run_id
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / "args.json", {"run_id": run_id, "cfg": cfg})
    for epoch in epochs:
        path = run_dir / f"{cfg['name']}-{run_id}-ep={epoch}.ckpt"
        path.write_bytes(b"x")
        stamp = time.time() - age_hours * 3600 + epoch  # later epochs are newer
        os.utime(path, (stamp, stamp))
    return run_dir


def changed(cfg: dict, dotted: str, value: object) -> dict:
    out = copy.deepcopy(cfg)
    *path, last = dotted.split(".")
    node = out
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
    return out


@pytest.mark.parametrize("key, value", [
    ("optimizer.kwargs.eta", 0.001), ("optimizer.classifier_lr", 0.3),
    ("scheduler.warmup_epochs", 5), ("scheduler.name", "step"), ("momentum.final_tau", 0.999),
    ("trainer.accumulate_grad_batches", 4), ("seed", 1), ("method_kwargs.pred_hidden_dim", 512),
    ("augmentations", []), ("data.fraction", 0.5), ("performance.fuse_crops", True),
    ("trainer.precision", "32"),
])
def test_a_changed_recipe_is_another_experiment(cfg: dict, defaults: dict, key: str,
                                                value: object) -> None:
    differences = config_differences(cfg, changed(cfg, key, value), defaults=defaults)
    assert len(differences) == 1 and differences[0].startswith(f"{key} ("), differences


@pytest.mark.parametrize("key, value", [
    ("data.train_path", "/elsewhere/train"), ("data.num_workers", 16), ("trainer.devices", 4),
    ("trainer.strategy", "ddp"), ("wandb.enabled", True), ("auto_resume.max_hours", 2),
    ("checkpoint.dir", "/scratch"), ("knn_eval.k", 200), ("trainer.log_every_n_steps", 10),
    ("performance.compile", True), ("trainer.max_epochs", 2000),
])
def test_paths_devices_workers_logging_and_a_longer_run_may_change(cfg: dict, defaults: dict,
                                                                    key: str, value: object) -> None:
    assert config_differences(cfg, changed(cfg, key, value), defaults=defaults) == []


def test_max_epochs_only_upward_and_new_keys_at_their_default(cfg: dict, defaults: dict) -> None:
    shorter = changed(cfg, "trainer.max_epochs", 500)
    assert config_differences(cfg, shorter, defaults=defaults) == [
        f"trainer.max_epochs ({cfg['trainer']['max_epochs']!r} -> 500)"]
    # a run written before performance.tf32 existed continues at the default, not otherwise
    older = copy.deepcopy(cfg)
    del older["performance"]["tf32"]
    assert config_differences(older, cfg, defaults=defaults) == []
    assert config_differences(older, changed(cfg, "performance.tf32", False),
                              defaults=defaults) == ["performance.tf32 (True -> False)"]


def test_newest_checkpoint_of_a_compatible_young_run(tmp_path: Path, cfg: dict, defaults: dict,
                                                     capsys: pytest.CaptureFixture) -> None:
    make_run(tmp_path, "old", cfg, [5], age_hours=50)  # older than max_hours
    make_run(tmp_path, "other", changed(cfg, "optimizer.lr", 0.5), [9])  # another experiment
    make_run(tmp_path, "good", cfg, [1, 2])
    (tmp_path / "byol" / "good" / "byol-cifar10-good-ep=3.ckpt.tmp").write_bytes(b"partial")
    point = find_resume_point(tmp_path, "byol", cfg, max_hours=36, defaults=defaults)
    assert point is not None and point.run_id == "good"
    assert point.checkpoint.name == f"{cfg['name']}-good-ep=2.ckpt"  # never the .tmp of a kill
    # the run of the same name that differs is reported, with what differs
    assert "auto-resume: not continuing run other, whose config differs: optimizer.lr (0.5 -> 1.0)" \
        in capsys.readouterr().out


def test_nothing_to_resume(tmp_path: Path, cfg: dict) -> None:
    assert find_resume_point(tmp_path, "byol", cfg, max_hours=36) is None
    make_run(tmp_path, "empty", cfg, [])
    assert find_resume_point(tmp_path, "byol", cfg, max_hours=36) is None


def test_run_id_of_an_explicit_checkpoint(tmp_path: Path, cfg: dict) -> None:
    run_dir = make_run(tmp_path, "abc", cfg, [0])
    assert run_id_of(run_dir / f"{cfg['name']}-abc-ep=0.ckpt") == "abc"
    assert run_id_of(tmp_path / "elsewhere.ckpt") is None
