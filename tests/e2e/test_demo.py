"""The demo (scripts/demo.sh runs ``python -m solo.demo``): its table, and the next commands it
prints working on its checkpoint as printed. The full-length run is measured in the README, not
here: this one trains two steps."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from solo.demo import demo_config, demo_recipe
from tests.e2e.test_main_pretrain import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_cpu_recipe_is_the_demo_config_and_gpu_the_shipped_recipe_longer() -> None:
    cpu = demo_config(demo_recipe(cuda=False))
    assert (cpu.method, cpu.trainer["accelerator"], cpu.backbone.cifar_stem) == ("simclr", "cpu", False)
    assert cpu.num_large_crops == 4 and cpu.data.train_path.endswith("data/cifar10-mini/train")
    gpu = demo_config(demo_recipe(cuda=True), ["++max_epochs=300"])  # user overrides come last
    assert (gpu.trainer["accelerator"], gpu.trainer["devices"], gpu.trainer["max_epochs"]) == ("gpu", 1, 300)
    assert gpu.backbone.cifar_stem is None and gpu.num_large_crops == 2  # the shipped recipe
    assert gpu.optimizer.batch_size == 256 and gpu.data.val_path.endswith("data/cifar10-mini/test")


def test_demo_prints_its_table_and_next_commands_that_run(tmp_path: Path) -> None:
    env = subprocess_env(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "solo.demo", "++max_epochs=1", "++limit_train_batches=2",
         "++limit_val_batches=2", "++optimizer.batch_size=16", "++enable_progress_bar=False",
         f"++checkpoint.dir={tmp_path / 'runs'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    before = float(re.search(r"random initialization\s+([\d.]+)%", out).group(1))
    after = float(re.search(r"after 1 epochs of simclr\s+([\d.]+)%", out).group(1))
    gain = float(re.search(r"gain\s+([+-][\d.]+) points", out).group(1))
    assert abs(gain - (after - before)) < 0.11
    assert re.search(r"wall time \(pretraining\)\s+\d+ s on the cpu", out)
    run_dir = Path(re.search(r"run folder\s+(\S+)", out).group(1))
    assert run_dir.parent == tmp_path / "runs" / "simclr" and list(run_dir.glob("*.ckpt"))

    commands = [line.strip() for line in out.splitlines() if line.strip().startswith("python main_")]
    assert [c.split()[1] for c in commands] == ["main_knn.py", "main_linear.py"]
    # as a user pastes them from the repository root; only made shorter here
    shorter = {"main_knn.py": ["++k=[20]", "++temperature=[0.07]"],
               "main_linear.py": ["++max_epochs=1", f"++checkpoint.dir={tmp_path / 'linear'}"]}
    for command in commands:
        argv = shlex.split(command)
        argv = [sys.executable, *argv[1:], *shorter[argv[1]]]
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stderr[-3000:])
        assert "acc" in done.stdout, done.stdout[-2000:]
