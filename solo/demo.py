"""The first run: pretrain on the bundled CIFAR-10 subset and show that the features got better.

    python -m solo.demo [++max_epochs=N ...]     (what scripts/demo.sh runs)

On a CPU it trains scripts/demo/simclr_cpu.yaml, sized for about five minutes on two cores; on a
GPU the shipped SimCLR CIFAR recipe (scripts/pretrain/cifar/simclr.yaml), longer. Either way it
measures the backbone's kNN accuracy on the 1,000 held-out images before and after pretraining
and ends with one table and the commands to try next on the checkpoint.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from solo.cli import exit_on_user_error
from solo.config import ConfigError, ExperimentConfig, parse_config
from solo.pretrain import PretrainResult, pretrain, summary

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "cifar10-mini"
CHECKPOINTS = "trained_models/demo"


@dataclass(frozen=True)
class DemoRecipe:
    config_dir: Path
    config_name: str
    overrides: tuple[str, ...]
    device: str  # what the table reports


def demo_recipe(cuda: bool) -> DemoRecipe:
    """The CPU demo, or on a GPU the real recipe (CIFAR stem, two crops with blur, batch 256) for
    200 epochs of the subset: 1,400 steps, a minute or two on a current GPU."""
    data = (f"++data.train_path={DATA / 'train'}", f"++data.val_path={DATA / 'test'}")
    if not cuda:
        return DemoRecipe(REPO / "scripts" / "demo", "simclr_cpu.yaml", data, "cpu")
    return DemoRecipe(REPO / "scripts" / "pretrain" / "cifar", "simclr.yaml", (
        *data, "++name=simclr-cifar10-demo", "++max_epochs=200", "++accelerator=gpu",
        "++devices=1", "++strategy=auto", "++sync_batchnorm=False", "++auto_resume.enabled=False",
        f"++checkpoint.dir={CHECKPOINTS}", f"++data.num_workers={min(8, os.cpu_count() or 1)}"), "gpu")


def demo_config(recipe: DemoRecipe, user_overrides: Sequence[str] = ()) -> ExperimentConfig:
    if not recipe.config_dir.is_dir() or not DATA.is_dir():
        raise ConfigError(f"the demo needs {recipe.config_dir} and {DATA}: run it from a clone "
                          "of the repository (an installed wheel does not ship them)")
    with initialize_config_dir(config_dir=str(recipe.config_dir), version_base="1.3"):
        raw = compose(config_name=recipe.config_name,
                      overrides=[*recipe.overrides, *user_overrides])
    raw = OmegaConf.to_container(raw, resolve=True)
    every = raw.get("check_val_every_n_epoch", 1)
    if raw.get("max_epochs") and raw["max_epochs"] % every:  # the last epoch must measure "after"
        raw["check_val_every_n_epoch"] = raw["max_epochs"]
    return parse_config(raw)


def last_checkpoint(run_dir: Path) -> Optional[Path]:
    checkpoints = sorted(run_dir.glob("*.ckpt"), key=lambda path: path.stat().st_mtime)
    return checkpoints[-1] if checkpoints else None


def report(cfg: ExperimentConfig, result: PretrainResult, seconds: float, device: str) -> str:
    """The table (kNN before, after, gain, time, run folder) and the commands to try next."""
    before, after = result.before.get("knn_acc1"), result.metrics.get("knn_acc1")
    if before is None or after is None:
        raise ConfigError("the demo measures kNN before and after: keep knn_eval.enabled True "
                          "and data.val_path set")
    k = cfg.knn_eval
    checkpoint = last_checkpoint(result.run_dir)
    rows = [
        (f"kNN acc@1 (k={k.k}, {k.distance_func}), {cfg.data.val_path}", ""),
        ("  random initialization", f"{100 * before:.1f}%"),
        (f"  after {cfg.trainer['max_epochs']} epochs of {cfg.method}", f"{100 * after:.1f}%"),
        ("  gain", f"{100 * (after - before):+.1f} points"),
        ("wall time (pretraining)", f"{seconds:.0f} s on the {device}"),
        ("run folder", str(result.run_dir)),
    ]
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{label:<{width}}{value}" for label, value in rows]
    if checkpoint is not None:
        data = (f"++data.train_path={cfg.data.train_path} "
                f"++data.val_path={cfg.data.val_path}")
        quoted = shlex.quote(f'++pretrained_feature_extractor="{checkpoint}"')
        lines += [
            "", "next, on this checkpoint:",
            "  # kNN over several k, temperatures, distances; backbone and projector features",
            "  python main_knn.py --config-path scripts/knn/cifar --config-name knn.yaml "
            f"++pretrained_checkpoint_dir={result.run_dir} {data} ++num_workers=2",
            "  # a linear probe on the frozen backbone (features extracted once)",
            "  python main_linear.py --config-path scripts/linear/cifar --config-name linear.yaml "
            f"{quoted} {data} ++cache_features=True ++max_epochs=20 ++accelerator=auto "
            "++devices=1 ++data.num_workers=2",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    with exit_on_user_error():
        recipe = demo_recipe(torch.cuda.is_available())
        cfg = demo_config(recipe, argv)
        start = time.perf_counter()
        result = pretrain(cfg)
        seconds = time.perf_counter() - start
        if result.is_global_zero:  # a run stopped by a signal says where to continue instead
            print("\n" + (summary(cfg, result) if result.interrupted is not None
                          else report(cfg, result, seconds, recipe.device)))


if __name__ == "__main__":
    main(sys.argv[1:])
