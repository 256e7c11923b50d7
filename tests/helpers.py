"""Building configs from the shipped YAMLs for tests."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from solo.config import ExperimentConfig, parse_config

ROOT = Path(__file__).resolve().parents[1]
CIFAR_CONFIGS = ROOT / "scripts" / "pretrain" / "cifar"
# a recipe's file is named after its method, but solo-learn's Barlow Twins recipe is barlow.yaml
RECIPE_FILES = {"barlow_twins": "barlow.yaml"}


def recipe_file(method: str) -> str:
    """The file name of ``method``'s shipped recipe in scripts/pretrain/<dataset>/."""
    return RECIPE_FILES.get(method, f"{method}.yaml")


def load_raw(config_dir: Path, name: str, overrides: list[str] | None = None) -> dict:
    """Compose a YAML with Hydra, as main_pretrain.py does, into a plain dict."""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        composed = compose(config_name=name, overrides=overrides or [])
    return OmegaConf.to_container(composed, resolve=True)


def small_cpu_overrides(data_root: Path, batch_size: int = 16) -> list[str]:
    """Shipped recipe, but on the CPU, on the repository's CIFAR-10 subset, with small batches."""
    return [f"++data.train_path={data_root / 'train'}", f"++data.val_path={data_root / 'test'}",
            "++data.num_workers=0", f"++optimizer.batch_size={batch_size}",
            "++accelerator=cpu", "++devices=1", "++precision=32", "++strategy=auto",
            "++checkpoint.enabled=False", "++auto_resume.enabled=False"]


def shipped_config(method: str, data_root: Path, extra: list[str] | None = None) -> ExperimentConfig:
    return parse_config(load_raw(CIFAR_CONFIGS, recipe_file(method),
                                 small_cpu_overrides(data_root) + (extra or [])))
