"""main_pretrain.py stopped by the scheduler's signals: SIGTERM / SIGUSR1 save the current step and
exit 0, a rerun continues it; the example sbatch script's command line parses."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.e2e.test_main_pretrain import ROOT, command, fast, run, subprocess_env

pytestmark = pytest.mark.slow
SBATCH = ROOT / "scripts" / "slurm" / "pretrain.sbatch"


def start_and_signal(cmd: list[str], cwd: Path, signum: int, after: str,
                     to_child: bool = False) -> tuple[int, str, list[int]]:
    """Run ``cmd``, send ``signum`` once a file matching ``after`` appears (to the first process
    Lightning started, with ``to_child``); (status, output, the started processes' ids)."""
    log_path = cwd / f"{signal.Signals(signum).name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, cwd=cwd, env=subprocess_env(cwd), stdout=log,
                                   stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while not list((cwd / "ckpt").rglob(after)):
            assert process.poll() is None and time.time() < deadline, log_path.read_text()
            time.sleep(0.05)
        children = [int(pid) for pid in subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()]
        if to_child:
            assert children, "no DDP process was started"
            os.kill(children[0], signum)
        else:
            process.send_signal(signum)
        status = process.wait(timeout=300)
    return status, log_path.read_text(), children


def interrupted_at(output: str, name: str) -> tuple[int, int, Path]:
    """(step, epoch, checkpoint) from the summary of a run stopped by signal ``name``."""
    stopped = re.search(rf"interrupted by {name} at step (\d+) \(epoch (\d+)\); checkpoint: (\S+)",
                        output)
    assert stopped, output[-3000:]
    return int(stopped.group(1)), int(stopped.group(2)), Path(stopped.group(3))


def cifar_command(cifar_mini: Path, tmp_path: Path, *extra: str) -> list[str]:
    return command(ROOT / "scripts" / "pretrain" / "cifar",
                   *fast(cifar_mini, tmp_path / "ckpt", epochs=1, batches=8),
                   "++knn_eval.enabled=False", "++precision=32", "++checkpoint.every_n_steps=2",
                   "++optimizer.batch_size=4", *extra)  # small steps: the test is about stopping


def test_sigterm_saves_the_step_exits_0_and_the_rerun_continues(
        cifar_mini: Path, tmp_path: Path) -> None:
    cmd = cifar_command(cifar_mini, tmp_path)
    status, output, _ = start_and_signal(cmd, tmp_path, signal.SIGTERM, "*-step=2.ckpt")
    assert status == 0, output[-3000:]
    step, epoch, path = interrupted_at(output, "SIGTERM")
    assert 2 <= step < 8 and epoch == 0 and "probe acc" not in output  # no results of a cut run
    run_dir = next((tmp_path / "ckpt" / "byol").iterdir())
    assert path == run_dir / f"byol-cifar10-{run_dir.name}-ep=0-step={step}.ckpt"
    # the signal's checkpoint is the only one (it replaced step 2's); nothing half written
    assert [p.name for p in run_dir.glob("*.ckpt*")] == [path.name]
    assert torch.load(path, map_location="cpu", weights_only=False)["global_step"] == step
    args = (run_dir / "args.json").read_bytes()

    second = run(cmd, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"auto-resume: continuing run {run_dir.name} from {path}" in second.stdout
    assert "interrupted" not in second.stdout
    assert (run_dir / "args.json").read_bytes() == args  # the run's config, as it first wrote it
    final = run_dir / f"byol-cifar10-{run_dir.name}-ep=0.ckpt"
    # the rerun did the steps left (8 in all), then saved the epoch's end in place of the step's
    assert torch.load(final, map_location="cpu", weights_only=False)["global_step"] == 8
    assert [p.name for p in run_dir.glob("*.ckpt*")] == [final.name]


def test_sigusr1_to_one_ddp_rank_stops_every_rank_after_one_save(
        cifar_mini: Path, tmp_path: Path) -> None:
    cmd = cifar_command(cifar_mini, tmp_path, "++devices=2", "++strategy=ddp")
    status, output, children = start_and_signal(cmd, tmp_path, signal.SIGUSR1, "*-step=2.ckpt",
                                                to_child=True)
    assert status == 0, output[-3000:]
    step, epoch, path = interrupted_at(output, "SIGUSR1")  # rank 0 learnt it from rank 1
    assert torch.load(path, map_location="cpu", weights_only=False)["global_step"] == step
    run_dir = path.parent
    assert [p.name for p in run_dir.glob("*.ckpt*")] == [path.name]
    deadline = time.time() + 60  # and rank 1 ended too, rather than waiting at a collective
    while any(running(pid) for pid in children):
        assert time.time() < deadline, f"DDP process {children} still running"
        time.sleep(0.2)


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux's /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def srun_line() -> list[str]:
    """The arguments of the srun line in the example sbatch script."""
    text = SBATCH.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.strip().startswith("srun "))
    return shlex.split(line, comments=True)


def test_example_sbatch_command_line_is_a_valid_config(cifar_mini: Path) -> None:
    from solo.config import parse_config
    from tests.helpers import load_raw

    args = srun_line()
    assert args[:3] == ["srun", "python", "main_pretrain.py"]
    config_dir = args[args.index("--config-path") + 1]
    config_name = args[args.index("--config-name") + 1]
    overrides = [arg for arg in args if arg.startswith("++")]
    keys = {arg.split("=")[0] for arg in overrides}
    assert {"++num_nodes", "++devices", "++strategy", "++checkpoint.enabled",
            "++auto_resume.enabled", "++checkpoint.every_n_minutes"} <= keys
    # the script's data paths are placeholders: real ones, as the config's checks read them
    overrides = [arg for arg in overrides if not arg.startswith("++data.")] + [
        f"++data.train_path={cifar_mini / 'train'}", f"++data.val_path={cifar_mini / 'test'}"]
    cfg = parse_config(load_raw(ROOT / config_dir, config_name, overrides))
    assert cfg.num_nodes == 2 and cfg.trainer["strategy"] == "ddp"
    assert cfg.checkpoint.enabled and cfg.auto_resume.enabled
    assert cfg.checkpoint.every_n_minutes == 30
    script = SBATCH.read_text()
    for directive in ("--nodes=2", "--ntasks-per-node=4", "--gres=gpu:4", "--signal=USR1@",
                      "--requeue", "--open-mode=append"):
        assert f"#SBATCH {directive}" in script
