"""solo.Learner (byol-pytorch's interface) and solo.fit on real CIFAR-10 images, every method."""

from __future__ import annotations

import copy
import dataclasses
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torchvision
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms.v2.functional import pil_to_tensor

from solo import Learner, fit
from solo.config import ConfigError, parse_config
from solo.data.recipes import FALLBACK_METHOD, RECIPES
from solo.learner import PROJECTION_ALIASES, learner_config
from solo.learner_fit import LAST_CHECKPOINT, LearnerModule
from solo.methods import METHODS, MomentumMethod
from solo.methods.momentum import cosine_tau
from solo.utils.progress import LossProgressBar
from tests.host_sync import HostReadWindow
from tests.helpers import ROOT, load_raw, recipe_file, small_cpu_overrides

# methods with EMA copies by default (TWIST's momentum encoder is an option, off by default)
MOMENTUM_METHODS = [m for m in METHODS if issubclass(METHODS.get(m), MomentumMethod) and {
    f.name: f.default for f in dataclasses.fields(METHODS.get(m).Config)}.get(
        "use_momentum_encoder", True)]
# supervised methods: a learner sees no labels, so building one fails (tested for that instead)
NEEDS_LABELS = {"supcon"}
# methods that need a ViT: a learner's wrapped net is not one, so building one fails (tested)
NEEDS_VIT = {"mae"}
# methods whose targets are looked up by dataset index, which a learner's batches lack (tested)
NEEDS_INDEXES = {m for m in METHODS if getattr(METHODS.get(m), "needs_dataset_indexes", False)}
UNSUPERVISED = [m for m in METHODS.names() if m not in NEEDS_LABELS | NEEDS_VIT | NEEDS_INDEXES]
SMALL_SIZES = {"projection_size": 16, "projection_hidden_size": 32}


def small_heads(method: str) -> dict:
    """Small projector (and predictor) sizes, for the options the method has."""
    options = {f.name for f in dataclasses.fields(METHODS.get(method).Config)}
    kwargs = {alias: size for alias, size in SMALL_SIZES.items()
              if PROJECTION_ALIASES[alias] in options}
    if "pred_hidden_dim" in options:
        kwargs["pred_hidden_dim"] = 32
    if "whitening_size" in options:  # W-MSE whitens batches of 8: narrower than 8 to invert
        kwargs.update(projection_size=4, whitening_size=8)
    return kwargs


def cifar_images(root: Path, split: str, count: int) -> Tensor:
    """``count`` real CIFAR-10 JPEGs as a uint8 batch (count, 3, 32, 32), classes interleaved."""
    paths = sorted((root / split).rglob("*.jpg"))[::97][:count]
    return torch.stack([pil_to_tensor(Image.open(p).convert("RGB")) for p in paths])


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18()


