"""MoCo v1 / v2 as the official code runs them: one direction (view 1's query, view 2's key),
the official ImageNet recipes in scripts/pretrain/imagenet, Shuffle BN on two processes equal to
split BN on one, and clear errors for impossible method_kwargs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solo.config import ConfigError, parse_config
from solo.data.recipes import RECIPES
from solo.losses import moco_loss
from solo.methods import METHODS, MoCoV1
from solo.nn import SplitBatchNorm2d
from tests.helpers import ROOT, load_raw, shipped_config
from tests.multiprocess import average_gradients, run_processes

IMAGENET = ROOT / "scripts" / "pretrain" / "imagenet"


def imagenet_recipe(method: str, cifar_mini: Path) -> tuple[dict, object]:
    """The shipped ImageNet YAML as written, and parsed (with data paths that exist)."""
    paths = [f"++data.train_path={cifar_mini / 'train'}", f"++data.val_path={cifar_mini / 'test'}"]
    raw = load_raw(IMAGENET, f"{method}.yaml", paths)
    return raw, parse_config(raw)


def test_imagenet_mocov1_yaml_is_the_official_recipe(cifar_mini: Path) -> None:
    # facebookresearch/moco main_moco.py defaults and README command (8 GPUs, batch 256)
    raw, cfg = imagenet_recipe("mocov1", cifar_mini)
    assert raw["backbone"]["name"] == "resnet50" and raw["max_epochs"] == 200
    assert raw["method_kwargs"] == {"proj_output_dim": 128, "temperature": 0.07,
                                    "queue_size": 65536, "shuffle_bn": True, "split_bn": 1}
    assert cfg.momentum.base_tau == cfg.momentum.final_tau == 0.999
    opt = cfg.optimizer
    assert (opt.name, opt.lr, opt.weight_decay, opt.kwargs, opt.exclude_bias_n_norm_wd) == (
        "sgd", 0.03, 1e-4, {"momentum": 0.9}, False)
    assert opt.batch_size * len(raw["devices"]) == 256  # lr 0.03 is for this global batch
    assert (cfg.scheduler.name, cfg.scheduler.lr_decay_steps, cfg.scheduler.gamma) == (
        "step", [120, 160], 0.1)
    assert raw["sync_batchnorm"] is False and raw["strategy"] == "ddp"
    views = cfg.augmentations
    assert len(views) == 1 and views[0].num_crops == 2 and views[0].crop_size == 224
    v = views[0]
    assert (v.rrc.crop_min_scale, v.rrc.crop_max_scale, v.grayscale.prob) == (0.2, 1.0, 0.2)
    jitter = v.color_jitter
    assert (jitter.prob, jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (
        1.0, 0.4, 0.4, 0.4, 0.4)
    assert v.gaussian_blur.prob == 0 and v.horizontal_flip.prob == 0.5


def test_imagenet_mocov2_yaml_is_the_official_recipe(cifar_mini: Path) -> None:
    raw, cfg = imagenet_recipe("mocov2", cifar_mini)  # --mlp --moco-t 0.2 --aug-plus --cos
    k = cfg.method_kwargs
    assert (k.proj_hidden_dim, k.proj_output_dim, k.temperature, k.queue_size) == (
        2048, 128, 0.2, 65536)
    s = cfg.scheduler
    assert (s.name, s.warmup_epochs, s.min_lr, s.interval) == ("warmup_cosine", 0, 0.0, "epoch")
    v = cfg.augmentations[0]
    assert (v.rrc.crop_min_scale, v.color_jitter.prob, v.color_jitter.hue, v.gaussian_blur.prob,
            v.gaussian_blur.sigma_min, v.gaussian_blur.sigma_max) == (0.2, 0.8, 0.1, 0.5, 0.1, 2.0)


@pytest.mark.parametrize("method", ["mocov1", "mocov2"])
def test_recipes_in_code_are_the_imagenet_yamls(method: str, cifar_mini: Path) -> None:
    # tests/test_learner.py checks the CIFAR ones; the ImageNet folder is checked here
    raw, cfg = imagenet_recipe(method, cifar_mini)
    in_code = [{**group, "crop_size": 224} for group in RECIPES[method]["large"]]
    assert parse_config({**raw, "augmentations": in_code}).augmentations == cfg.augmentations


def test_v1_head_is_linear_and_v2_the_official_mlp(cifar_mini: Path) -> None:
    v1 = METHODS.get("mocov1")(shipped_config("mocov1", cifar_mini))
    v2 = METHODS.get("mocov2")(shipped_config("mocov2", cifar_mini))
    assert isinstance(v1.projector, nn.Linear) and v1.projector.out_features == 128
    assert [type(m) for m in v2.projector] == [nn.Linear, nn.ReLU, nn.Linear]
    assert v1.queue.shape == (128, 4096) and v1.queue_ptr.shape == (1,)  # official (dim, K)
    # the CIFAR recipe's split BN, in the online and the momentum backbone
    for net in (v1.backbone, v1.momentum_backbone):
        norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(isinstance(m, SplitBatchNorm2d) and m.num_splits == 8 for m in norms)


def test_one_direction_query_of_view_1_key_of_view_2(cifar_mini: Path) -> None:
    cfg = shipped_config("mocov1", cifar_mini, ["++method_kwargs.split_bn=1",
                                                "++method_kwargs.queue_size=32"])
    torch.manual_seed(0)
    model = METHODS.get("mocov1")(cfg).train()
    view1, view2 = torch.randn(2, 8, 3, 32, 32).unbind(0)
    seen = {"backbone": [], "momentum_backbone": []}
    for name in seen:
        getattr(model, name).register_forward_hook(
            lambda module, args, out, n=name: seen[n].append(args[0]))
    queue = model.queue.clone()
    loss, _ = model.ssl_loss(model.encode_batch((torch.arange(8), [view1, view2], -torch.ones(8))))
    assert len(seen["backbone"]) == 1 and torch.equal(seen["backbone"][0], view1)
    assert len(seen["momentum_backbone"]) == 1 and torch.equal(seen["momentum_backbone"][0], view2)
    with torch.no_grad():
        key = F.normalize(model.momentum_projector(model.momentum_backbone(view2)), dim=-1)
        query = model.projector(model.backbone(view1))
    torch.testing.assert_close(loss, moco_loss(query, key, queue, 0.1))
    torch.testing.assert_close(model.queue[:, :8], key.T)  # this step's keys joined the queue
    assert model.queue_ptr.tolist() == [8]


@pytest.mark.parametrize("extra, message", [
    (["++method_kwargs.split_bn=0"], r"method_kwargs.split_bn: must be > 0"),
    (["++method_kwargs.split_bn=3"],
     r"method_kwargs.split_bn: 3 does not divide optimizer.batch_size 16"),
    (["++sync_batchnorm=True"], r"method_kwargs.split_bn: .*sync_batchnorm"),
    (["++method_kwargs.temperature=0"], r"method_kwargs.temperature: must be > 0"),
])
def test_impossible_kwargs_fail_naming_the_key(cifar_mini: Path, extra: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        METHODS.get("mocov1")(shipped_config("mocov1", cifar_mini, extra))


# ----------------------------------------------------------------------------------------------
# two processes with Shuffle BN = one process with split BN over the same global batch
# ----------------------------------------------------------------------------------------------
PER_PROCESS = 4


class TinyNet(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = 8


def _model(cfg) -> MoCoV1:
    torch.manual_seed(0)  # the same weights and initial queue everywhere
    return METHODS.get(cfg.method)(cfg, backbone=TinyNet()).train()


def _views() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return list(torch.randn(2, 2 * PER_PROCESS, 3, 8, 8, generator=g).unbind(0))


def _step(model: MoCoV1, crops: list[torch.Tensor]) -> torch.Tensor:
    torch.manual_seed(2)  # the shuffle's permutation: drawn alike by rank 0 and the one process
    n = len(crops[0])
    loss, _ = model.ssl_loss(model.encode_batch((torch.arange(n), crops, -torch.ones(n))))
    loss.backward()
    return loss


def _two_process_step(rank: int, world: int, cfg) -> dict:
    model = _model(cfg)
    mine = slice(rank * PER_PROCESS, (rank + 1) * PER_PROCESS)
    loss = _step(model, [v[mine] for v in _views()])
    params = [next(model.projector.parameters()), model.backbone[0].weight]
    return {"loss": loss.detach(), "queue": model.queue.clone(), "grads": average_gradients(params)}


@pytest.mark.parametrize("method", ["mocov1", "mocov2"])
def test_shuffle_bn_on_two_processes_equals_split_bn_on_one(method: str, cifar_mini: Path) -> None:
    small = ["++method_kwargs.queue_size=16", "++method_kwargs.proj_output_dim=4",
             f"++optimizer.batch_size={PER_PROCESS}"]
    if method == "mocov2":
        small.append("++method_kwargs.proj_hidden_dim=8")
    per_process = shipped_config(method, cifar_mini, small + ["++method_kwargs.split_bn=1"])
    ranks = run_processes(_two_process_step, per_process)
    # one process, the global batch, 2 BN sub-batches: rank 0's and rank 1's rows
    one = _model(shipped_config(method, cifar_mini, small + [
        "++method_kwargs.split_bn=2", f"++optimizer.batch_size={2 * PER_PROCESS}"]))
    loss = _step(one, _views())
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, loss.detach())
    for rank in ranks:  # every process's queue got the gathered keys, in rank order
        torch.testing.assert_close(rank["queue"], one.queue)
        expected_grads = [next(one.projector.parameters()).grad, one.backbone[0].weight.grad]
        for grad, expected in zip(rank["grads"], expected_grads):
            torch.testing.assert_close(grad, expected)
    assert not torch.equal(ranks[0]["loss"], ranks[1]["loss"])


# ----------------------------------------------------------------------------------------------
# official checkpoints load whole
# ----------------------------------------------------------------------------------------------
def official_state_dict(mlp: bool) -> dict[str, torch.Tensor]:
    """What facebookresearch/moco's main_moco.py saves, for a ResNet-18 and a queue of 16: the
    DDP-wrapped model's encoder_q / encoder_k (torchvision ResNets, fc the head), queue (128, K)."""
    import torchvision

    state = {}
    for encoder in ("encoder_q", "encoder_k"):
        net = torchvision.models.resnet18(num_classes=128)
        if mlp:
            net.fc = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), net.fc)
        state.update({f"module.{encoder}.{k}": v for k, v in net.state_dict().items()})
    state["module.queue"] = F.normalize(torch.randn(128, 16), dim=0)
    state["module.queue_ptr"] = torch.tensor([8])
    return state


@pytest.mark.parametrize("method", ["mocov1", "mocov2"])
def test_official_checkpoint_loads_whole(method: str, cifar_mini: Path) -> None:
    from solo.zoo.layouts import moco_method_state_dict, split_official

    official = official_state_dict(mlp=method == "mocov2")
    assert split_official({"state_dict": official}).method == method
    extra = ["++backbone.cifar_stem=False", "++method_kwargs.split_bn=1",
             "++method_kwargs.queue_size=16"]
    if method == "mocov2":
        extra.append("++method_kwargs.proj_hidden_dim=512")
    cfg = shipped_config(method, cifar_mini, extra)
    model = METHODS.get(method)(cfg)
    result = model.load_state_dict(moco_method_state_dict(official), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(k.startswith("classifier.") for k in result.missing_keys)
    assert torch.equal(model.queue, official["module.queue"]) and model.queue_ptr.tolist() == [8]
    theirs, ours = ("fc.2", "momentum_projector.2") if method == "mocov2" else ("fc",
                                                                               "momentum_projector")
    assert torch.equal(model.state_dict()[f"{ours}.weight"],
                       official[f"module.encoder_k.{theirs}.weight"])
