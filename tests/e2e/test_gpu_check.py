"""scripts/benchmark/gpu_check.sh --dry-run: every step of the GPU check runs end to end on the
CPU at toy size, and the JSON and Markdown reports hold each step's figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_dry_run_writes_every_steps_figures(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # python3 is this interpreter, as on the GPU machine the image's python3 is
    env = {**os.environ, "OUT": str(out),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "benchmark" / "gpu_check.sh"),
                             "--dry-run", "--logs", str(tmp_path / "logs")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] and report["environment"]["torch"]
    tests = report["gpu_tests"]
    assert tests["status"] == "ok" and tests["counts"].get("skipped", 0) >= 1  # no GPU here
    assert not tests["counts"].get("failed") and not tests["counts"].get("passed")
    speed = report["speed"]
    assert speed["status"] == "ok"
    assert set(speed["figures"]["results"]) == {"cpu", "gpu", "gpu-compiled"}
    for figures in speed["figures"]["results"].values():
        assert figures["seconds"] > 0 and figures["images"] > 0
    training = report["byol_36"]
    assert training["status"] == "ok" and training["epochs"] == 1
    assert 0 <= training["probe_acc1"] <= 100 and 0 <= training["knn_acc1"] <= 100
    for run in report["short_runs"].values():
        assert run["status"] in ("ok", "not available yet")
    table = (out / "gpu_check.md").read_text()
    step = report["backbone_step"]
    assert step["status"] == "ok" and [r["backbone"] for r in step["figures"]] == ["vit_small"]
    assert step["figures"][0]["images_per_second"] > 0 and step["figures"][0]["fused_attention"]
    assert "| GPU-only tests | ok |" in table and "| gpu-compiled |" in table
    assert table in (out / "log.txt").read_text()  # printed too
    assert (tmp_path / "logs" / "speed.log").is_file()  # each step's whole output
    assert report["finished"] and "stopped" not in table
    assert report["gpu_tests"]["limit"] >= 300  # the dry run's share, and what was left over


def test_a_step_gets_its_share_plus_what_the_steps_before_left() -> None:
    from scripts.benchmark.gpu_check import StepClock

    clock = StepClock({"tests": 10.0, "train": 5.0})
    assert clock.limit("tests") == 10.0
    clock.spent(10.0, 4.0)
    assert clock.limit("train") == 11.0  # 5 of its own and the 6 the tests left
    clock.spent(11.0, 11.3)  # ran to its limit: nothing is left over, and no debt either
    assert clock.limit("train") == 5.0


def _args(tmp_path: Path, **shares: float):
    import argparse
    import time

    from scripts.benchmark.gpu_check import StepClock

    (tmp_path / "logs").mkdir(exist_ok=True)
    return argparse.Namespace(clock=StepClock(shares), logs=tmp_path / "logs", out=tmp_path,
                              start=time.perf_counter())


def _stopped(pid: int, wait: float = 10.0) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``wait`` seconds: SIGKILL is
    delivered, not waited for."""
    import time

    status = Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = status.read_text().split("State:")[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_a_step_past_its_limit_is_stopped_and_keeps_its_output(tmp_path: Path) -> None:
    from scripts.benchmark.gpu_check import run_step

    args = _args(tmp_path, slow=3.0, next=3.0)
    # a step that starts a worker of its own, as a DataLoader does, then runs past its limit
    command = [sys.executable, "-c", "import subprocess, sys, time; worker = subprocess.Popen("
               "[sys.executable, '-c', 'import time; time.sleep(60)']); "
               "print(worker.pid, flush=True); time.sleep(60)"]
    step = run_step("slow", command, "slow", args)
    assert step["status"] == "timeout" and step["limit"] == 3.0 and 3.0 <= step["seconds"] < 30
    worker = int(step["tail"][0])
    assert step["tail"] == [str(worker)] and str(worker) in (args.logs / "slow.log").read_text()
    assert _stopped(worker)  # the step's worker was stopped with it
    assert args.clock.limit("next") == 3.0
    done = run_step("quick", [sys.executable, "-c", "print('done')"], "next", args)
    assert done["status"] == "ok" and done["tail"] == ["done"]


def test_a_report_saved_midway_shows_what_ran_and_what_did_not(tmp_path: Path) -> None:
    from scripts.benchmark.gpu_check import environment, save

    args = _args(tmp_path)
    speed = {"status": "timeout", "seconds": 125.0, "limit": 125.0, "output": "x" * 10,
             "figures": {"recipe": "byol.yaml", "epochs": 3, "results": {  # gpu-compiled unfinished
                 "cpu": {"seconds": 12.0, "images": 4166.0, "busy": 31.0, "memory": 1.5,
                         "vs_cpu": 1.0},
                 "gpu": {"seconds": 3.0, "images": 16664.0, "busy": 90.0, "memory": 2.0,
                         "vs_cpu": 4.0}}}}
    report = {"dry_run": False, "finished": False, "environment": environment(),
              "logs": str(args.logs), "gpu_tests": {"status": "ok", "seconds": 60.0,
                                                   "counts": {"passed": 27}, "failures": []},
              "speed": speed}
    table = save(report, args)
    assert table == (tmp_path / "gpu_check.md").read_text()
    assert "stopped or still running" in table
    assert "| GPU-only tests | ok | 60.0 | 27 passed |" in table
    assert "| speed | timeout | 125.0 | see below |" in table
    assert "| gpu | 3.00 | 16664 | 90% | 2.00 | 4.0x |" in table and "gpu-compiled" not in table
    assert "| byol_36 | not run yet | | |" in table and "| backbone step | not run yet | | |" in table
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert not saved["finished"] and "output" not in saved["speed"]
    assert report["speed"]["output"] == "x" * 10  # the report in memory keeps it
    assert not list(tmp_path.glob("*.tmp"))


def test_a_rerun_of_chosen_steps_reports_the_others_as_not_chosen(tmp_path: Path) -> None:
    script = str(ROOT / "scripts" / "benchmark" / "gpu_check.py")
    result = subprocess.run([sys.executable, script, "--dry-run", "--steps", "backbone",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["finished"] and report["backbone_step"]["status"] == "ok"
    for key in ("gpu_tests", "speed", "byol_36"):
        assert report[key] == {"status": "not chosen (--steps)"}
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| byol_36 | not chosen (--steps) | | |" in table
    assert "| short runs | not chosen (--steps) | | |" in table

    wrong = subprocess.run([sys.executable, script, "--dry-run", "--steps", "tests,acuracy"],
                           capture_output=True, text=True, timeout=600)
    assert wrong.returncode == 2
    assert ("--steps: acuracy; choose from tests, speed, backbone, train, short"
            in wrong.stderr), wrong.stderr


def test_ctrl_c_stops_the_running_step_too(tmp_path: Path) -> None:
    import signal
    import time

    # the step runs in its own process group, which a terminal's Ctrl-C does not reach: the
    # check must stop it itself, not wait for it
    pid_file = tmp_path / "step.pid"
    step = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    driver = (f"import argparse, sys; from pathlib import Path; sys.path.insert(0, {str(ROOT)!r}); "
              "from scripts.benchmark.gpu_check import StepClock, run_step; "
              f"args = argparse.Namespace(clock=StepClock({{'s': 60.0}}), logs=Path({str(tmp_path)!r})); "
              f"run_step('s', [sys.executable, '-c', {step!r}], 's', args)")
    process = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    step_pid = int(pid_file.read_text())
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends the check's own process group
    _, stderr = process.communicate(timeout=20)
    assert "KeyboardInterrupt" in stderr and process.returncode != 0
    assert _stopped(step_pid)
