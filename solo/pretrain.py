"""Pretraining a method from a validated config: trainer, loggers, checkpoints, resume."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger, Logger

from solo.config import ConfigError, ExperimentConfig
from solo.data import build_pipeline
from solo.data.decoding import SKIPPED_FILES, SKIPPED_FILES_VARIABLE, finish_skipped_list
from solo.eval.umap import build_auto_umap
from solo.methods import METHODS
from solo.plot import write_run_curves
from solo.utils.checkpoint import Checkpointer, new_run_id
from solo.utils.preemption import TrainingInterrupted
from solo.utils.precision import gpu_supports_bf16
from solo.utils.progress import LossProgressBar
from solo.utils.random_state import StepSeeds
from solo.utils.resume import find_resume_point, run_id_of, schema_defaults

RUN_ID_VARIABLE = "SOLO_RUN_ID"


def trainer_kwargs(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config's Trainer keys, adapted so a GPU recipe also runs with accelerator=cpu."""
    kwargs = dict(cfg.trainer)
    kwargs.setdefault("num_nodes", cfg.num_nodes)
    on_cpu = kwargs.get("accelerator") == "cpu" or (
        kwargs.get("accelerator") in (None, "auto") and not torch.cuda.is_available())
    devices = kwargs.get("devices", "auto")
    if on_cpu and isinstance(devices, (list, tuple)):
        kwargs["devices"] = len(devices)  # GPU ids mean nothing on the CPU; keep the count
    if str(kwargs.get("precision")) in ("16", "16-mixed"):
        if on_cpu and not cfg.performance.bf16:
            warnings.warn("precision 16 (fp16 autocast) does not run on the CPU; using bf16-mixed",
                          stacklevel=2)
        if on_cpu or (cfg.performance.bf16 and gpu_supports_bf16(kwargs.get("strategy", "auto"))):
            kwargs["precision"] = "bf16-mixed"  # bfloat16 autocast needs no loss scaling
    if not on_cpu:
        kwargs.setdefault("benchmark", True)  # cuDNN picks its fastest kernels for the fixed shapes
    if cfg.performance.compile:
        # Lightning validates under inference_mode; a compiled backbone (CUDA graphs above all)
        # first traced there cannot then be trained
        kwargs.setdefault("inference_mode", False)
    count = kwargs.get("devices", "auto")
    # one process: "auto" is one device on the CPU (on GPUs it means all of them)
    single = cfg.num_nodes == 1 and (
        count in (1, "1") or (on_cpu and count == "auto")
        or (isinstance(count, (list, tuple)) and len(count) == 1))
    if on_cpu and kwargs.get("sync_batchnorm"):
        kwargs["sync_batchnorm"] = False  # torch's SyncBatchNorm runs on CUDA only
        if not single:
            warnings.warn("sync_batchnorm needs GPUs; each CPU process keeps its own statistics",
                          stacklevel=2)
    if single and kwargs.get("strategy") in ("ddp", "ddp_spawn"):
        kwargs["strategy"] = "auto"  # one process: DDP would only add start-up time
    # our Checkpointer writes the checkpoints; Lightning's own would write a second copy
    kwargs.setdefault("enable_checkpointing", False)
    return kwargs


def progress_bar(cfg: ExperimentConfig) -> list[pl.Callback]:
    """The training bar (unless ``trainer.enable_progress_bar`` is false): the loss is read back
    from the device every ``performance.progress_bar_refresh_rate`` steps, not every step."""
    if not cfg.trainer.get("enable_progress_bar", True):
        return []
    return [LossProgressBar(refresh_rate=cfg.performance.progress_bar_refresh_rate)]


def build_loggers(cfg: ExperimentConfig, run_dir: Path, run_id: str) -> list[Logger]:
    """CSV logs always (a new version folder per start, so a resume keeps the earlier ones),
    plus wandb when enabled and installed."""
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="logs")]
    if cfg.wandb.enabled:
        try:
            import wandb  # noqa: F401
            from lightning.pytorch.loggers import WandbLogger
        except ImportError:
            # solo-learn's wandb group turns it on; its YAMLs must still run where it is absent
            warnings.warn("wandb.enabled is true but wandb is not installed, so only CSV logs "
                          "are written: pip install 'solo[wandb]', or set ++wandb.enabled=False",
                          stacklevel=2)
            return loggers
        loggers.append(WandbLogger(name=cfg.name, project=cfg.wandb.project,
                                   entity=cfg.wandb.entity, offline=cfg.wandb.offline,
                                   id=run_id, resume="allow", save_dir=str(run_dir)))
    return loggers


def check_paths(cfg: ExperimentConfig) -> None:
    """Fail before building anything when a data path does not exist."""
    for key in ("train_path", "val_path"):
        path = getattr(cfg.data, key)
        if path is not None and not os.path.exists(path):
            raise ConfigError(f"data.{key}: '{path}' does not exist")


