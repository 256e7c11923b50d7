"""A tiny pretrained checkpoint and config overrides shared by the linear-evaluation tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from solo.methods import BYOL
from tests.helpers import ROOT, shipped_config

LINEAR_CONFIGS = ROOT / "scripts" / "linear" / "cifar"


def save_byol_checkpoint(path: Path, data_root: Path, cifar_stem: bool = False) -> Path:
    """A randomly initialised BYOL from the shipped CIFAR recipe (small heads), saved as a
    Lightning checkpoint, the layout our Checkpointer writes (``state_dict`` + ``hyper_parameters``
    holding the config). The ImageNet stem keeps 32x32 forward passes cheap on a CPU."""
    cfg = shipped_config("byol", data_root, [
        "++method_kwargs.proj_hidden_dim=64", "++method_kwargs.proj_output_dim=32",
        "++method_kwargs.pred_hidden_dim=64", f"++backbone.cifar_stem={cifar_stem}"])
    torch.manual_seed(0)
    model = BYOL(cfg)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"cfg": cfg.to_dict()},
                "epoch": 0, "global_step": 0}, path)
    return path


def backbone_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The ``backbone.*`` tensors of a Lightning checkpoint (weights and BN buffers)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("backbone.")}


def small_val_folder(source: Path, target: Path, per_class: int) -> Path:
    """The first ``per_class`` images of every class of ``source``, linked into ``target``."""
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        (target / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            os.symlink(image, target / class_dir.name / image.name)
    return target


def linear_overrides(pretrained: Path, data_root: Path, checkpoint_dir: Path,
                     val_path: Path | None = None, batch_size: int = 16) -> list[str]:
    """Shipped linear recipe, but on the CPU, on the repository's CIFAR-10 subset, small batches."""
    return [f"++pretrained_feature_extractor=\"{pretrained}\"",  # quoted: a name may hold "="
            f"++data.train_path={data_root / 'train'}",
            f"++data.val_path={val_path or data_root / 'test'}",
            "++data.num_workers=0", f"++optimizer.batch_size={batch_size}",
            "++accelerator=cpu", "++devices=1", "++precision=32",
            f"++checkpoint.dir={checkpoint_dir}", "++enable_progress_bar=False"]
