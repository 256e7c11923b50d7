"""The Learner: byol-pytorch's interface for every method in METHODS.

Wrap any network, name the layer whose output is the representation, call the learner on a batch
of images to get the method's loss, step any optimizer over ``learner.parameters()``. The network
is trained in place: the learner holds ``net`` itself, so ``net.state_dict()`` is the result.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from solo.config import ConfigError, ExperimentConfig, parse_config
from solo.data.batch_augment import BatchMultiCrop
from solo.data.recipes import default_augmentations, two_views
from solo.methods import METHODS, BaseMethod, MomentumMethod
from solo.utils.distributed import gathered_rows
from solo.utils.registry import did_you_mean

LayerRef = Union[str, int, None]
Augment = Callable[[Tensor], Tensor]  # a batch of images -> a batch of normalized float views

# byol-pytorch's names for the projector's sizes -> solo's method_kwargs
PROJECTION_ALIASES = {"projection_size": "proj_output_dim",
                      "projection_hidden_size": "proj_hidden_dim"}


def resolve_layer(net: nn.Module, layer: LayerRef) -> Optional[str]:
    """The dotted module name that ``layer`` points at: a name of ``net.named_modules()``, an
    index into ``net``'s children (-2: the one before the last, byol-pytorch's default), or None
    for net's own output."""
    if layer is None:
        return None
    children = [name for name, _ in net.named_children()]
    if isinstance(layer, int) and not isinstance(layer, bool):
        if not -len(children) <= layer < len(children):
            raise ValueError(f"hidden_layer {layer}: {type(net).__name__} has {len(children)} "
                             f"children ({', '.join(children)})")
        return children[layer]
    if isinstance(layer, str):
        names = [name for name, _ in net.named_modules() if name]
        if layer not in names:
            raise ValueError(f"hidden_layer '{layer}' is not a module of {type(net).__name__}"
                             f"{did_you_mean(layer, names)}; its children: {', '.join(children)} "
                             "(deeper modules by their dotted names in net.named_modules())")
        return layer
    raise TypeError(f"hidden_layer must be a module name, an index or None, got {layer!r}")


