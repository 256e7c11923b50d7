"""2-D UMAP of backbone features: a PNG coloured by class and an .npz of the coordinates.

``main_umap.py`` embeds a dataset offline; ``AutoUMAP`` does it during pretraining, every
``auto_umap.frequency`` epochs, with the validation features that validation computes anyway.
umap-learn and matplotlib are the ``umap`` extra: ``pip install 'solo[umap]'``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from solo.config import ConfigError, ExperimentConfig
from solo.utils.checkpoint import write_atomic

if TYPE_CHECKING:
    from solo.eval.eval_config import UmapConfig

INSTALL_HINT = "pip install 'solo[umap]' (umap-learn and matplotlib)"
LEGEND_MAX_CLASSES = 30  # beyond that a legend covers the plot; the .npz still has every label


def require_umap() -> None:
    """Fail with the install command when umap-learn or matplotlib is missing."""
    missing = []
    for module in ("umap", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            missing.append("umap-learn" if module == "umap" else module)
    if missing:
        raise ImportError(f"UMAP plots need {' and '.join(missing)}, which are not installed: "
                          f"{INSTALL_HINT}")


def umap_embedding(features: Tensor | np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1,
                   metric: str = "euclidean", seed: int | None = 0) -> np.ndarray:
    """(N, 2) float32 UMAP coordinates of (N, F) features. A seed makes runs repeat exactly but
    keeps umap-learn on one core."""
    require_umap()
    import umap

    x = features.float().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    if len(x) <= n_neighbors:
        raise ValueError(f"UMAP with n_neighbors={n_neighbors} needs more than {n_neighbors} "
                         f"points, got {len(x)}")
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                        random_state=seed, n_jobs=1 if seed is not None else -1)
    return reducer.fit_transform(x).astype(np.float32)


def _colours(num_classes: int) -> list[Any]:
    from matplotlib import colormaps

    if num_classes <= 10:
        return [colormaps["tab10"](i) for i in range(num_classes)]
    if num_classes <= 20:
        return [colormaps["tab20"](i) for i in range(num_classes)]
    return [colormaps["turbo"](i / max(1, num_classes - 1)) for i in range(num_classes)]


@dataclass
class UmapFiles:
    png: Path
    npz: Path


def save_umap(stem: str | Path, coords: np.ndarray, labels: Tensor | np.ndarray,
              class_names: Sequence[str] | None = None, title: str | None = None) -> UmapFiles:
    """Write ``<stem>.png`` (points coloured by label, with a legend) and ``<stem>.npz``
    (``coords`` (N, 2), ``labels`` (N,), ``class_names``), each atomically."""
    require_umap()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = labels.cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    labels = labels.astype(np.int64)
    if coords.shape != (len(labels), 2):
        raise ValueError(f"need (N, 2) coordinates for N={len(labels)} labels, got {coords.shape}")
    present = np.unique(labels)
    num_classes = int(max(present.max() + 1, len(class_names or [])))
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    names += [str(i) for i in range(len(names), num_classes)]

    # a Figure without pyplot: no global state, no display backend needed
    figure = Figure(figsize=(9, 9), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = _colours(num_classes)
    size = max(1.0, min(20.0, 20000 / len(labels)))  # small points when there are many
    for label in present:
        mask = labels == label
        colour = colours[label] if label >= 0 else (0.5, 0.5, 0.5, 1.0)  # -1: unlabelled
        axes.scatter(coords[mask, 0], coords[mask, 1], s=size, color=colour, alpha=0.8,
                     linewidths=0, label=names[label] if label >= 0 else "unlabelled")
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title)
    if len(present) <= LEGEND_MAX_CLASSES:
        axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=max(1, 30 / size),
                    frameon=False)
    figure.tight_layout()

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    files = UmapFiles(stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".npz"))
    write_atomic(files.png, lambda handle: figure.savefig(handle, format="png"))
    write_atomic(files.npz, lambda handle: np.savez(
        handle, coords=coords.astype(np.float32), labels=labels, class_names=np.asarray(names)))
    return files


# ----------------------------------------------------------------------------------------------
# main_umap.py
# ----------------------------------------------------------------------------------------------
def run_umap(cfg: UmapConfig) -> UmapFiles:
    """Encode ``cfg.split`` with the checkpoint's backbone, embed it in 2-D and save the files."""
    from solo.eval.features import (
        build_loader,
        eval_transform,
        extract_features,
        load_checkpoint,
        pick_device,
    )

    require_umap()  # before minutes of feature extraction
    device = pick_device(cfg.accelerator)
    pretrained, path = load_checkpoint(cfg)
    transform = eval_transform(cfg.data, pretrained.cfg)
    loader = build_loader(cfg.data, cfg.split, transform, cfg.batch_size, cfg.workers)
    features, labels = extract_features(pretrained.backbone.to(device).eval(), loader, device,
                                        cfg.precision)
    coords = umap_embedding(features, cfg.n_neighbors, cfg.min_dist, cfg.metric, cfg.seed)
    stem = Path(cfg.output_dir) / f"{path.stem}-{cfg.split}"
    title = f"{path.name}: {cfg.split} set, {len(labels)} images"
    return save_umap(stem, coords, labels, getattr(loader.dataset, "classes", None), title)