def tiny_net() -> nn.Module:
    """For the tests of the learner's mechanics, where a ResNet would only cost time."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def train(learner: Learner, images: Tensor, steps: int, lr: float = 1e-3) -> list[float]:
    """byol-pytorch's loop: loss, backward, step, then the EMA when the method has one."""
    optimizer = torch.optim.Adam(learner.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = learner(images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if learner.uses_momentum:
            learner.update_moving_average()
        losses.append(float(loss.detach()))
    return losses


def momentum_pairs(learner: Learner) -> list[tuple[str, nn.Module, nn.Module]]:
    """(name, online module, its EMA copy) for every momentum_<name> child of the method."""
    method = learner.method
    return [(name.removeprefix("momentum_"), getattr(method, name.removeprefix("momentum_")), copy_)
            for name, copy_ in method.named_children() if name.startswith("momentum_")]


# ----------------------------------------------------------------------------------------------
def test_trains_a_torchvision_resnet_in_place(cifar_mini: Path, tmp_path: Path) -> None:
    net = resnet18()
    before = copy.deepcopy(net).requires_grad_(False)
    learner = Learner(net, image_size=32, hidden_layer="avgpool", method="byol",
                      **small_heads("byol"))
    assert learner.net is net  # the user's module, not a copy
    losses = train(learner, cifar_images(cifar_mini, "train", 16), steps=3)
    assert all(torch.isfinite(torch.tensor(losses)))

    trained, initial = dict(net.named_parameters()), dict(before.named_parameters())
    below_avgpool = [n for n in trained if not n.startswith("fc.")]
    assert all(not torch.equal(trained[n], initial[n]) for n in below_avgpool)
    # the layer after hidden_layer runs but gets no gradient: Adam leaves it as it was
    assert torch.equal(trained["fc.weight"], initial["fc.weight"])

    torch.save(net.state_dict(), tmp_path / "improved-net.pt")
    fresh = torchvision.models.resnet18()
    fresh.load_state_dict(torch.load(tmp_path / "improved-net.pt"))
    test = cifar_images(cifar_mini, "test", 8).float() / 255
    for module in (net, fresh, before):
        module.eval()
    with torch.no_grad():
        assert torch.equal(fresh(test), net(test))
        assert not torch.allclose(before(test), net(test))


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_the_net(method: str, cifar_mini: Path) -> None:
    net = tiny_net()
    initial = copy.deepcopy(net[0].weight)
    if method in NEEDS_LABELS:
        with pytest.raises(ConfigError, match=f"data.no_labels: {method} learns from labels"):
            Learner(net, 32, -2, method=method, **small_heads(method))
        return
    if method in NEEDS_VIT:
        with pytest.raises(ConfigError, match=f"backbone.name: {method} needs a ViT"):
            Learner(net, 32, -2, method=method, **small_heads(method))
        return
    if method in NEEDS_INDEXES:
        with pytest.raises(ConfigError, match=f"method: {method} looks its targets up by dataset "
                                              "index"):
            Learner(net, 32, -2, method=method, **small_heads(method))
        return
    learner = Learner(net, 32, -2, method=method, **small_heads(method))
    losses = train(learner, cifar_images(cifar_mini, "train", 8), steps=2)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(net[0].weight, initial)

    images = cifar_images(cifar_mini, "test", 4).float() / 255
    projection, embedding = learner(images, return_embedding=True)
    width = small_heads(method).get("projection_size", 16)  # the embedding without a projector
    assert projection.shape == (4, width) and embedding.shape == (4, 16)
    assert torch.equal(learner(images, return_embedding=True, return_projection=False), embedding)


@pytest.mark.parametrize("method", MOMENTUM_METHODS)
def test_update_moving_average_is_the_ema(method: str, cifar_mini: Path) -> None:
    learner = Learner(tiny_net(), 32, -2, method=method, moving_average_decay=0.9,
                      **small_heads(method))
    optimizer = torch.optim.SGD(learner.parameters(), lr=0.5)
    learner(cifar_images(cifar_mini, "train", 8)).backward()
    optimizer.step()  # now the online weights differ from their copies
    pairs = momentum_pairs(learner)
    names = {name for name, _, _ in pairs}  # the backbone and the heads (DINO's is "head")
    assert "backbone" in names and names & {"projector", "head"}

    for tau in (None, 0.5):  # the learner's decay, then one given to the call
        expected_tau = 0.9 if tau is None else tau
        online = {n: [p.clone() for p in o.parameters()] for n, o, _ in pairs}
        old = {n: [p.clone() for p in m.parameters()] for n, _, m in pairs}
        assert any(not torch.equal(a, b) for n in old for a, b in zip(old[n], online[n]))
        learner.update_moving_average(tau)
        for name, online_module, momentum_module in pairs:
            for o, m, new in zip(online[name], old[name], momentum_module.parameters()):
                torch.testing.assert_close(new, expected_tau * m + (1 - expected_tau) * o,
                                           rtol=1e-6, atol=1e-7)
            assert all(torch.equal(a, b) for a, b in zip(online[name], online_module.parameters()))


@pytest.mark.parametrize("method", MOMENTUM_METHODS)
def test_use_momentum_false_keeps_no_ema_copy(method: str, cifar_mini: Path) -> None:
    learner = Learner(tiny_net(), 32, -2, method=method, use_momentum=False,
                      **small_heads(method))
    assert not any("momentum" in name for name, _ in learner.named_modules())
    assert not any("momentum" in key for key in learner.state_dict())
    assert not learner.uses_momentum
    # the target is the online backbone itself, called without gradient
    assert learner.method.momentum_backbone.online is learner.method.backbone
    losses = train(learner, cifar_images(cifar_mini, "train", 8), steps=1)
    assert torch.isfinite(torch.tensor(losses)).all()
    with pytest.raises(RuntimeError, match="use_momentum=False"):
        learner.update_moving_average()


def test_update_moving_average_without_a_momentum_method_raises() -> None:
    learner = Learner(tiny_net(), 32, -2, method="simclr", **small_heads("simclr"))
    assert not learner.uses_momentum
    with pytest.raises(RuntimeError, match="'simclr' has no momentum encoder"):
        learner.update_moving_average()


def test_hidden_layer_by_index_name_and_dotted_name(cifar_mini: Path) -> None:
    net = resnet18().eval()
    images = cifar_images(cifar_mini, "test", 4).float() / 255
    learners = {layer: Learner(net, 32, hidden_layer=layer, **small_heads("byol")).eval()
                for layer in (-2, "avgpool", "layer3.1")}
    with torch.no_grad():
        stem = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        layer3 = net.layer3(net.layer2(net.layer1(stem)))  # (4, 256, 2, 2)
        pooled = net.avgpool(net.layer4(layer3)).flatten(1)  # (4, 512)
        embeddings = {layer: learner(images, return_embedding=True, return_projection=False)
                      for layer, learner in learners.items()}
    assert torch.equal(embeddings[-2], pooled) and torch.equal(embeddings["avgpool"], pooled)
    assert torch.equal(embeddings["layer3.1"], layer3.flatten(1))
    assert learners["layer3.1"].method.num_features == 256 * 2 * 2


def test_unknown_hidden_layer_errors_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match=r'did you mean "avgpool"\?.*layer4, avgpool, fc'):
        Learner(resnet18(), 32, hidden_layer="avgpol")
    with pytest.raises(ValueError, match="has 10 children"):
        Learner(resnet18(), 32, hidden_layer=10)


def test_augment_fn_makes_the_views(cifar_mini: Path) -> None:
    calls = {"first": 0, "second": 0}

    def augment(name: str):
        def views(images: Tensor) -> Tensor:
            calls[name] += 1
            floats = images.float() / 255
            return (floats.flip(-1) if name == "second" else floats) - 0.5  # normalized-ish
        return views

    images = cifar_images(cifar_mini, "train", 8)
    same = Learner(tiny_net(), 32, -2, augment_fn=augment("first"), **small_heads("byol"))
    assert same.augment is None
    train(same, images, steps=2)
    assert calls == {"first": 4, "second": 0}  # augment_fn2 defaults to augment_fn

    calls.update(first=0)
    both = Learner(tiny_net(), 32, -2, augment_fn=augment("first"),
                   augment_fn2=augment("second"), **small_heads("byol"))
    train(both, images, steps=2)
    assert calls == {"first": 2, "second": 2}


def recipe(method: str, image_size: int) -> list:
    """The crop groups a learner of ``method`` makes its views with, validated."""
    return learner_config(method, image_size, {}, 0.99, True, own_views=False).augmentations


@pytest.mark.parametrize("method", METHODS.names())
def test_default_recipe_is_the_shipped_one(method: str, cifar_mini: Path) -> None:
    """The learner's views are those of the method's shipped YAMLs, at their crop size (a
    size without a YAML, such as MoCo's ImageNet one, has nothing to be checked against)."""
    shipped = [(folder, size) for folder, size in (("cifar", 32), ("imagenet-100", 224))
               if (ROOT / "scripts" / "pretrain" / folder / recipe_file(method)).is_file()]
    if method not in RECIPES:
        assert not shipped, f"{method} ships a recipe: add it to solo/data/recipes.py RECIPES"
        assert recipe(method, 32) == recipe(FALLBACK_METHOD, 32)
        return
    assert shipped, f"{method} has a recipe in code but no shipped YAML to check it against"
    for folder, size in shipped:
        raw = load_raw(ROOT / "scripts" / "pretrain" / folder, recipe_file(method),
                       small_cpu_overrides(cifar_mini))
        assert recipe(method, size) == parse_config(raw).augmentations, folder


def test_bad_names_and_kwargs_fail_with_the_key() -> None:
    net = tiny_net()
    valid = re.escape(", ".join(METHODS.names()))
    with pytest.raises(ConfigError, match=rf"method: unknown method 'byl' \(did you mean "
                                          rf"\"byol\"\?\); valid: {valid}"):
        Learner(net, 32, method="byl")
    with pytest.raises(ConfigError, match=r"'method_kwargs.proj_output_dimm' \(did you mean "
                                          r"\"proj_output_dim\"\?\)"):
        Learner(net, 32, proj_output_dimm=8)
    with pytest.raises(ConfigError, match=r"method_kwargs.proj_output_dim: must be > 0"):
        Learner(net, 32, projection_size=0)
    with pytest.raises(ConfigError, match="projection_size=8 and proj_output_dim=16 disagree"):
        Learner(net, 32, projection_size=8, proj_output_dim=16)
    with pytest.raises(ConfigError, match="momentum.base_tau"):
        Learner(net, 32, moving_average_decay=1.5)


# ----------------------------------------------------------------------------------------------
# fit: the Lightning path
# ----------------------------------------------------------------------------------------------
class CifarSlice(torch.utils.data.Dataset):
    """(image, label) tuples of real CIFAR-10 images, uint8 (3, 32, 32)."""

    def __init__(self, root: Path, count: int) -> None:
        self.images = cifar_images(root, "train", count)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], 0


