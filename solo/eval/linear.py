"""A linear classifier on a pretrained backbone: frozen (linear evaluation) or fine-tuned.

Frozen, the backbone stays in eval mode and gets no gradients, so its weights and its batch-norm
statistics are exactly the pretrained ones; only the linear head trains. With ``finetune`` the
backbone trains too (BN in training mode), with its own learning rate if
``optimizer.backbone_lr`` is set. Mixup/cutmix and label smoothing are timm's.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo.eval.linear_config import LinearConfig
from solo.nn.probe import accuracy_at_k
from solo.utils.lightning_hooks import accumulation, log_host_values, with_schedule
from solo.utils.layer_decay import layer_decay_groups, vit_depth
from solo.utils.optim import build_optimizer, param_groups, scaled_lr


def build_mixup(cfg: LinearConfig) -> Optional[Any]:
    """timm's Mixup (which also applies label smoothing to the mixed targets), or None."""
    if not cfg.mixes:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix,
                 label_smoothing=cfg.label_smoothing, num_classes=cfg.num_classes)


def build_criterion(cfg: LinearConfig) -> nn.Module:
    """The training loss: soft-target cross-entropy after mixup, else (smoothed) cross-entropy."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if cfg.mixes:
        return SoftTargetCrossEntropy()
    if cfg.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.label_smoothing)
    return nn.CrossEntropyLoss()


class LinearModel(pl.LightningModule):
    """``classifier(backbone(images))`` trained on labels.

    With ``cfg.cache_features`` the batches hold the backbone's features instead of images: the
    steps skip the backbone (``forward`` still takes images, so the checkpoint is a whole
    classifier in every mode).
    """

    def __init__(self, backbone: nn.Module, cfg: LinearConfig,
                 num_features: Optional[int] = None) -> None:
        super().__init__()
        self.cfg = cfg
        # a plain dict: the config that trained this head, readable without solo's classes
        self.save_hyperparameters({"cfg": cfg.to_dict()})
        self.backbone = backbone
        self.num_features = int(num_features or backbone.num_features)
        self.classifier = nn.Linear(self.num_features, cfg.num_classes)
        self.finetune = cfg.finetune
        self.inputs_are_features = cfg.cache_features
        # Lightning keeps each module's train/eval mode as it finds it, and loaded backbones come
        # in eval mode: set the mode training needs here
        self.backbone.requires_grad_(self.finetune)
        self.backbone.train(self.finetune)
        if self.finetune and cfg.optimizer.layer_decay > 0:
            vit_depth(backbone, str(cfg.backbone.name))  # a ConfigError before training starts
        self.mixup = build_mixup(cfg)
        self.criterion = build_criterion(cfg)
        self.channels_last = False  # switched on in configure_model for GPUs

    def train(self, mode: bool = True) -> "LinearModel":
        """A frozen backbone stays in eval mode even when the whole model is switched to training
        mode, so that its BN layers normalize with (and never update) the pretrained statistics."""
        super().train(mode)
        if not self.finetune:
            self.backbone.eval()
        return self

    # ------------------------------------------------------------------------------------------
    def features(self, images: Tensor) -> Tensor:
        """Backbone features (B, F); no graph through a frozen backbone."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.finetune:
            return self.backbone(images)
        with torch.no_grad():
            return self.backbone(images)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (B, num_classes) of a batch of images."""
        return self.classifier(self.features(images))

    def _logits(self, inputs: Tensor) -> Tensor:
        feats = inputs if self.inputs_are_features else self.features(inputs)
        return self.classifier(feats).float()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = batch
        if self.mixup is not None:
            inputs, soft_targets = self.mixup(inputs, targets)
            logits = self._logits(inputs)
            loss = self.criterion(logits, soft_targets)
        else:
            logits = self._logits(inputs)
            loss = self.criterion(logits, targets)
        # after mixup the accuracy is against each image's own (dominant or not) label
        acc1, acc5 = accuracy_at_k(logits.detach(), targets)
        # no prog_bar: Lightning would read it back every step (LossProgressBar shows it)
        self.log("train_loss", loss.detach(), on_step=True, on_epoch=True)
        self.log_dict({"train_acc1": acc1, "train_acc5": acc5}, on_step=True, on_epoch=True)
        if self._trainer is not None:
            log_host_values(self, {"lr": self.trainer.optimizers[0].param_groups[0]["lr"]})
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, targets = batch
        logits = self._logits(inputs)
        loss = F.cross_entropy(logits, targets)
        acc1, acc5 = accuracy_at_k(logits, targets)
        self.log_dict({"val_loss": loss, "val_acc1": acc1, "val_acc5": acc5}, on_epoch=True,
                      sync_dist=True, batch_size=len(targets), prog_bar=True)

    # ------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        opt = self.cfg.optimizer
        world_size = self.trainer.world_size if self._trainer is not None else 1
        accumulate = accumulation(self)
        lr = scaled_lr(opt.lr, opt.batch_size, world_size, accumulate)  # the head's, first group
        groups: list[dict] = [{"name": "linear", "params": list(self.classifier.named_parameters())}]
        if self.finetune and opt.layer_decay > 0:  # one group per ViT layer, the head's lr last
            backbone_lr = (lr if opt.backbone_lr is None
                           else scaled_lr(opt.backbone_lr, opt.batch_size, world_size, accumulate))
            groups += layer_decay_groups(self.backbone, backbone_lr, opt.layer_decay,
                                         str(self.cfg.backbone.name))
        elif self.finetune:
            backbone = {"name": "backbone", "params": list(self.backbone.named_parameters())}
            if opt.backbone_lr is not None:
                backbone["lr"] = scaled_lr(opt.backbone_lr, opt.batch_size, world_size, accumulate)
            groups.append(backbone)
        optimizer = build_optimizer(opt, param_groups(groups, opt.exclude_bias_n_norm_wd), lr)
        return with_schedule(self, optimizer, self.cfg.scheduler)

    def configure_model(self) -> None:
        # before the strategy moves and wraps the model (see BaseMethod.configure_model)
        on_gpu = self._trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        if on_gpu and not self.inputs_are_features and not self.cfg.performance.disable_channel_last:
            self.channels_last = True
            self.to(memory_format=torch.channels_last)
