"""Auto-resume: find the newest checkpoint of an earlier run of the same experiment, one whose
whole resolved config equals this run's but for the changes a restart may bring."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

# what may differ between the run that wrote a checkpoint and the rerun that continues it: where
# files are, which devices, how many workers, logging, and speed settings that do not change what
# is computed. A key ending in ".*" covers its whole section. Everything else of the resolved
# config must be equal (the lr is scaled to the new global batch when devices change)
RESTART_CHANGES = (
    "data.train_path", "data.val_path", "data.num_workers", "backbone.pretrained", "checkpoint.dir",
    "checkpoint.frequency", "checkpoint.keep_prev", "checkpoint.every_n_steps",
    "checkpoint.every_n_minutes", "auto_resume.*", "resume_from_checkpoint",
    "wandb.*", "dali.device", "num_nodes", "performance.compile", "performance.compile_mode",
    "performance.compile_backend", "performance.disable_channel_last",
    "performance.progress_bar_refresh_rate", "trainer.devices", "trainer.num_nodes",
    "trainer.accelerator", "trainer.strategy", "trainer.log_every_n_steps",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.limit_val_batches",
    "trainer.num_sanity_val_steps", "trainer.check_val_every_n_epoch",
)
# pretraining adds the pipeline that makes the views (the same distributions) and its evaluation
RESUMABLE_CHANGES = RESTART_CHANGES + (
    "data.pipeline", "data.resident_max_gb", "knn_eval.*", "auto_umap.*", "no_validation",
    "debug_augmentations",
)
ONLY_UPWARD = ("trainer.max_epochs",)  # a run may be extended, never shortened
_MISSING = object()


@dataclass
class ResumePoint:
    checkpoint: Path
    run_id: str


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted key: leaf}; lists (crop groups, milestones) are leaves."""
    if isinstance(value, dict) and (value or not prefix):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def schema_defaults(schema: type) -> dict[str, Any]:
    """{dotted key: default} of every field of the dataclass ``schema`` that has a default, as
    a saved config holds it: a key a newer release adds is compatible at its default."""
    defaults: dict[str, Any] = {}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[f.name]):
            defaults.update({f"{f.name}.{k}": v for k, v in schema_defaults(hints[f.name]).items()})
        elif f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults.update(_flatten({f.name: _plain(f.default_factory())}))
    return _plain(defaults)


def _plain(value: Any) -> Any:
    """JSON's view of a value: tuples become lists, dataclasses dicts, keys strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))


def _allowed(key: str, allowed: Sequence[str]) -> bool:
    return any(key == a or (a.endswith(".*") and key.startswith(a[:-1])) for a in allowed)


def config_differences(saved: dict[str, Any], current: dict[str, Any],
                       allowed: Sequence[str] = RESUMABLE_CHANGES,
                       defaults: dict[str, Any] | None = None) -> list[str]:
    """The keys at which two resolved configs differ, as "key (saved -> current)", leaving out
    the ``allowed`` changes and ``max_epochs`` raised; a key one side lacks counts as its
    ``defaults`` value."""
    flat_saved, flat_current = _flatten(_plain(saved)), _flatten(_plain(current))
    defaults = defaults or {}
    differences = []
    for key in sorted(set(flat_saved) | set(flat_current)):
        if _allowed(key, allowed):
            continue
        before = flat_saved.get(key, defaults.get(key, _MISSING))
        after = flat_current.get(key, defaults.get(key, _MISSING))
        if before == after:
            continue
        if key in ONLY_UPWARD and isinstance(before, (int, float)) and \
                isinstance(after, (int, float)) and after >= before:
            continue
        shown = ["(unset)" if v is _MISSING else repr(v) for v in (before, after)]
        differences.append(f"{key} ({shown[0]} -> {shown[1]})")
    return differences


def run_id_of(checkpoint: str | Path) -> str | None:
    """The run id recorded in ``args.json`` beside a checkpoint, if it is one of ours."""
    args_file = Path(checkpoint).parent / "args.json"
    try:
        return json.loads(args_file.read_text()).get("run_id")
    except (OSError, json.JSONDecodeError):
        return None


# ``...-ep=<epoch>.ckpt`` at an epoch's end, ``...-ep=<epoch>-step=<global step>.ckpt`` inside it
_CHECKPOINT_NAME = re.compile(r"-ep=(\d+)(?:-step=(\d+))?$")


def epoch_of(checkpoint: Path) -> int:
    """The epoch in a checkpoint's name (``...-ep=<epoch>[-step=<step>].ckpt``), -1 when the name
    has none."""
    return position_of(checkpoint)[0]


def position_of(checkpoint: Path) -> tuple[int, int, int]:
    """How far into training a checkpoint's name says it is, as a sort key: (epoch, 1 at the
    epoch's end else 0, step inside it); (-1, 0, 0) for a name of another form."""
    match = _CHECKPOINT_NAME.search(Path(checkpoint).stem)
    if not match:
        return (-1, 0, 0)
    step = match.group(2)
    return (int(match.group(1)), 0 if step is not None else 1, int(step or 0))


def find_resume_point(checkpoint_dir: str | Path, method: str, cfg: dict[str, Any],
                      max_hours: float, allowed: Sequence[str] = RESUMABLE_CHANGES,
                      defaults: dict[str, Any] | None = None) -> ResumePoint | None:
    """The newest ``.ckpt`` of a compatible run in ``<checkpoint_dir>/<method>/`` younger than
    ``max_hours``: a run whose resolved config equals ``cfg`` but for ``allowed`` changes (see
    ``config_differences``). A run of the same name that differs is reported, not continued."""
    best: tuple[tuple[float, int, int, int], ResumePoint] | None = None
    now = time.time()
    for args_file in sorted(Path(checkpoint_dir, method).glob("*/args.json")):
        try:
            saved = json.loads(args_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        saved_cfg = saved.get("cfg", {})
        young = [ckpt for ckpt in args_file.parent.glob("*-ep=*.ckpt")
                 if (now - ckpt.stat().st_mtime) / 3600 <= max_hours]
        if not young:
            continue
        differences = config_differences(saved_cfg, cfg, allowed, defaults)
        if differences:
            if saved_cfg.get("name") == cfg.get("name"):
                shown = "; ".join(differences[:5]) + ("; ..." if len(differences) > 5 else "")
                print(f"auto-resume: not continuing run {saved.get('run_id')}, whose config "
                      f"differs: {shown}")
            continue
        for ckpt in young:
            key = (ckpt.stat().st_mtime, *position_of(ckpt))
            if best is None or key > best[0]:
                best = (key, ResumePoint(ckpt, saved["run_id"]))
    return best[1] if best else None
