"""main_pretrain.py run as a user runs it: solo-learn YAMLs, typos, kill and auto-resume."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from solo.methods import BYOL
from tests.solo_learn import YAML_HEADER, asymmetric_groups

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# solo-learn's CIFAR BYOL experiment, key for key (its GPU/DDP/fp16 settings included)
SOLO_LEARN_BYOL = YAML_HEADER.format(augmentations="asymmetric.yaml") + """
name: "byol-cifar10"
method: "byol"
backbone:
  name: "resnet18"
method_kwargs:
  proj_hidden_dim: 4096
  proj_output_dim: 256
  pred_hidden_dim: 4096
momentum:
  base_tau: 0.99
  final_tau: 1.0
data:
  dataset: cifar10
  train_path: "./datasets"
  val_path: "./datasets"
  format: "image_folder"
  num_workers: 4
optimizer:
  name: "lars"
  batch_size: 256
  lr: 1.0
  classifier_lr: 0.1
  weight_decay: 1e-5
  kwargs:
    clip_lr: True
    eta: 0.02
    exclude_bias_n_norm: True
scheduler:
  name: "warmup_cosine"
checkpoint:
  enabled: True
  dir: "trained_models"
  frequency: 1
auto_resume:
  enabled: True

max_epochs: 1000
devices: [0]
sync_batchnorm: True
accelerator: "gpu"
strategy: "ddp"
precision: 16
"""
SOLO_LEARN_WANDB = 'enabled: True\nentity: None\nproject: "solo-learn"\n'


def write_solo_learn_configs(folder: Path) -> Path:
    (folder / "augmentations").mkdir(parents=True)
    (folder / "wandb").mkdir()
    (folder / "byol.yaml").write_text(SOLO_LEARN_BYOL)
    (folder / "augmentations" / "asymmetric.yaml").write_text(asymmetric_groups())
    (folder / "wandb" / "private.yaml").write_text(SOLO_LEARN_WANDB)
    return folder


def command(config_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "main_pretrain.py"), "--config-path", str(config_dir),
            "--config-name", "byol.yaml", *overrides]


def subprocess_env(cwd: Path) -> dict[str, str]:
    # wandb, where installed, never goes online and writes its settings into the test's folder
    return {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline",
            "WANDB_CONFIG_DIR": str(cwd / ".wandb-config")}


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=subprocess_env(cwd), capture_output=True, text=True,
                          timeout=timeout)


def fast(data: Path, checkpoints: Path, epochs: int = 1, batches: int = 2) -> list[str]:
    """Path and device overrides, plus a short schedule so the test stays quick."""
    return [f"++data.train_path={data / 'train'}", f"++data.val_path={data / 'test'}",
            "++accelerator=cpu", "++devices=1", f"++checkpoint.dir={checkpoints}",
            f"++max_epochs={epochs}", f"++limit_train_batches={batches}", "++limit_val_batches=2",
            "++optimizer.batch_size=16", "++data.num_workers=0", "++enable_progress_bar=False"]


def test_unmodified_solo_learn_yaml_trains_and_checkpoints(cifar_mini: Path, tmp_path: Path) -> None:
    configs = write_solo_learn_configs(tmp_path / "configs")
    result = run(command(configs, *fast(cifar_mini, tmp_path / "ckpt"), "++knn_eval.enabled=True"),
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kNN acc@1 (k=20, euclidean)" in result.stdout and "before" in result.stdout

    run_dirs = list((tmp_path / "ckpt" / "byol").iterdir())
    assert len(run_dirs) == 1
    run_id = run_dirs[0].name
    checkpoint = run_dirs[0] / f"byol-cifar10-{run_id}-ep=0.ckpt"
    assert checkpoint.exists() and not list(run_dirs[0].glob("*.tmp"))
    args = json.loads((run_dirs[0] / "args.json").read_text())
    assert args["run_id"] == run_id and args["cfg"]["optimizer"]["lr"] == 1.0
    assert (run_dirs[0] / "logs" / "version_0" / "metrics.csv").exists()
    # the run ends with its curves drawn, where the plot extra (matplotlib) is installed
    if importlib.util.find_spec("matplotlib"):
        assert (run_dirs[0] / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model = BYOL.load_from_checkpoint(checkpoint, map_location="cpu")  # no config needed
    assert model.cfg.name == "byol-cifar10" and model.cfg.trainer["precision"] == 16


@pytest.mark.parametrize("override, expected", [
    ("++optimizer.weight_decy=1e-4", 'optimizer.weight_decy\' (did you mean "weight_decay"?)'),
    ("++max_epoch=3", '\'max_epoch\' (did you mean "max_epochs"?)'),
    ("++momentum.base_tau=1.5", "momentum.base_tau: need 0 <= base_tau <= final_tau <= 1"),
    ("~data.dataset", "missing required key 'data.dataset'"),
])
def test_bad_config_fails_before_reading_data(override: str, expected: str, tmp_path: Path) -> None:
    result = run(command(ROOT / "scripts" / "pretrain" / "cifar", override,
                         "++data.train_path=/nonexistent", "++accelerator=cpu"), cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr[-2000:]


def test_sigkill_mid_epoch_then_rerun_resumes_exactly(cifar_mini: Path, tmp_path: Path) -> None:
    def cmd(checkpoints: Path) -> list[str]:
        return command(ROOT / "scripts" / "pretrain" / "cifar",
                       *fast(cifar_mini, checkpoints, epochs=3, batches=6),
                       "++knn_eval.enabled=False", "++precision=32", "++checkpoint.every_n_steps=4")
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(cmd(tmp_path / "ckpt"), cwd=tmp_path, env=subprocess_env(tmp_path),
                             stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not list((tmp_path / "ckpt").rglob("*-ep=1-step=8.ckpt")):  # inside the second epoch
        assert first.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    run_dir = next((tmp_path / "ckpt" / "byol").iterdir())
    assert not list(run_dir.glob("*-ep=2.ckpt")), "the first run finished before it was killed"
    assert not list(run_dir.glob("*-ep=1.ckpt"))  # killed inside epoch 1: no epoch-end file

    second = run(cmd(tmp_path / "ckpt"), cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"auto-resume: continuing run {run_dir.name}" in second.stdout
    final_path = run_dir / f"byol-cifar10-{run_dir.name}-ep=2.ckpt"
    final = torch.load(final_path, map_location="cpu", weights_only=False)
    # 3 epochs of 6 steps in all: the rerun continued the count instead of starting over
    assert final["global_step"] == 18 and final["epoch"] == 2
    assert [p.name for p in run_dir.glob("*.ckpt")] == [final_path.name]
    # the killed run's logs are still there beside the resumed run's
    assert (run_dir / "logs" / "version_0").is_dir() and (run_dir / "logs" / "version_1").is_dir()

    # the same remaining batches, views and random numbers: the weights of an uninterrupted run
    whole = run(cmd(tmp_path / "whole"), cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    reference = torch.load(next((tmp_path / "whole").rglob("*-ep=2.ckpt")), map_location="cpu",
                           weights_only=False)["state_dict"]
    assert reference.keys() == final["state_dict"].keys()
    unequal = [k for k, v in reference.items() if not torch.equal(v, final["state_dict"][k])]
    assert not unequal, unequal


def test_two_process_ddp_run_shares_one_run_and_gathers_keys(cifar_mini: Path, tmp_path: Path) -> None:
    cmd = command(ROOT / "scripts" / "pretrain" / "cifar",
                  *fast(cifar_mini, tmp_path / "ckpt", epochs=2, batches=2),
                  "++devices=2", "++strategy=ddp", "++precision=32")
    cmd[cmd.index("byol.yaml")] = "mocov2plus.yaml"
    result = run(cmd, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run directory:") == 1  # only rank zero reports
    run_dirs = list((tmp_path / "ckpt" / "mocov2plus").iterdir())
    assert len(run_dirs) == 1  # both ranks wrote into the same run
    checkpoint = torch.load(next(run_dirs[0].glob("*-ep=1.ckpt")), map_location="cpu",
                            weights_only=False)
    # 2 epochs x 2 steps x 16 keys per process x 2 processes entered the queue
    assert checkpoint["global_step"] == 4 and int(checkpoint["state_dict"]["queue_ptr"]) == 128


@pytest.mark.parametrize("recipe, method", [("mocov1.yaml", "mocov1"),  # Shuffle BN across ranks
                                            ("barlow.yaml", "barlow_twins"),  # summed correlation
                                            ("nnclr.yaml", "nnclr")])  # gathered predictions
def test_two_process_ddp_runs_of_methods_that_talk_across_processes(
        recipe: str, method: str, cifar_mini: Path, tmp_path: Path) -> None:
    cmd = command(ROOT / "scripts" / "pretrain" / "cifar",
                  *fast(cifar_mini, tmp_path / "ckpt", epochs=1, batches=2),
                  "++devices=2", "++strategy=ddp", "++precision=32")
    cmd[cmd.index("byol.yaml")] = recipe
    result = run(cmd, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir, = (tmp_path / "ckpt" / method).iterdir()
    checkpoint = torch.load(next(run_dir.glob("*-ep=0.ckpt")), map_location="cpu",
                            weights_only=False)
    assert checkpoint["global_step"] == 2
    state = checkpoint["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    if "queue_ptr" in state:  # 2 steps x 16 keys per process x 2 processes
        assert int(state["queue_ptr"]) == 64


def test_two_process_deepclusterv2_clusters_both_banks_and_saves_them(cifar_mini: Path,
                                                                       tmp_path: Path) -> None:
    # epoch 0 fills each process's bank; epoch 1 starts with a k-means over both banks
    cmd = command(ROOT / "scripts" / "pretrain" / "cifar",
                  *fast(cifar_mini, tmp_path / "ckpt", epochs=2, batches=2),
                  "++devices=2", "++strategy=ddp", "++precision=32",
                  "++method_kwargs.num_prototypes=[8,8]", "++knn_eval.enabled=False")
    cmd[cmd.index("byol.yaml")] = "deepclusterv2.yaml"
    result = run(cmd, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir, = (tmp_path / "ckpt" / "deepclusterv2").iterdir()
    checkpoint = torch.load(next(run_dir.glob("*-ep=1.ckpt")), map_location="cpu",
                            weights_only=False)
    state = checkpoint["state_dict"]
    # the images both processes trained on in epoch 0 (2 steps x 16 each) have a cluster per head
    assignments = state["assignments"]
    assert assignments.shape == (2, len(list((cifar_mini / "train").rglob("*.jpg"))))
    assert ((assignments >= 0).sum(dim=1) == 64).all() and int(assignments.max()) < 8
    for head in range(2):  # the frozen prototypes are unit centroids
        norms = state[f"prototypes.{head}.weight"].norm(dim=1)
        torch.testing.assert_close(norms, torch.ones(8))
    # the saved bank holds the rows of both processes: epoch 1's 64 images
    written = state["local_memory_index"]
    assert int((written >= 0).sum()) == 64 and len(set(written[written >= 0].tolist())) == 64


def test_wandb_offline_needs_no_account(cifar_mini: Path, tmp_path: Path) -> None:
    pytest.importorskip("wandb")  # the optional `wandb` extra
    cmd = command(ROOT / "scripts" / "pretrain" / "cifar", *fast(cifar_mini, tmp_path / "ckpt"),
                  "++wandb.enabled=True", "++wandb.offline=True")
    env = {**subprocess_env(tmp_path), "HOME": str(tmp_path)}
    env.pop("WANDB_API_KEY", None)
    env.pop("WANDB_MODE")  # offline because the config says so
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "ckpt" / "byol").iterdir())
    # the wandb run carries solo's run id, so a resumed run continues the same wandb run
    assert list((run_dir / "wandb").glob(f"offline-run-*-{run_dir.name}"))
