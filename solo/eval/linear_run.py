"""A linear-evaluation (or fine-tuning) run from a validated config: backbone, data, trainer, resume.

Runs write to ``<checkpoint.dir>/linear/<run id>/`` the layout of pretraining runs: ``args.json``,
``<name>-<run id>-ep=<N>.ckpt`` (when ``checkpoint.enabled``), ``logs/version_<K>/metrics.csv``,
``train_subset.json`` when ``data.fraction`` keeps a subset, and ``curves.png`` (with matplotlib).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl

from solo.eval.linear import LinearModel
from solo.eval.linear_config import LinearConfig
from solo.eval.linear_data import LinearDataModule
from solo.pretrain import RUN_ID_VARIABLE, build_loggers, progress_bar, trainer_kwargs
from solo.plot import write_run_curves
from solo.utils.checkpoint import Checkpointer, new_run_id
from solo.utils.resume import RESTART_CHANGES, find_resume_point, run_id_of, schema_defaults
from solo.utils.schema import ConfigError
from solo.zoo import CheckpointError, Pretrained, load_pretrained

RUNS_FOLDER = "linear"  # runs go to <checkpoint.dir>/linear/<run id>, as in solo-learn
# what may differ between a linear run and the rerun that continues it; the pretrained checkpoint,
# the data subset and the recipe may not
RESUMABLE_CHANGES = RESTART_CHANGES


@dataclass
class LinearResult:
    run_dir: Path
    pretrained: Pretrained
    metrics: dict[str, float] = field(default_factory=dict)  # last logged values
    epochs: int = 0  # epochs trained when the run ended
    train_images: int = 0
    is_global_zero: bool = True  # the process that reports


def load_backbone(cfg: LinearConfig) -> Pretrained:
    """The pretrained backbone named by the config (a ConfigError when it cannot be loaded);
    fills ``cfg.backbone`` and ``cfg.pretrain_method`` with what the checkpoint holds."""
    path = str(cfg.pretrained_feature_extractor)
    try:
        pretrained = load_pretrained(path, backbone=cfg.backbone.name,
                                     cifar_stem=cfg.backbone.cifar_stem,
                                     backbone_kwargs=cfg.backbone.kwargs or None)
    except (CheckpointError, OSError) as error:
        raise ConfigError(f"pretrained_feature_extractor: {error}") from None
    if cfg.pretrain_method and pretrained.method and cfg.pretrain_method != pretrained.method:
        warnings.warn(f"pretrain_method is '{cfg.pretrain_method}' but '{path}' was pretrained "
                      f"with '{pretrained.method}'", stacklevel=2)
    # the saved config says what was loaded, so a linear checkpoint is itself loadable
    cfg.backbone.name, cfg.backbone.cifar_stem = pretrained.backbone_name, pretrained.cifar_stem
    cfg.pretrain_method = cfg.pretrain_method or pretrained.method
    return pretrained


def linear_eval(cfg: LinearConfig) -> LinearResult:
    """Train a linear head on (or fine-tune) the pretrained backbone; validate every epoch."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    pretrained = load_backbone(cfg)

    resume_from = cfg.resume_from_checkpoint
    run_id = run_id_of(resume_from) if resume_from else None  # continue that run's folder
    if resume_from is None and cfg.auto_resume.enabled:
        point = find_resume_point(cfg.checkpoint.dir, RUNS_FOLDER, cfg.to_dict(),
                                  cfg.auto_resume.max_hours, RESUMABLE_CHANGES,
                                  schema_defaults(LinearConfig))
        if point is not None:
            resume_from, run_id = str(point.checkpoint), point.run_id
            print(f"auto-resume: continuing run {run_id} from {resume_from}")
    # DDP ranks started by Lightning rerun this script: they must share the first process's run
    run_id = run_id or os.environ.get(RUN_ID_VARIABLE) or new_run_id()
    os.environ[RUN_ID_VARIABLE] = run_id
    run_dir = Path(cfg.checkpoint.dir) / RUNS_FOLDER / run_id

    callbacks: list[pl.Callback] = progress_bar(cfg)  # type: ignore[arg-type]
    if cfg.checkpoint.enabled:
        args = {"cfg": cfg.to_dict(), "pretrained": {"method": pretrained.method,
                                                     "backbone": pretrained.backbone_name,
                                                     "source_format": pretrained.source_format}}
        callbacks.append(Checkpointer(run_dir, cfg.name, run_id, args, cfg.checkpoint.frequency,
                                      cfg.checkpoint.keep_prev, resumed_from=resume_from,
                                      every_n_steps=cfg.checkpoint.every_n_steps,
                                      every_n_minutes=cfg.checkpoint.every_n_minutes))
    trainer = pl.Trainer(logger=build_loggers(cfg, run_dir, run_id),  # type: ignore[arg-type]
                         callbacks=callbacks, **trainer_kwargs(cfg))  # type: ignore[arg-type]
    model = LinearModel(pretrained.backbone, cfg)
    datamodule = LinearDataModule(cfg, run_dir, encoder=model.backbone if cfg.cache_features else None)
    try:
        with warnings.catch_warnings():
            if not cfg.finetune:  # Lightning warns about eval-mode modules; a frozen backbone is one
                warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    finally:
        os.environ.pop(RUN_ID_VARIABLE, None)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if "val_acc1" not in metrics:  # resumed from the last epoch's checkpoint: nothing left to fit
        validated = trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in (validated[0] if validated else {}).items()})
    if trainer.is_global_zero:
        write_run_curves(run_dir)  # curves.png beside the CSV logs
    return LinearResult(run_dir, pretrained, metrics, epochs=trainer.current_epoch,
                        train_images=images_trained_on(trainer, datamodule.sizes()["train_images"],
                                                       cfg.optimizer.batch_size),
                        is_global_zero=trainer.is_global_zero)


def images_trained_on(trainer: pl.Trainer, dataset_size: int, batch_size: int) -> int:
    """Training images seen each epoch: the dataset, or fewer under ``limit_train_batches``."""
    batches = trainer.num_training_batches
    if batches == float("inf"):
        return dataset_size
    return min(dataset_size, int(batches) * batch_size * trainer.world_size)


def summary(cfg: LinearConfig, result: LinearResult) -> str:
    """A few lines for the end of a run: what was trained on what, and the validation accuracy."""
    p = result.pretrained
    subset = (f" (fraction {cfg.data.fraction}, seed {cfg.data.fraction_seed})"
              if 0 < cfg.data.fraction < 1 else "")
    epochs = f"{result.epochs} epoch{'s' if result.epochs != 1 else ''}"
    lines = [f"run directory: {result.run_dir}",
             f"backbone: {p.backbone_name} ({p.method or 'unknown method'}, {p.source_format} "
             f"checkpoint {cfg.pretrained_feature_extractor})",
             f"trained ({cfg.mode}) on {result.train_images} images of {cfg.data.train_path}"
             f"{subset} for {epochs}"]
    if "val_acc1" in result.metrics:
        lines.append(f"val acc@1: {100 * result.metrics['val_acc1']:.1f}%  "
                     f"acc@5: {100 * result.metrics['val_acc5']:.1f}%  "
                     f"loss: {result.metrics['val_loss']:.4f}  on {cfg.data.val_path}")
    return "\n".join(lines)
