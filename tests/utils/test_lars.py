"""LARS against hand-computed steps, and against torch's SGD where it must reduce to it."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from solo.utils.lars import LARS


def one_step(p0: list[float], g: list[float], **kwargs) -> list[float]:
    p = nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = LARS([p], **kwargs)
    p.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()
    return p.detach().tolist()


def test_trust_ratio_scales_the_step():
    # ||p|| = 5, ||g|| = 1: ratio = eta * 5 / 1 = 0.05; p -= lr * 0.05 * g
    p = one_step([3.0, 4.0], [0.6, 0.8], lr=0.1, eta=0.01)
    assert p == pytest.approx([3 - 0.1 * 0.05 * 0.6, 4 - 0.1 * 0.05 * 0.8])  # [2.997, 3.996]


def test_trust_ratio_is_eq_6_with_weight_decay_in_the_denominator():
    # eq. 6: ratio = eta * ||p|| / (||g|| + wd * ||p||) = 0.01 * 5 / (1 + 0.2 * 5) = 0.025,
    # applied to g + wd * p = [1 + 0.2 * 3, 0 + 0.2 * 4] = [1.6, 0.8]
    p = one_step([3.0, 4.0], [1.0, 0.0], lr=0.1, eta=0.01, weight_decay=0.2)
    ratio = 0.01 * 5 / (1 + 0.2 * 5)
    assert p == pytest.approx([3 - 0.1 * ratio * 1.6, 4 - 0.1 * ratio * 0.8])


def test_clip_lr_caps_ratio_over_lr_at_one():
    # ratio 0.05, lr 0.1: min(0.05 / 0.1, 1) = 0.5
    p = one_step([3.0, 4.0], [0.6, 0.8], lr=0.1, eta=0.01, clip_lr=True)
    assert p == pytest.approx([3 - 0.1 * 0.5 * 0.6, 4 - 0.1 * 0.5 * 0.8])
    # ratio 5, lr 0.1: min(50, 1) = 1, a plain SGD step
    p = one_step([3.0, 4.0], [0.6, 0.8], lr=0.1, eta=1.0, clip_lr=True)
    assert p == pytest.approx([3 - 0.1 * 0.6, 4 - 0.1 * 0.8])


def test_zero_weights_or_zero_gradient_get_neither_scaling_nor_weight_decay():
    # ||p|| = 0: the raw gradient, no trust ratio and no decay (wd * p would be 0 anyway)
    p = one_step([0.0, 0.0], [1.0, 2.0], lr=0.1, eta=0.01, weight_decay=0.5)
    assert p == pytest.approx([-0.1, -0.2])
    # ||g|| = 0: no decay either, so the weights stay exactly where they are
    p = one_step([3.0, 4.0], [0.0, 0.0], lr=0.1, eta=0.01, weight_decay=0.5)
    assert p == [3.0, 4.0]


def test_momentum_accumulates_scaled_updates():
    p = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = LARS([p], lr=0.1, eta=0.01, momentum=0.9)
    g = torch.tensor([0.6, 0.8], dtype=torch.float64)
    p.grad = g.clone()
    opt.step()  # buf = 0.05 g, p = [2.997, 3.996]
    p.grad = g.clone()
    opt.step()  # ||p|| = 4.995: buf = 0.9 * 0.05 g + 0.04995 g
    buf = 0.9 * 0.05 + 0.01 * 4.995
    assert p.detach().tolist() == pytest.approx([2.997 - 0.1 * buf * 0.6, 3.996 - 0.1 * buf * 0.8])


def sgd_reference_run(make_lars, make_sgd, shapes: list[tuple[int, ...]], steps: int = 3):
    torch.manual_seed(0)
    init = [torch.randn(s, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(s, dtype=torch.float64) for s in shapes] for _ in range(steps)]
    results = []
    for make in (make_lars, make_sgd):
        params = [nn.Parameter(t.clone()) for t in init]
        opt = make(params)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            opt.step()
        results.append(params)
    return results


def test_excluded_1d_params_are_plain_sgd_momentum_without_weight_decay():
    lars, sgd = sgd_reference_run(
        lambda ps: LARS(ps, lr=0.1, weight_decay=0.5, eta=0.02, exclude_bias_n_norm=True),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.0),
        shapes=[(4,), (3,)],
    )
    for a, b in zip(lars, sgd):
        torch.testing.assert_close(a, b)


def test_excluded_2d_param_is_still_adapted():
    lars, sgd = sgd_reference_run(
        lambda ps: LARS(ps, lr=0.1, eta=0.02, exclude_bias_n_norm=True),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
        shapes=[(2, 3)],
    )
    assert not torch.allclose(lars[0], sgd[0])


def test_grad_left_untouched():
    p = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = LARS([p], lr=0.1, weight_decay=0.1)
    p.grad = torch.tensor([0.6, 0.8])
    opt.step()
    assert p.grad.tolist() == pytest.approx([0.6, 0.8])


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    x = torch.randn(8, 3)

    def train(m: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            m(x).pow(2).sum().backward()
            opt.step()

    kwargs = dict(lr=0.5, weight_decay=1e-3, eta=0.02, clip_lr=True, exclude_bias_n_norm=True)
    opt = LARS(model.parameters(), **kwargs)
    train(model, opt, 2)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    train(model, opt, 2)

    resumed = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    resumed.load_state_dict(saved_model)
    resumed_opt = LARS(resumed.parameters(), **kwargs)
    resumed_opt.load_state_dict(saved_opt)
    train(resumed, resumed_opt, 2)
    for a, b in zip(model.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # without the momentum buffers the run diverges, so the check above depends on them
    fresh = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    fresh.load_state_dict(saved_model)
    train(fresh, LARS(fresh.parameters(), **kwargs), 2)
    assert not torch.allclose(fresh[0].weight, model[0].weight)


@pytest.mark.parametrize("kwargs", [{"lr": -1.0}, {"lr": 0.1, "momentum": -0.1},
                                    {"lr": 0.1, "eta": 0.0}, {"lr": 0.1, "weight_decay": -1.0},
                                    {"lr": 0.1, "momentum": 0.0, "nesterov": True},
                                    {"lr": 0.1, "nesterov": True, "dampening": 0.1}])
def test_rejects_impossible_arguments(kwargs):
    with pytest.raises(ValueError):
        LARS([nn.Parameter(torch.ones(2))], **kwargs)


# ----------------------------------------------------------------------------------------------
# several steps on real gradients against a reference written from the equations
# ----------------------------------------------------------------------------------------------
def reference_step(params: list[torch.Tensor], buffers: dict[int, torch.Tensor], lr: float,
                   momentum: float, weight_decay: float, eta: float, eps: float, clip_lr: bool,
                   exclude_bias_n_norm: bool, dampening: float, nesterov: bool) -> None:
    """One LARS step, tensor by tensor: You et al. (2017) eq. 6 and solo-learn's rules."""
    for p in params:
        g = p.grad
        d = g
        if not (exclude_bias_n_norm and p.ndim == 1):
            p_norm, g_norm = float(p.detach().norm()), float(g.norm())
            if p_norm != 0 and g_norm != 0:
                ratio = eta * p_norm / (g_norm + weight_decay * p_norm + eps)
                if clip_lr:
                    ratio = min(ratio / lr, 1.0)
                d = (g + weight_decay * p) * ratio
        if momentum != 0:
            key = id(p)
            buffers[key] = d.clone() if key not in buffers else (
                momentum * buffers[key] + (1 - dampening) * d)
            d = d + momentum * buffers[key] if nesterov else buffers[key]
        with torch.no_grad():
            p -= lr * d