class HiddenLayer(nn.Module):
    """``net`` read at one layer: forward returns that layer's output flattened to (B, F),
    captured with a forward hook. The rest of net's forward still runs (byol-pytorch's way), so
    layers after it get no gradient."""

    def __init__(self, net: nn.Module, layer: LayerRef = -2) -> None:
        super().__init__()
        self.net = net
        self.layer_name = resolve_layer(net, layer)  # checked now, so a typo fails at once

    def forward(self, images: Tensor) -> Tensor:
        if self.layer_name is None:
            return self.net(images).flatten(1)
        captured: list[Any] = []
        # looked up at every call and hooked only for it: Lightning's sync_batchnorm (or the
        # user) may replace the module after the learner is built, and no hook is left behind
        layer = self.net.get_submodule(self.layer_name)
        handle = layer.register_forward_hook(lambda _layer, _inputs, out: captured.append(out))
        try:
            self.net(images)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"hidden_layer '{self.layer_name}' did not run in "
                               f"{type(self.net).__name__}'s forward")
        output = captured[-1]
        if not isinstance(output, Tensor):
            raise TypeError(f"hidden_layer '{self.layer_name}' returns a {type(output).__name__}, "
                            "not a tensor; choose a layer whose output is the features")
        return output.flatten(1)


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` over ``base``: a nested mapping merges key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def learner_config(method: str, image_size: int, method_kwargs: Mapping[str, Any],
                   moving_average_decay: float, use_momentum: bool, own_views: bool,
                   overrides: Optional[Mapping[str, Any]] = None) -> ExperimentConfig:
    """The experiment config of a learner, validated like any YAML's: the method's defaults with
    the user's kwargs, its default recipe at ``image_size`` (or two views of that size when the
    user makes them), unlabelled custom data, no kNN."""
    raw = {
        "name": f"learner-{method}",
        "method": method,
        "augmentations": (two_views(image_size) if own_views
                          else default_augmentations(method, image_size)),
        "method_kwargs": dict(method_kwargs),
        # byol-pytorch's decay is constant, so base_tau = final_tau; under fit a final_tau set
        # apart (config={"momentum": {"final_tau": 1.0}}) gives BYOL's cosine schedule
        "momentum": {"base_tau": moving_average_decay, "final_tau": moving_average_decay,
                     "enabled": use_momentum},
        "data": {"dataset": "custom", "train_path": "(images passed to the learner)",
                 "no_labels": True},
        "knn_eval": {"enabled": False},
        # required by the schema, read by no one: a plain loop brings its optimizer, fit its own
        "optimizer": {"name": "adam", "batch_size": 1, "lr": 3e-4, "weight_decay": 0.0},
    }
    return parse_config(_merge(raw, overrides or {}))


def _method_class(method: str) -> type:
    try:
        return METHODS.get(method)
    except KeyError as error:
        raise ConfigError(f"method: {error}") from None


class Learner(nn.Module):
    """Self-supervised training of ``net`` with any method in METHODS, byol-pytorch's way.

    ``learner(images)`` on a batch (B, 3, H, W) of uint8 or [0, 1] float images returns the
    method's loss on views it makes itself: the method's default recipe (solo/data/recipes.py)
    at ``image_size``, on the images' device; or ``augment_fn`` and ``augment_fn2`` (which
    defaults to ``augment_fn``), callables from the batch to normalized float views.

    ``hidden_layer``: the module name (dotted names allowed) or index into net's children whose
    flattened output is the representation; None takes net's output. ``method_kwargs`` are the
    method's own options (``BYOL.Config`` ...); ``projection_size`` and ``projection_hidden_size``
    set its ``proj_output_dim`` and ``proj_hidden_dim``. ``moving_average_decay`` is the EMA's
    constant tau (momentum.base_tau = final_tau); ``use_momentum=False`` drops the EMA copies and
    takes the targets from the online network without gradient (SimSiam-style). ``config``: any
    experiment-config sections merged over the learner's (e.g. ``{"momentum": {"final_tau": 1.0}}``
    for BYOL's cosine schedule under ``fit``, or ``{"augmentations": [...]}`` for another recipe).
    """

    def __init__(self, net: nn.Module, image_size: int, hidden_layer: LayerRef = -2,
                 method: str = "byol", *, projection_size: Optional[int] = None,
                 projection_hidden_size: Optional[int] = None, moving_average_decay: float = 0.99,
                 use_momentum: bool = True, augment_fn: Optional[Augment] = None,
                 augment_fn2: Optional[Augment] = None,
                 config: Optional[Mapping[str, Any]] = None, **method_kwargs: Any) -> None:
        super().__init__()
        method_class = _method_class(method)
        if getattr(method_class, "needs_dataset_indexes", False):
            raise ConfigError(f"method: {method} looks its targets up by dataset index (a memory "
                              "bank clustered each epoch), which a learner's batches do not "
                              "carry; train it with main_pretrain.py or solo.pretrain")
        options = {f.name for f in dataclasses.fields(method_class.Config)}
        sizes = {"projection_size": projection_size,
                 "projection_hidden_size": projection_hidden_size}
        for alias, value in sizes.items():
            if value is None:
                continue
            key = PROJECTION_ALIASES[alias]
            if key not in options:
                raise ConfigError(f"{alias}: method '{method}' has no {key}; its options: "
                                  f"{', '.join(sorted(options)) or 'none'}")
            if method_kwargs.get(key, value) != value:
                raise ConfigError(f"{alias}={value} and {key}={method_kwargs[key]} disagree; "
                                  "give one")
            method_kwargs[key] = value
        if augment_fn2 is not None and augment_fn is None:
            raise ValueError("augment_fn2 needs augment_fn: the first view would use the default "
                             "recipe and the second yours")
        cfg = learner_config(method, image_size, method_kwargs, moving_average_decay, use_momentum,
                             own_views=augment_fn is not None, overrides=config)
        self.method: BaseMethod = method_class(cfg, backbone=HiddenLayer(net, hidden_layer))
        # the online probes learn from labels, which a learner never has: frozen, they take no
        # optimizer state, and DDP does not wait for gradients they never get
        for name, child in self.method.named_children():
            if name in self.method.probe_modules():
                child.requires_grad_(False)
        self.augment = BatchMultiCrop(cfg.augmentations) if augment_fn is None else None
        self.augment_fn = augment_fn
        self.augment_fn2 = augment_fn2 or augment_fn
        parameter = next(net.parameters(), None)
        if parameter is not None:  # the heads join the network where it already is
            self.to(parameter.device)

    # ------------------------------------------------------------------------------------------
    @property
    def net(self) -> nn.Module:
        """The user's network, trained in place (not a copy)."""
        return self.method.backbone.net

    @property
    def cfg(self) -> ExperimentConfig:
        return self.method.cfg

    @property
    def uses_momentum(self) -> bool:
        """Whether the method keeps EMA copies that ``update_moving_average`` moves."""
        return isinstance(self.method, MomentumMethod) and self.method.has_momentum_copies

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------------------------------
    def views(self, images: Tensor) -> list[Tensor]:
        """The views of a batch: the recipe's crops (large first), or the user's two."""
        if self.augment_fn is not None:
            return [self.augment_fn(images), self.augment_fn2(images)]
        # the views in float32 even inside an autocast region (fit with mixed precision):
        # resampling and colour ops in half precision would shift the pixel values
        with torch.autocast(images.device.type, enabled=False):
            return self.augment(images)

    def forward(self, images: Tensor, return_embedding: bool = False,
                return_projection: bool = True) -> Union[Tensor, tuple[Tensor, Tensor]]:
        """The method's loss on views of ``images`` (B, 3, H, W). With ``return_embedding``,
        no views and no loss: ``images``, prepared as ``net`` expects them, give
        (projection (B, P), embedding (B, F)), or the embedding alone without
        ``return_projection``; the projection is the method's projector output, or the
        embedding for a method without one."""
        images = images.to(self.device, non_blocking=True)
        if return_embedding:
            embedding = self.method.backbone(images)
            if not return_projection:
                return embedding
            projector = getattr(self.method, "projector", None)
            return (projector(embedding) if projector is not None else embedding), embedding
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a batch (B, 3, H, W), got {tuple(images.shape)}")
        batch = len(images)
        # ids unique across processes: SimCLR's loss gathers them to find each view's positives
        indexes = gathered_rows(batch, images.device)
        targets = torch.full((batch,), -1, device=images.device)  # unlabelled
        encoded = self.method.encode_batch((indexes, self.views(images), targets))
        loss, _ = self.method.ssl_loss(encoded)
        return loss

    @torch.no_grad()
    def update_moving_average(self, tau: Optional[float] = None) -> None:
        """momentum <- tau * momentum + (1 - tau) * online, for the method's EMA copies; ``tau``
        defaults to ``moving_average_decay``. Call it after each optimizer step. A learner
        without EMA copies (``use_momentum=False``, or a method such as SimCLR) raises, as
        byol-pytorch does: the call would otherwise hide that no moving average exists."""
        if not self.uses_momentum:
            reason = ("use_momentum=False: the targets come from the online network itself"
                      if isinstance(self.method, MomentumMethod)
                      else f"method '{self.cfg.method}' has no momentum encoder")
            raise RuntimeError(f"update_moving_average: {reason}, so there is no moving average "
                               "to update; drop the call (learner.uses_momentum says when one "
                               "exists)")
        self.method.momentum_update(self.cfg.momentum.base_tau if tau is None else tau)
