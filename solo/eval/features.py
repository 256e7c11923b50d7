"""Features of a whole dataset under a frozen encoder, for offline evaluation (kNN, linear, UMAP)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

if TYPE_CHECKING:  # imported lazily below: the linear evaluation imports this module too
    from solo.eval.eval_config import EvalConfig, EvalDataConfig
    from solo.zoo import Pretrained

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
BF16_PRECISIONS = ("bf16", "bf16-mixed", "bf16-true")


def pick_device(accelerator: str = "auto") -> torch.device:
    """The device to evaluate on: CUDA when there is one and ``accelerator`` is not "cpu"."""
    accelerator = str(accelerator).lower()
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator must be one of {ACCELERATORS}, got '{accelerator}'")
    if accelerator == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if accelerator in ("gpu", "cuda"):
        raise RuntimeError(f"accelerator '{accelerator}' was asked for but torch sees no CUDA "
                           "device; use accelerator=cpu or auto")
    return torch.device("cpu")


def autocast_context(device: torch.device, precision: str) -> torch.autocast | nullcontext:
    """bf16 autocast for "bf16*" precisions (fp16 autocast does not run on CPUs), else nothing."""
    precision = str(precision)
    if precision in BF16_PRECISIONS:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision not in ("32", "32-true"):
        raise ValueError(f"precision must be '32' or one of {BF16_PRECISIONS}, got '{precision}'")
    return nullcontext()


def extract_features(encoder: Callable[[Tensor], Tensor], loader: DataLoader,
                     device: torch.device | str, precision: str = "32") -> tuple[Tensor, Tensor]:
    """Run ``encoder`` over a loader of ``(images, targets)`` batches.

    Returns the features, float32 on the CPU, (N, F), and the targets, int64, (N,), in the
    loader's order. The caller puts the encoder on ``device`` and in eval mode.
    """
    device = torch.device(device)
    features: list[Tensor] = []
    targets: list[Tensor] = []
    with torch.inference_mode(), autocast_context(device, precision):
        for images, batch_targets in loader:
            out = encoder(images.to(device, non_blocking=True))
            # float32 before leaving autocast: bf16 distances lose neighbours' order
            features.append(out.float().flatten(1).cpu())
            targets.append(torch.as_tensor(batch_targets).long().cpu())
    if not features:
        raise ValueError("the loader yielded no batches; is the dataset empty?")
    return torch.cat(features), torch.cat(targets)


# ----------------------------------------------------------------------------------------------
# what main_knn.py and main_umap.py encode with
# ----------------------------------------------------------------------------------------------
def pretraining_transform_settings(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``crop_size``, ``mean`` and ``std`` of the first crop group of a pretraining config (ours
    or solo-learn's, which share the ``augmentations`` list), where it has them."""
    groups = (cfg or {}).get("augmentations")
    first = groups[0] if isinstance(groups, (list, tuple)) and groups else None
    if not isinstance(first, Mapping):
        return {}
    return {key: first[key] for key in ("crop_size", "mean", "std") if first.get(key) is not None}


def eval_transform(data: EvalDataConfig, pretrained_cfg: Mapping[str, Any] | None) -> Callable:
    """The deterministic validation transform, at ``data.augmentations``' crop size and
    normalization, else the pretraining's where it set them, else the dataset's native size and
    channel statistics (DATASET_NORMALIZATION, ImageNet's for other datasets)."""
    from solo.config import dataset_normalization, resolve_normalization
    from solo.data import build_val_transform
    from solo.eval.linear_config import DEFAULT_CROP_SIZE, IMAGENET_CROP_SIZE

    pretraining = pretraining_transform_settings(pretrained_cfg)
    aug = data.augmentations
    crop_size = (aug.crop_size or pretraining.get("crop_size")
                 or DEFAULT_CROP_SIZE.get(data.dataset, IMAGENET_CROP_SIZE))
    mean, std = resolve_normalization(aug.mean or pretraining.get("mean"),
                                      aug.std or pretraining.get("std"),
                                      dataset_normalization(data.dataset))
    return build_val_transform(int(crop_size), mean, std, data.dataset)


def load_projector(pretrained: Pretrained) -> nn.Module:
    """The checkpoint's projector, rebuilt by its method's class from the checkpoint's config,
    with the ``projector.*`` weights loaded strictly; in eval mode."""
    from solo.zoo.checkpoints import CheckpointError, load_weights_strictly
    from solo.zoo.methods import rebuild_method

    weights = {k[len("projector."):]: v for k, v in pretrained.state_dict.items()
               if k.startswith("projector.")}
    if not weights:
        raise CheckpointError(f"the checkpoint ({pretrained.source_format} format) has no projector "
                              "weights (no 'projector.*' keys); use ++feature_type=[backbone]")
    try:
        model = rebuild_method(pretrained)
    except CheckpointError as error:
        raise CheckpointError(f"projector features: {error}; use ++feature_type=[backbone]") from None
    projector = getattr(model, "projector", None)
    if not isinstance(projector, nn.Module):
        raise CheckpointError(f"method '{pretrained.method}' has no projector; use "
                              "++feature_type=[backbone]")
    load_weights_strictly(projector, weights, f"the checkpoint's projector for {pretrained.method}")
    return projector.eval()


def build_loader(data: EvalDataConfig, split: str, transform: Callable, batch_size: int,
                 num_workers: int) -> DataLoader:
    """``(image, target)`` batches of ``split`` in dataset order; ``data.fraction`` thins the
    training split as in pretraining."""
    from solo.data import build_dataset

    dataset = build_dataset(data, split, transform, indexed=False)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available())


def load_checkpoint(cfg: EvalConfig) -> tuple[Pretrained, Path]:
    """The pretrained backbone named by the config, and the checkpoint file it came from."""
    from solo.eval.eval_config import checkpoint_file
    from solo.zoo import load_pretrained

    path = checkpoint_file(cfg)
    return load_pretrained(path, backbone=cfg.backbone.name, cifar_stem=cfg.backbone.cifar_stem), path


def project(projector: nn.Module, features: Tensor, device: torch.device, precision: str = "32",
            batch_size: int = 1024) -> Tensor:
    """``projector`` applied to stored features, in batches on ``device``; float32 on the CPU."""
    dummy_targets = torch.zeros(len(features), dtype=torch.long)
    loader = DataLoader(TensorDataset(features, dummy_targets), batch_size=batch_size)
    return extract_features(projector, loader, device, precision)[0]
