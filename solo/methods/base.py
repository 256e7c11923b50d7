"""BaseMethod: what every SSL method shares, so a method file holds only its heads and its loss.

The base owns the backbone, multi-crop encoding (one backbone call per crop), the online
linear probe, the online kNN, parameter groups, optimizer and scheduler, and logging. A method
builds its heads in ``__init__`` and implements ``ssl_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo.backbones import build_backbone, feature_width, is_convolutional
from solo.config import SMALL_IMAGE_DATASETS, ConfigError, ExperimentConfig, parse_config
from solo.nn import FeatureQueue, OnlineProbe, WeightedKNN
from solo.methods.state_dict import upgrade_state_dict
from solo.utils.lightning_hooks import accumulation, log_host_values, with_schedule
from solo.utils.distributed import gather_padded, world_size
from solo.utils.monitoring import CollapseMonitor
from solo.utils.optim import (GroupOptions, build_optimizer, clip_grad_per_parameter, param_groups,
                              restore_fixed_lrs, scaled_lr, schedule_weight_decay)
from solo.utils.precision import set_tf32
from solo.utils.schedules import cosine_schedule


@dataclass
class NoKwargs:
    """A method with no options of its own."""


@dataclass
class EncodedBatch:
    """A training batch after the backbone: what ``ssl_loss`` receives.

    ``feats`` holds one (B, F) tensor per crop that ``online_crops`` keeps (all of them unless a
    method says otherwise), large crops first; ``momentum_feats`` one per large crop that
    ``encode_momentum`` encodes with the momentum backbone (empty for methods without one).
    """

    indexes: Tensor  # (B,) dataset positions: crops with the same index come from one image
    targets: Tensor  # (B,) labels, -1 where unknown; only the probe may use them
    feats: list[Tensor]
    momentum_feats: list[Tensor] = field(default_factory=list)


def split_by_resolution(crops: list[Tensor]) -> list[list[Tensor]]:
    """Consecutive crops of the same shape, grouped: each group is one backbone call."""
    groups: list[list[Tensor]] = []
    for crop in crops:
        if groups and groups[-1][0].shape == crop.shape:
            groups[-1].append(crop)
        else:
            groups.append([crop])
    return groups


class BaseMethod(pl.LightningModule):
    """Backbone + online probe + optional online kNN + optimization, for any SSL method."""

    Config: ClassVar[type] = NoKwargs  # the dataclass of this method's ``method_kwargs``

    def __init__(self, cfg: ExperimentConfig | Mapping[str, Any],
                 backbone: nn.Module | None = None) -> None:
        """``backbone``: any network to train instead of building ``cfg.backbone.name`` (its
        ``num_features`` is read, or found by one forward pass); reload such a checkpoint with
        ``Method.load_from_checkpoint(path, backbone=net)``."""
        super().__init__()
        if not isinstance(cfg, ExperimentConfig):
            cfg = parse_config(cfg)
        if not isinstance(cfg.method_kwargs, self.Config):
            raise TypeError(f"{type(self).__name__} needs method_kwargs of type "
                            f"{self.Config.__name__}; the config is for method '{cfg.method}'")
        self.cfg = cfg
        # a plain dict, so load_from_checkpoint(path) rebuilds the method with no config at hand
        self.save_hyperparameters({"cfg": cfg.to_dict()})

        image_size = max(group.crop_size for group in cfg.augmentations)
        if backbone is None:
            backbone = self.build_backbone(cfg, image_size)
        self.backbone = backbone
        self.num_features: int = feature_width(backbone, image_size)
        self.classifier = OnlineProbe(self.num_features, cfg.num_classes)  # solo-learn's name
        self.num_large_crops = cfg.num_large_crops
        knn = cfg.knn_eval
        self.knn = WeightedKNN(knn.k, knn.temperature, knn.distance_func, knn.chunk_size,
                               knn.max_bank_on_device, getattr(torch, knn.bank_dtype)
                               ) if knn.enabled else None
        # RankMe and normalized std of the first validation embeddings: warns once on collapse
        self.collapse_monitor = CollapseMonitor()
        self.channels_last = False  # switched on in configure_model for GPUs
        self.queues: list[FeatureQueue] = []  # filled by add_queue
        self._optimizer_steps_seen = 0
        self._frozen: list[tuple[nn.Module, int]] = []  # filled by freeze_for_epochs
        # > 0: each parameter's gradient clipped to this L2 norm before every step (DINO)
        self.clip_grad_per_parameter = 0.0

    def require_crops(self, large: int, *, small: Optional[int] = None,
                      at_least: bool = False) -> None:
        """A ConfigError unless the crop groups give ``large`` large crops (or more with
        ``at_least``) and, when ``small`` is given, that many small ones."""
        got_large, got_small = self.cfg.num_large_crops, self.cfg.num_small_crops
        if (got_large >= large if at_least else got_large == large) and small in (None, got_small):
            return
        wanted = f"{'at least' if at_least else 'exactly'} {large} large crops"
        if small is not None:
            wanted += " and no small ones" if small == 0 else f" and {small} small ones"
        raise ConfigError(f"{self.cfg.method} needs {wanted} (augmentations[*].num_crops), got "
                          f"{got_large} large and {got_small} small")

    @staticmethod
    def build_backbone(cfg: ExperimentConfig, image_size: int) -> nn.Module:
        """``cfg.backbone`` built, and started from ``backbone.pretrained`` when given."""
        small_images = cfg.backbone.cifar_stem
        if small_images is None:
            small_images = cfg.data.dataset in SMALL_IMAGE_DATASETS
        backbone = build_backbone(cfg.backbone.name, small_images=small_images,
                                  image_size=image_size, method=cfg.method, **cfg.backbone.kwargs)
        if cfg.backbone.pretrained is not None:
            from solo.zoo.checkpoints import load_backbone_weights  # the zoo imports the methods

            load_backbone_weights(backbone, cfg.backbone.pretrained)
        return backbone

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning calls this before loading the weights, for load_from_checkpoint and resumes
        checkpoint["state_dict"] = upgrade_state_dict(checkpoint["state_dict"], self.state_dict())

    @property
    def kwargs(self) -> Any:
        """This method's validated ``method_kwargs``."""
        return self.cfg.method_kwargs

    @property
    def checks_inputs(self) -> bool:
        """Whether a loss should make the checks of its inputs that read a result back from the
        device (SimCLR's positives, W-MSE's singular covariance): a host sync, so on the first
        step only, on any device."""
        return self.global_step == 0

    # ------------------------------------------------------------------------------------------
    # what a method implements
    # ------------------------------------------------------------------------------------------
    def ssl_loss(self, batch: EncodedBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The method's loss and the values to log (without prefix)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------
    # encoding
    # ------------------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        """Backbone features (B, F) of a batch of images."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def encode_crops(self, crops: list[Tensor], encoder: nn.Module | None = None) -> list[Tensor]:
        """Features of every crop: one encoder call per crop, as solo-learn and the BYOL and MoCo
        papers do, so batch norm computes its statistics per view (MoCo's queries and keys do not
        share them). ``performance.fuse_crops`` makes one call per resolution instead: faster on
        GPUs, but BN then normalizes the views of a resolution together."""
        encoder = encoder or self.backbone
        groups = (split_by_resolution(crops) if self.cfg.performance.fuse_crops
                  else [[crop] for crop in crops])
        feats: list[Tensor] = []
        for group in groups:
            images = group[0] if len(group) == 1 else torch.cat(group)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            feats.extend(encoder(images).chunk(len(group)))
        return feats

    def encode_batch(self, batch: tuple[Tensor, list[Tensor], Tensor]) -> EncodedBatch:
        indexes, crops, targets = batch
        return EncodedBatch(indexes=indexes, targets=targets,
                            feats=self.encode_crops(self.online_crops(crops)))

    def online_crops(self, crops: list[Tensor]) -> list[Tensor]:
        """The crops the online backbone encodes: all of them; MoCo v1/v2 keep the query view."""
        return crops

    # ------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, list[Tensor], Tensor], batch_idx: int) -> Tensor:
        encoded = self.encode_batch(batch)
        loss, logs = self.ssl_loss(encoded)

        large_feats = encoded.feats[: self.num_large_crops]
        large = torch.cat(large_feats)
        targets = encoded.targets.repeat(len(large_feats))
        probe_loss, probe_logs = self.classifier.loss(large, targets)
        if self.knn is not None and self.cfg.knn_eval.bank_from_training:
            self.knn.add_bank(large, targets)  # a detached copy; unlabelled rows do not vote
        extra_loss, extra_logs = self.extra_training_losses(encoded)
        logs = {**{f"train_{k}": v for k, v in logs.items()}, "train_probe_loss": probe_logs["loss"],
                "train_acc1": probe_logs["acc1"], "train_acc5": probe_logs["acc5"], **extra_logs}
        # per-process values (keys get _step/_epoch suffixes): a cross-process reduction every
        # step would stall it; and no prog_bar, which Lightning reads back after every step
        # (LossProgressBar shows the loss)
        self.log("train_loss", loss.detach(), on_step=True, on_epoch=True)
        self.log_dict(logs, on_step=True, on_epoch=True)
        if self._trainer is not None:
            log_host_values(self, {"lr": self.trainer.optimizers[0].param_groups[0]["lr"]})
        return loss + probe_loss + extra_loss

    def extra_training_losses(self, encoded: EncodedBatch) -> tuple[Tensor | float, dict[str, Tensor]]:
        """Losses of extra heads that the base adds (e.g. the momentum probe); none here."""
        return 0.0, {}

    # ------------------------------------------------------------------------------------------
    # validation: probe accuracy on the val set, kNN of val images against a train-set bank
    # ------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        if self.knn is not None:  # a bank from training was filled since the last validation
            self.knn.reset(bank=not self.cfg.knn_eval.bank_from_training)
        self.collapse_monitor.reset()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        images, targets = batch
        feats = self(images)
        if dataloader_idx == 0:
            _, logs = self.classifier.loss(feats, targets)
            self.log_dict({f"val_{k}": v for k, v in logs.items()}, on_epoch=True,
                          sync_dist=True, add_dataloader_idx=False, batch_size=len(images))
            if self.knn is not None:
                self.knn.add_queries(feats, targets)
            self.monitor_collapse(feats)
        elif self.knn is not None:
            self.knn.add_bank(feats, targets)

    def monitor_collapse(self, feats: Tensor) -> None:
        """Keep the first validation features, and their normalized projections when the method
        has a ``projector``, for ``CollapseMonitor`` (not while Lightning's sanity check runs:
        an untrained network is not a collapsed one)."""
        if self._trainer is not None and self.trainer.sanity_checking:
            return
        monitor, world = self.collapse_monitor, world_size()
        monitor.add("feats", feats, world)
        projector = getattr(self, "projector", None)
        if isinstance(projector, nn.Module) and monitor.room("proj", world) > 0:
            monitor.add("proj", F.normalize(projector(feats[:monitor.room("proj", world)]), dim=-1),
                        world)

    def on_validation_epoch_end(self) -> None:
        metrics = self.collapse_monitor.compute(gather=gather_padded)
        if metrics:
            self.log_dict({f"val_{k}": v for k, v in metrics.items()}, sync_dist=True)
            self.collapse_monitor.check(metrics)
            self.collapse_monitor.reset()
        if self.knn is None or not self.knn.ready:
            return
        # the queries of every process are gathered (padded with unlabelled rows, not scored);
        # each process's bank stays where it is
        acc1, acc5 = self.knn.compute(self.cfg.num_classes, gather=gather_padded)
        self.log_dict({"knn_acc1": acc1, "knn_acc5": acc5}, sync_dist=True)
        self.knn.reset()

    # ------------------------------------------------------------------------------------------
    # optimization
    # ------------------------------------------------------------------------------------------
    def probe_modules(self) -> dict[str, str]:
        """Child modules that are linear probes, by the name of their optimizer group; they get
        ``optimizer.classifier_lr`` and no weight decay."""
        return {"classifier": "classifier"}

    def param_group_options(self) -> dict[str, GroupOptions]:
        """How the optimizer treats each child module, by the child's name; children not named
        follow ``optimizer.*``. A method adds its own (a fixed-lr predictor) to the base's."""
        probe = GroupOptions(lr=self.cfg.optimizer.classifier_lr, weight_decay=0.0)
        return {name: probe for name in self.probe_modules()}

    def configure_optimizers(self) -> Any:
        opt_cfg = self.cfg.optimizer
        world_size = self.trainer.world_size if self._trainer is not None else 1
        accumulate = accumulation(self)

        def scale(base_lr: float) -> float:
            return scaled_lr(base_lr, opt_cfg.batch_size, world_size, accumulate)

        probes, options = self.probe_modules(), self.param_group_options()
        groups = [{"name": probes.get(name, name), "params": list(child.named_parameters()),
                   **(options[name].group_keys(scale) if name in options else {})}
                  for name, child in self.named_children()]
        optimizer = build_optimizer(opt_cfg, param_groups(groups, opt_cfg.exclude_bias_n_norm_wd),
                                    scale(opt_cfg.lr))
        return with_schedule(self, optimizer, self.cfg.scheduler)

    def lr_scheduler_step(self, scheduler: Any, metric: Any = None) -> None:
        scheduler.step() if metric is None else scheduler.step(metric)
        restore_fixed_lrs(scheduler.optimizer)

    def freeze_for_epochs(self, module: nn.Module, epochs: int) -> None:
        """Keep ``module`` unchanged during the first ``epochs`` epochs: its gradients are dropped
        before every optimizer step, so the optimizer skips it (no update, no weight decay, no
        momentum), as DINO does its last layer and SwAV its prototypes."""
        if epochs > 0:
            self._frozen.append((module, epochs))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning calls this after the backward passes and after AMP's unscaling
        epoch = self.trainer.current_epoch
        for module, epochs in self._frozen:
            if epoch < epochs:
                for param in module.parameters():
                    param.grad = None
        if self.clip_grad_per_parameter > 0:
            clip_grad_per_parameter(self.parameters(), self.clip_grad_per_parameter)

    # ------------------------------------------------------------------------------------------
    # hyperparameters that follow a schedule of the optimizer step
    # ------------------------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run (1 outside a trainer)."""
        if self._trainer is None:
            return 1
        return max(1, int(self.trainer.estimated_stepping_batches))

    @property
    def steps_per_epoch(self) -> float:
        """Optimizer steps per epoch (a fraction under gradient accumulation of a short epoch)."""
        max_epochs = max(1, self.trainer.max_epochs or 1) if self._trainer is not None else 1
        return self.total_steps / max_epochs

    def scheduled_values(self, step: int) -> dict[str, float]:
        """Method attributes that follow a schedule: name -> value after ``step`` optimizer steps.
        Before every training batch the base sets each as an attribute and logs it; computed from
        the global step, a resumed run continues where it stopped. A method sets the step-0 values
        in ``__init__`` too, for calls outside a trainer."""
        return {}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        step = self.trainer.global_step
        values = self.scheduled_values(step)
        for name, value in values.items():
            setattr(self, name, value)
        opt_cfg = self.cfg.optimizer
        if opt_cfg.weight_decay_end is not None:
            decay = cosine_schedule(step, self.total_steps, opt_cfg.weight_decay,
                                    opt_cfg.weight_decay_end)
            schedule_weight_decay(self.trainer.optimizers[0], decay / opt_cfg.weight_decay)
            values = {**values, "weight_decay": decay}
        if values:
            log_host_values(self, values)

    @property
    def train_dataset_size(self) -> int:
        """Training images of the whole dataset (all processes together), once fitting started:
        what a memory bank indexed by dataset position needs."""
        loader = self.trainer.train_dataloader
        size = getattr(loader, "num_samples", None)  # solo's GPU and DALI loaders
        return int(size) if size is not None else len(loader.dataset)

    # ------------------------------------------------------------------------------------------
    # after each optimizer step (EMA updates, prototype normalization)
    # ------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        # after a resume the restored global_step says how many steps are already done
        self._optimizer_steps_seen = self.trainer.global_step

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # right after the step, before any callback's on_train_batch_end: a checkpoint written
        # there holds this step's EMA update. Lightning counts the step once this returns
        self._optimizer_steps_seen = self.trainer.global_step + 1
        self.after_optimizer_step(self._optimizer_steps_seen)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.trainer.global_step  # a step optimizer_step did not see (manual optimization)
        if step != self._optimizer_steps_seen:  # accumulating gradients: no step yet
            self._optimizer_steps_seen = step
            self.after_optimizer_step(step)

    def after_optimizer_step(self, step: int) -> None:
        """Called once after each optimizer step, ``step`` the number of steps taken so far
        (under gradient accumulation: once per accumulated step, not per batch)."""

    # ------------------------------------------------------------------------------------------
    # queues of past embeddings
    # ------------------------------------------------------------------------------------------
    def add_queue(self, size: int, dim: int, **options: Any) -> FeatureQueue:
        """A ``FeatureQueue`` whose buffers are this method's (saved in checkpoints, moved with
        it); its size is checked against the global batch when training starts."""
        queue = FeatureQueue(self, size, dim, **options)
        self.queues.append(queue)
        return queue

    def configure_model(self) -> None:
        # before the strategy moves the model and wraps it in DDP: converted after the wrap, the
        # parameters' strides no longer match DDP's gradient buckets (a warning, extra copies)
        # (load_from_checkpoint calls it too, without a trainer)
        on_gpu = self._trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        # convolutions gain from channels_last; a ViT's token matmuls do not, and its patchify
        # would only add a layout copy
        wanted = on_gpu and not self.cfg.performance.disable_channel_last
        if wanted and is_convolutional(self.backbone):
            self.channels_last = True
            self.to(memory_format=torch.channels_last)

    def on_fit_start(self) -> None:
        for queue in self.queues:  # the config could not know "auto" devices' count
            queue.check_size(self.cfg.optimizer.batch_size * self.trainer.world_size)
        performance = self.cfg.performance
        if self.device.type == "cuda":
            set_tf32(performance.tf32)
        if performance.compile:
            options = {"backend": performance.compile_backend}
            if performance.compile_backend == "inductor":
                options["mode"] = performance.compile_mode
            for name, child in self.named_children():
                if name.endswith("backbone"):  # where the time goes; compiled in place, so the
                    child.compile(**options)  # state-dict keys stay the same