class SmallConvNet(nn.Sequential):
    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
        nn.init.zeros_(self[-1].bias)  # a zero tensor at the first step: no trust ratio for it
        # a (2, 2) tensor whose gradient is exactly zero: neither scaling nor weight decay
        self.idle = nn.Parameter(torch.randn(2, 2))
        self.double()

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(images), labels) + 0 * self.idle.sum()


@pytest.fixture(scope="module")
def cifar_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """16 real CIFAR-10 images (float64, [0, 1]) and their labels."""
    root = Path(__file__).resolve().parents[2] / "data" / "cifar10-mini" / "train"
    classes = sorted(p for p in root.iterdir())
    images, labels = [], []
    for label, folder in enumerate(classes[:8]):
        for path in sorted(folder.iterdir())[:2]:
            array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255
            images.append(torch.from_numpy(array).permute(2, 0, 1))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


@pytest.mark.parametrize("loss_scale", [1e-6, 1.0, 1e4], ids=["small", "unit", "large"])
@pytest.mark.parametrize("options", [
    dict(momentum=0.9, weight_decay=1e-5, eta=0.02, clip_lr=True, exclude_bias_n_norm=True),
    dict(momentum=0.9, weight_decay=1e-4, eta=1e-3),
    dict(momentum=0.9, weight_decay=5e-4, eta=0.02, dampening=0.1, exclude_bias_n_norm=True),
    dict(momentum=0.9, weight_decay=1e-2, eta=0.1, nesterov=True, clip_lr=True),
], ids=["byol-recipe", "defaults", "dampening", "nesterov-clip"])
def test_steps_on_real_gradients_equal_the_reference(cifar_batch, loss_scale, options):
    images, labels = cifar_batch
    settings = {**dict(momentum=0.0, weight_decay=0.0, eta=1e-3, eps=1e-8, clip_lr=False,
                       exclude_bias_n_norm=False, dampening=0.0, nesterov=False), **options}
    lr = 0.3
    ours, reference = SmallConvNet(), SmallConvNet()
    optimizer = LARS(ours.parameters(), lr=lr, **settings)
    buffers: dict[int, torch.Tensor] = {}
    for _ in range(4):
        ours.zero_grad()
        (ours.loss(images, labels) * loss_scale).backward()
        # the same gradients for both, so that rounding differences are not amplified by training
        for a, b in zip(ours.parameters(), reference.parameters()):
            b.grad = a.grad.clone()
        optimizer.step()
        reference_step(list(reference.parameters()), buffers, lr, **settings)
        for a, b in zip(ours.parameters(), reference.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    start = SmallConvNet()
    assert torch.equal(ours.idle, start.idle), "zero gradient: neither a step nor weight decay"
    for (name, a), b in zip(ours.named_parameters(), start.parameters()):
        if name != "idle":
            assert not torch.equal(a, b), f"{name} did not move"
