"""Auto-resume: find the newest checkpoint of an earlier run of the same experiment."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

# the parts of a config that must match for a checkpoint to be continued by a rerun
COMPATIBILITY_KEYS = ("name", "method", "backbone", "method_kwargs", "data.dataset",
                      "data.train_path", "optimizer.name", "optimizer.batch_size", "optimizer.lr",
                      "optimizer.weight_decay", "augmentations", "trainer.max_epochs")


@dataclass
class ResumePoint:
    checkpoint: Path
    run_id: str


def _select(cfg: dict[str, Any], dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def compatible(saved: dict[str, Any], current: dict[str, Any],
               keys: Sequence[str] = COMPATIBILITY_KEYS) -> bool:
    # a JSON round trip makes tuples lists and keys strings on both sides
    saved, current = json.loads(json.dumps(saved, default=str)), json.loads(json.dumps(current, default=str))
    return all(_select(saved, key) == _select(current, key) for key in keys)


def run_id_of(checkpoint: str | Path) -> str | None:
    """The run id recorded in ``args.json`` beside a checkpoint, if it is one of ours."""
    args_file = Path(checkpoint).parent / "args.json"
    try:
        return json.loads(args_file.read_text()).get("run_id")
    except (OSError, json.JSONDecodeError):
        return None


def epoch_of(checkpoint: Path) -> int:
    """The epoch in a checkpoint's name (``...-ep=<epoch>.ckpt``), -1 when the name has none."""
    match = re.search(r"-ep=(\d+)$", Path(checkpoint).stem)
    return int(match.group(1)) if match else -1


def find_resume_point(checkpoint_dir: str | Path, method: str, cfg: dict[str, Any],
                      max_hours: float, keys: Sequence[str] = COMPATIBILITY_KEYS) -> ResumePoint | None:
    """The newest ``.ckpt`` of a compatible run (equal at every dotted key of ``keys``) in
    ``<checkpoint_dir>/<method>/`` younger than ``max_hours``, if any."""
    best: tuple[tuple[float, int], ResumePoint] | None = None
    now = time.time()
    for args_file in Path(checkpoint_dir, method).glob("*/args.json"):
        try:
            saved = json.loads(args_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not compatible(saved.get("cfg", {}), cfg, keys):
            continue
        for ckpt in args_file.parent.glob("*-ep=*.ckpt"):
            mtime = ckpt.stat().st_mtime
            if (now - mtime) / 3600 > max_hours:
                continue
            key = (mtime, epoch_of(ckpt))
            if best is None or key > best[0]:
                best = (key, ResumePoint(ckpt, saved["run_id"]))
    return best[1] if best else None