# ----------------------------------------------------------------------------------------------
# during pretraining
# ----------------------------------------------------------------------------------------------
class AutoUMAP(pl.Callback):
    """Every ``frequency`` epochs (and after the last), a UMAP of the validation set's backbone
    features into ``<out_dir>/ep=<epoch>.{png,npz}``.

    The features are captured with a forward hook on ``pl_module.backbone`` while validation runs
    its first loader (the validation set), so no extra pass over the images is made; every
    process contributes its share and rank 0 alone computes the UMAP and writes the files.
    """

    def __init__(self, out_dir: str | Path, frequency: int = 1, class_names: Sequence[str] | None = None,
                 n_neighbors: int = 15, min_dist: float = 0.1, seed: int | None = 0) -> None:
        require_umap()
        if frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {frequency}")
        self.out_dir, self.frequency, self.class_names = Path(out_dir), frequency, class_names
        self.n_neighbors, self.min_dist, self.seed = n_neighbors, min_dist, seed
        self._features: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._capturing = False
        self._handle: Any = None

    def _due(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return False
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        return epoch % self.frequency == 0 or last

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._features, self._targets = [], []
        if self._due(trainer) and self._handle is None:
            self._handle = pl_module.backbone.register_forward_hook(self._capture)

    def _capture(self, module: torch.nn.Module, inputs: Any, output: Tensor) -> None:
        if self._capturing:
            self._features.append(output.detach().float())

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                  batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._capturing = self._handle is not None and dataloader_idx == 0

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self._capturing:
            self._targets.append(batch[1].detach())
            if len(self._features) != len(self._targets):
                raise RuntimeError("AutoUMAP expected one backbone call per validation batch, got "
                                   f"{len(self._features)} for {len(self._targets)} batches")
        self._capturing = False

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._handle is None:
            return
        self._handle.remove()
        self._handle = None
        if not self._features:
            return
        features, targets = torch.cat(self._features), torch.cat(self._targets)
        self._features, self._targets = [], []
        if trainer.world_size > 1:  # every process holds its share; equal sizes (padded sampler)
            features = pl_module.all_gather(features).flatten(0, 1)
            targets = pl_module.all_gather(targets).flatten(0, 1)
        if trainer.is_global_zero:
            epoch = trainer.current_epoch
            coords = umap_embedding(features, self.n_neighbors, self.min_dist, seed=self.seed)
            save_umap(self.out_dir / f"ep={epoch}", coords, targets, self.class_names,
                      f"epoch {epoch}: validation set, {len(targets)} images")
        trainer.strategy.barrier()  # the others wait here, not inside their next collective


def build_auto_umap(cfg: ExperimentConfig, run_id: str) -> AutoUMAP:
    """The callback that ``auto_umap.enabled`` adds, writing into
    ``<auto_umap.dir>/<method>/<run id>/``; fails early when it cannot work."""
    if not cfg.data.val_path or cfg.no_validation:
        raise ConfigError("auto_umap.enabled: plots the validation set, so it needs data.val_path "
                          "and no_validation: False")
    if cfg.auto_umap.frequency < 1:
        raise ConfigError(f"auto_umap.frequency: must be >= 1, got {cfg.auto_umap.frequency}")
    try:
        require_umap()
    except ImportError as error:
        raise ConfigError(f"auto_umap.enabled: {error}") from None
    return AutoUMAP(Path(cfg.auto_umap.dir) / cfg.method / run_id, cfg.auto_umap.frequency,
                    class_names=_class_names(cfg), seed=cfg.seed)


def _class_names(cfg: ExperimentConfig) -> list[str] | None:
    """The class folders' names of an ImageFolder validation set (ImageFolder numbers the classes
    in sorted order), found without reading the dataset; None for other layouts."""
    path = os.path.expanduser(str(cfg.data.val_path))
    if cfg.data.format != "image_folder" or not os.path.isdir(path):
        return None
    with os.scandir(path) as entries:
        folders = sorted(entry.name for entry in entries if entry.is_dir())
    # torchvision's files (a 'cifar-10-batches-py' folder, ...) are not class folders
    return folders if len(folders) == cfg.num_classes else None