class BatchCounter(pl.Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, *args) -> None:
        self.batches += 1


@pytest.mark.parametrize("checkpoint_every", [None, 2])
def test_fit_checkpoints_reloads_and_resumes(checkpoint_every: int | None, cifar_mini: Path,
                                             tmp_path: Path) -> None:
    """Checkpoints each epoch (the last one cut short by max_steps) or every 2 steps: either
    way last.ckpt holds the final step, reloads into a fresh net, and a second call resumes."""
    net = tiny_net()
    learner = Learner(net, 32, hidden_layer=-2, **small_heads("byol"))
    momentum_before = copy.deepcopy(learner.method.momentum_backbone.state_dict())
    dataset = CifarSlice(cifar_mini, 48)  # 6 batches an epoch
    options = {"batch_size": 8, "accelerator": "cpu", "checkpoint_dir": tmp_path,
               "checkpoint_every": checkpoint_every, "enable_progress_bar": False}
    counter = BatchCounter()
    trainer = fit(learner, dataset, max_steps=3, callbacks=[counter], **options)
    assert trainer.global_step == 3 and counter.batches == 3
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    moved = learner.method.momentum_backbone.state_dict()
    assert not torch.equal(moved["net.0.weight"], momentum_before["net.0.weight"])  # the EMA ran

    fresh = tiny_net()
    reloaded = Learner(fresh, 32, -2, **small_heads("byol"))
    LearnerModule.load_from_checkpoint(tmp_path / LAST_CHECKPOINT, learner=reloaded)
    for key, value in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    for key, value in learner.state_dict().items():  # the EMA copies too
        assert torch.equal(reloaded.state_dict()[key], value), key

    # a second call resumes from last.ckpt: two more steps, not five
    counter = BatchCounter()
    trainer = fit(learner, dataset, max_steps=5, callbacks=[counter], **options)
    assert trainer.global_step == 5 and counter.batches == 2


