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
