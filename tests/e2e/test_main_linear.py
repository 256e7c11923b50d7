"""main_linear.py run as a user runs it, on real CIFAR-10 images, from a pretrained checkpoint."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from solo.eval.linear_run import RESUMABLE_CHANGES
from solo.utils.resume import find_resume_point
from solo.zoo import load_pretrained
from tests.solo_learn import write_solo_learn_run
from tests.eval.linear_fixtures import (
    LINEAR_CONFIGS,
    backbone_weights,
    linear_overrides,
    save_byol_checkpoint,
    small_val_folder,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
ACCURACY = re.compile(r"val acc@1: (\d+\.\d)%  acc@5: (\d+\.\d)%  loss: \d+\.\d+  on (.+)")


@pytest.fixture(scope="module")
def pretrained(cifar_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_byol_checkpoint(tmp_path_factory.mktemp("pretrained") / "byol.ckpt", cifar_mini)


@pytest.fixture(scope="module")
def val_folder(cifar_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 test images per class: every class is in the validation set, at a fraction of the cost."""
    return small_val_folder(cifar_mini / "test", tmp_path_factory.mktemp("val") / "test", 50)


def main_linear(cwd: Path, config: str, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "main_linear.py"), "--config-path", str(LINEAR_CONFIGS),
           "--config-name", config, *overrides]
    env = {"PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "PATH": "/usr/bin:/bin"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def accuracy(result: subprocess.CompletedProcess) -> float:
    assert result.returncode == 0, result.stderr[-3000:]
    match = ACCURACY.search(result.stdout)
    assert match, result.stdout
    return float(match.group(1))


def only_run(checkpoints: Path) -> Path:
    (run_dir,) = (checkpoints / "linear").iterdir()
    return run_dir


def test_linear_keeps_pretrained_backbone_and_resumes(pretrained: Path, cifar_mini: Path,
                                                      val_folder: Path, tmp_path: Path) -> None:
    # a few validation batches: the accuracy is compared between the two reports, not judged
    command = [*linear_overrides(pretrained, cifar_mini, tmp_path / "ckpt", val_folder),
               "++max_epochs=1", "++limit_train_batches=3", "++limit_val_batches=4"]
    result = main_linear(tmp_path, "linear.yaml", *command)
    acc1 = accuracy(result)
    assert 0 <= acc1 <= 100 and f"on {val_folder}" in result.stdout
    # 3 batches of 16 of the 2000 training images: what it trained on, not the dataset's size
    assert "trained (linear, frozen backbone) on 48 images" in result.stdout
    assert "backbone: resnet18 (byol, solo checkpoint" in result.stdout
    run_dir = only_run(tmp_path / "ckpt")
    checkpoint = run_dir / f"cifar10-linear-{run_dir.name}-ep=0.ckpt"
    assert checkpoint.is_file() and not list(run_dir.glob("*.tmp"))
    args = json.loads((run_dir / "args.json").read_text())
    assert args["run_id"] == run_dir.name and args["pretrained"]["method"] == "byol"
    assert args["cfg"]["optimizer"]["lr"] == 0.1
    metrics = (run_dir / "logs" / "version_0" / "metrics.csv").read_text()
    assert "val_acc1" in metrics.splitlines()[0]
    # the run ends with its curves drawn, where the plot extra (matplotlib) is installed
    if importlib.util.find_spec("matplotlib"):
        assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the saved classifier holds the pretrained backbone untouched, BN statistics included
    saved, original = backbone_weights(checkpoint), backbone_weights(pretrained)
    assert saved.keys() == original.keys()
    assert all(torch.equal(saved[k], original[k]) for k in original)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["state_dict"]["classifier.weight"].shape == (10, 512) and state["global_step"] == 3
    # its config names the backbone it loaded, so the linear checkpoint loads as a backbone too
    assert args["cfg"]["backbone"] == {"name": "resnet18", "cifar_stem": False, "kwargs": {}}
    reloaded = load_pretrained(checkpoint)
    assert reloaded.backbone_name == "resnet18" and not reloaded.cifar_stem
    assert all(torch.equal(v, original[f"backbone.{k}"])
               for k, v in reloaded.backbone.state_dict().items())

    # the same command again continues that run: nothing is left to train, and it reports the
    # accuracy of the checkpoint, equal to the first report
    again = main_linear(tmp_path, "linear.yaml", *command)
    assert f"auto-resume: continuing run {run_dir.name}" in again.stdout
    assert accuracy(again) == acc1 and only_run(tmp_path / "ckpt") == run_dir
    assert [p.name for p in run_dir.glob("*.ckpt")] == [checkpoint.name]
    assert (run_dir / "logs" / "version_1").is_dir()  # the first run's logs are kept
    # another pretrained backbone, subset or recipe is another experiment
    cfg = args["cfg"]
    assert find_resume_point(tmp_path / "ckpt", "linear", cfg, 1,
                             RESUMABLE_CHANGES).run_id == run_dir.name
    for key, value in [("pretrained_feature_extractor", "other.ckpt"), ("finetune", True)]:
        assert find_resume_point(tmp_path / "ckpt", "linear", {**cfg, key: value}, 1,
                                 RESUMABLE_CHANGES) is None
    other_subset = {**cfg, "data": {**cfg["data"], "fraction_seed": 1}}
    assert find_resume_point(tmp_path / "ckpt", "linear", other_subset, 1,
                             RESUMABLE_CHANGES) is None


def test_linear_on_a_solo_learn_checkpoint(cifar_mini: Path, val_folder: Path,
                                           tmp_path: Path) -> None:
    checkpoint, theirs = write_solo_learn_run(tmp_path / "trained_models", "byol", cifar_mini)
    result = main_linear(tmp_path, "linear.yaml",
                         *linear_overrides(checkpoint, cifar_mini, tmp_path / "ckpt", val_folder),
                         "++max_epochs=1", "++limit_train_batches=2", "++limit_val_batches=2")
    accuracy(result)
    assert "backbone: resnet18 (byol, solo-learn checkpoint" in result.stdout
    run_dir = only_run(tmp_path / "ckpt")
    saved = backbone_weights(next(run_dir.glob("*.ckpt")))
    assert all(torch.equal(saved[f"backbone.{k}"], v) for k, v in theirs.backbone.state_dict().items())


def test_finetune_with_mixup_cutmix_randaugment(pretrained: Path, cifar_mini: Path,
                                                val_folder: Path, tmp_path: Path) -> None:
    result = main_linear(tmp_path, "finetune.yaml",
                         *linear_overrides(pretrained, cifar_mini, tmp_path / "ckpt", val_folder),
                         "++max_epochs=1", "++limit_train_batches=2", "++limit_val_batches=2",
                         "++mixup=0.8", "++cutmix=1.0")
    accuracy(result)
    assert "trained (fine-tuned)" in result.stdout
    run_dir = only_run(tmp_path / "ckpt")
    saved = backbone_weights(run_dir / f"cifar10-finetune-{run_dir.name}-ep=0.ckpt")
    original = backbone_weights(pretrained)
    assert not torch.equal(saved["backbone.conv1.weight"], original["backbone.conv1.weight"])
    assert not torch.equal(saved["backbone.bn1.running_mean"], original["backbone.bn1.running_mean"])


def test_cached_features_on_a_fraction_beat_chance(pretrained: Path, cifar_mini: Path,
                                                   val_folder: Path, tmp_path: Path) -> None:
    """A randomly initialised backbone's features already separate CIFAR-10 classes above chance:
    a head trained on 25% of the training images (500) scored 24.2% on 500 test images when this
    was written. Chance is 10% (standard deviation 1.3 points on 500 images), so a run whose
    labels or features were scrambled lands far below the 16% asked for."""
    command = [*linear_overrides(pretrained, cifar_mini, tmp_path / "ckpt", val_folder,
                                 batch_size=50),
               "++cache_features=True", "++data.fraction=0.25", "++data.fraction_seed=3",
               "++max_epochs=30", "++scheduler.name=none", "++optimizer.lr=0.5"]
    result = main_linear(tmp_path, "linear.yaml", *command)
    acc1 = accuracy(result)
    assert acc1 > 16.0, result.stdout
    assert "trained (linear, cached features) on 500 images" in result.stdout
    assert "(fraction 0.25, seed 3) for 30 epochs" in result.stdout
    run_dir = only_run(tmp_path / "ckpt")
    subset = json.loads((run_dir / "train_subset.json").read_text())
    assert subset["num_images"] == 500 and subset["seed"] == 3
    assert set(Counter(name.split("/")[0] for name in subset["files"]).values()) == {50}
    assert [p.name for p in run_dir.glob("*.ckpt")] == [f"cifar10-linear-{run_dir.name}-ep=29.ckpt"]


@pytest.mark.parametrize("overrides, expected", [
    (["++finetun=True"], "unknown key 'finetun' (did you mean \"finetune\"?)"),
    (["++pretrained_feature_extractor=/nonexistent/byol.ckpt"],
     "pretrained_feature_extractor: '/nonexistent/byol.ckpt' is not a file"),
])
def test_config_errors_exit_2(overrides: list[str], expected: str, pretrained: Path,
                              cifar_mini: Path, tmp_path: Path) -> None:
    result = main_linear(tmp_path, "linear.yaml",
                         *linear_overrides(pretrained, cifar_mini, tmp_path / "ckpt"), *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"config error: {expected}" in result.stderr
    assert not (tmp_path / "ckpt").exists()  # nothing was written
