"""Finding the checkpoint to continue: compatibility, age, newest first."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from solo.utils.checkpoint import write_json_atomic
from solo.utils.resume import compatible, find_resume_point, run_id_of

CFG = {"name": "byol-cifar10", "method": "byol", "backbone": {"name": "resnet18"},
       "method_kwargs": {"proj_hidden_dim": 4096}, "data": {"dataset": "cifar10", "train_path": "x"},
       "optimizer": {"name": "lars", "batch_size": 256, "lr": 1.0, "weight_decay": 1e-5},
       "augmentations": [{"crop_size": 32}], "trainer": {"max_epochs": 100}}


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


def test_newest_checkpoint_of_a_compatible_young_run(tmp_path: Path) -> None:
    make_run(tmp_path, "old", CFG, [5], age_hours=50)  # older than max_hours
    other = json.loads(json.dumps(CFG))
    other["optimizer"]["lr"] = 0.5
    make_run(tmp_path, "other", other, [9])  # a different experiment
    make_run(tmp_path, "good", CFG, [1, 2])
    (tmp_path / "byol" / "good" / "byol-cifar10-good-ep=3.ckpt.tmp").write_bytes(b"partial")
    point = find_resume_point(tmp_path, "byol", CFG, max_hours=36)
    assert point is not None and point.run_id == "good"
    assert point.checkpoint.name == "byol-cifar10-good-ep=2.ckpt"  # never the .tmp of a kill


def test_nothing_to_resume(tmp_path: Path) -> None:
    assert find_resume_point(tmp_path, "byol", CFG, max_hours=36) is None
    make_run(tmp_path, "empty", CFG, [])
    assert find_resume_point(tmp_path, "byol", CFG, max_hours=36) is None


def test_compatibility_ignores_paths_and_devices_it_does_not_list() -> None:
    changed = json.loads(json.dumps(CFG))
    changed["trainer"]["devices"] = 4
    assert compatible(CFG, changed)
    changed["method_kwargs"]["proj_hidden_dim"] = 2048
    assert not compatible(CFG, changed)


def test_run_id_of_an_explicit_checkpoint(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "abc", CFG, [0])
    assert run_id_of(run_dir / "byol-cifar10-abc-ep=0.ckpt") == "abc"
    assert run_id_of(tmp_path / "elsewhere.ckpt") is None