def test_fit_reads_nothing_back_per_step_and_its_bar_shows_the_loss(cifar_mini: Path,
                                                                    tmp_path: Path) -> None:
    # the learner's own views (made on the training device) and the logged loss included: a
    # loss logged with prog_bar would be read back by Lightning after every step
    window = HostReadWindow(first=1, last=2)
    learner = Learner(tiny_net(), 32, hidden_layer=-2, **small_heads("byol"))
    trainer = fit(learner, CifarSlice(cifar_mini, 48), max_steps=4, batch_size=4,
                  accelerator="cpu", callbacks=[window], default_root_dir=tmp_path)
    window.assert_read_nothing()
    bar = trainer.progress_bar_callback
    assert isinstance(bar, LossProgressBar)
    assert bar.get_metrics(trainer, trainer.lightning_module)["train_loss"] == float(
        trainer.callback_metrics["train_loss"])


class TauRecorder(Learner):
    """A Learner that also notes the tau of each EMA update fit asks for."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.taus: list[float | None] = []

    def update_moving_average(self, tau: float | None = None) -> None:
        self.taus.append(tau)
        super().update_moving_average(tau)


def test_fit_updates_the_ema_once_per_optimizer_step_on_the_cosine(cifar_mini: Path,
                                                                    tmp_path: Path) -> None:
    learner = TauRecorder(tiny_net(), 32, -2, moving_average_decay=0.9,
                          config={"momentum": {"final_tau": 1.0}}, **small_heads("byol"))
    fit(learner, CifarSlice(cifar_mini, 48), max_steps=3, batch_size=4, accelerator="cpu",
        accumulate_grad_batches=2, enable_progress_bar=False, default_root_dir=tmp_path)
    # three optimizer steps of two batches each: three updates, base_tau first
    assert learner.taus == pytest.approx([cosine_tau(k, 3, 0.9, 1.0) for k in range(3)])
    assert learner.taus[0] == pytest.approx(0.9)


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
from solo import Learner, fit
from tests.test_learner import CifarSlice, simclr_probe, small_heads, tiny_net
from pathlib import Path
net = tiny_net()
learner = Learner(net, 32, -2, method="byol", **small_heads("byol"))
trainer = fit(learner, CifarSlice(Path({data!r}), 32), max_steps=2, batch_size=8, devices=2,
              accelerator="cpu", checkpoint_dir={out!r}, enable_progress_bar=False)
# the same fixed batch, split between the processes: their mean loss is the whole batch's
loss = simclr_probe()(CifarSlice(Path({data!r}), 16).images[8 * trainer.global_rank:][:8])
losses = [torch.zeros(()) for _ in range(2)]
torch.distributed.all_gather(losses, loss.detach())
torch.save({{"world": trainer.world_size, "net": net.state_dict(), "split_loss": sum(losses) / 2,
            "ema": learner.method.momentum_backbone.net.state_dict()}},
           f"{out}/rank{{trainer.global_rank}}.pt")
"""