@dataclass
class PretrainResult:
    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)  # last logged values
    before: dict[str, float] = field(default_factory=dict)  # validation before training
    is_global_zero: bool = True  # the process that reports
    model: Optional[pl.LightningModule] = None  # the trained method, for callers in Python
    # set when a SIGTERM / SIGUSR1 stopped training: its signal, step and checkpoint
    interrupted: Optional[TrainingInterrupted] = None


def pretrain(cfg: ExperimentConfig, callbacks: Sequence[pl.Callback] = ()) -> PretrainResult:
    """Pretrain ``cfg.method``; with kNN enabled, the validation before training is measured too.
    ``callbacks``: more Lightning callbacks, run after solo's own."""
    check_paths(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    method_cls = METHODS.get(cfg.method)

    resume_from = cfg.resume_from_checkpoint
    if resume_from is not None and not os.path.isfile(resume_from):
        raise ConfigError(f"resume_from_checkpoint: '{resume_from}' is not a file")
    run_id = run_id_of(resume_from) if resume_from else None  # continue that run's folder
    if resume_from is None and cfg.auto_resume.enabled:
        defaults = {**schema_defaults(ExperimentConfig), **{
            f"method_kwargs.{k}": v for k, v in schema_defaults(method_cls.Config).items()}}
        point = find_resume_point(cfg.checkpoint.dir, cfg.method, cfg.to_dict(),
                                  cfg.auto_resume.max_hours, defaults=defaults)
        if point is not None:
            resume_from, run_id = str(point.checkpoint), point.run_id
            print(f"auto-resume: continuing run {run_id} from {resume_from}")
    # Lightning starts the other DDP ranks by running this script again, with our environment:
    # they must write to the same run, so the first process hands its run id down
    run_id = run_id or os.environ.get(RUN_ID_VARIABLE) or new_run_id()
    os.environ[RUN_ID_VARIABLE] = run_id
    run_dir = Path(cfg.checkpoint.dir) / cfg.method / run_id
    if cfg.data.skip_corrupt:  # where every process (workers, DDP ranks) lists skipped files
        os.environ[SKIPPED_FILES_VARIABLE] = str(run_dir / SKIPPED_FILES)

    # each step's random numbers keyed by its place in training, so a resumed run draws the same
    own: list[pl.Callback] = [StepSeeds(cfg.seed)]
    if cfg.checkpoint.enabled:
        own.append(Checkpointer(run_dir, cfg.name, run_id, {"cfg": cfg.to_dict()},
                                cfg.checkpoint.frequency, cfg.checkpoint.keep_prev,
                                resumed_from=resume_from,
                                every_n_steps=cfg.checkpoint.every_n_steps,
                                every_n_minutes=cfg.checkpoint.every_n_minutes,
                                handle_signals=True))
    if cfg.auto_umap.enabled:
        own.append(build_auto_umap(cfg, run_id))
    own += progress_bar(cfg)
    trainer = pl.Trainer(logger=build_loggers(cfg, run_dir, run_id),
                         callbacks=own + list(callbacks), **trainer_kwargs(cfg))
    datamodule = build_pipeline(cfg)  # reads no data yet, but rejects an unknown pipeline
    model = method_cls(cfg)

    result = PretrainResult(run_dir)
    if cfg.knn_eval.enabled and cfg.data.val_path and resume_from is None:
        before = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
        result.before = {k: float(v) for k, v in before.items()}
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    except TrainingInterrupted as stop:  # the checkpoint of this step is written: stop cleanly
        result.interrupted = stop
    finally:
        os.environ.pop(RUN_ID_VARIABLE, None)
        skipped = os.environ.pop(SKIPPED_FILES_VARIABLE, None)
        if skipped and trainer.is_global_zero:
            finish_skipped_list(skipped)
    result.is_global_zero, result.model = trainer.is_global_zero, model
    if trainer.is_global_zero:
        write_run_curves(run_dir)  # curves.png beside the CSV logs
    result.metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return result


def summary(cfg: ExperimentConfig, result: PretrainResult) -> str:
    """A few lines for the end of a run: the kNN accuracy before and after, the probe accuracy."""
    lines = [f"run directory: {result.run_dir}"]
    stop = result.interrupted
    if stop is not None:  # the metrics of a run cut short would read as its results
        lines.append(f"interrupted by {stop.signal_name} at step {stop.step} (epoch {stop.epoch}); "
                     f"checkpoint: {stop.checkpoint}")
        lines.append("the SLURM job is requeued and continues from it" if stop.requeued else
                     "to continue, rerun the same command with ++auto_resume.enabled=True, or "
                     f"with ++resume_from_checkpoint={stop.checkpoint}")
        return "\n".join(lines)
    if "knn_acc1" in result.metrics:
        k = cfg.knn_eval
        before = result.before.get("knn_acc1")
        lines.append(f"kNN acc@1 (k={k.k}, {k.distance_func}) on {cfg.data.val_path}: "
                     + (f"before {100 * before:.1f}% -> " if before is not None else "")
                     + f"after {100 * result.metrics['knn_acc1']:.1f}%")
    if "val_acc1" in result.metrics:
        lines.append(f"online linear probe acc@1: {100 * result.metrics['val_acc1']:.1f}%")
    return "\n".join(lines)