def simclr_probe() -> Learner:
    """SimCLR with fixed views and no batch norm: its loss on a batch depends on nothing else,
    so splitting the batch between processes must not change it."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten())
    return Learner(net, 32, None, method="simclr", projection_size=16, projection_hidden_size=32,
                   augment_fn=lambda x: x.float() / 255,
                   augment_fn2=lambda x: x.float().flip(-1) / 255)


@pytest.mark.slow
def test_fit_runs_ddp_on_two_cpu_processes(cifar_mini: Path, tmp_path: Path) -> None:
    """Two gloo processes training BYOL: both take the same steps (DDP averages their
    gradients) and the same EMA updates, rank 0 writes the checkpoint; and SimCLR's loss over
    both processes is the one-process loss."""
    script = tmp_path / "ddp_fit.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(root=str(ROOT), data=str(cifar_mini),
                                                        out=str(tmp_path))))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    initial = tiny_net().state_dict()
    trained = [r["net"] for r in ranks]
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    for key in [k for k in initial if not k.endswith(statistics)]:
        # the weights; batch-norm statistics stay per process (no SyncBatchNorm on the CPU)
        assert torch.equal(trained[0][key], trained[1][key]), key
        assert torch.equal(ranks[0]["ema"][key], ranks[1]["ema"][key]), key
    assert not torch.equal(trained[0]["0.weight"], initial["0.weight"])
    assert not torch.equal(ranks[0]["ema"]["0.weight"], initial["0.weight"])
    assert (tmp_path / LAST_CHECKPOINT).is_file()
    # SimCLR's ids are unique across processes: each view finds its one positive among the
    # gathered views, as in one process holding the whole batch
    whole = simclr_probe()(CifarSlice(cifar_mini, 16).images)
    torch.testing.assert_close(ranks[0]["split_loss"], whole.detach())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", UNSUPERVISED)
def test_learner_follows_the_module_to_the_gpu(method: str, cifar_mini: Path) -> None:
    learner = Learner(resnet18(), 32, "avgpool", method=method, **small_heads(method)).to("cuda")
    images = cifar_images(cifar_mini, "train", 8)  # on the CPU: the learner moves them
    losses = train(learner, images, steps=2)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert learner.net.conv1.weight.device.type == "cuda"
