"""LARS against hand-computed steps, and against torch's SGD where it must reduce to it."""

import copy
import math

import pytest
import torch
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


def test_weight_decay_enters_gradient_and_norm():
    # g + wd * p = [1 + 0.2 * 3, 0 + 0.2 * 4] = [1.6, 0.8]; ratio = 0.01 * 5 / ||[1.6, 0.8]||
    p = one_step([3.0, 4.0], [1.0, 0.0], lr=0.1, eta=0.01, weight_decay=0.2)
    ratio = 0.01 * 5 / math.sqrt(1.6**2 + 0.8**2)
    assert p == pytest.approx([3 - 0.1 * ratio * 1.6, 4 - 0.1 * ratio * 0.8])


def test_clip_lr_caps_ratio_over_lr_at_one():
    # ratio 0.05, lr 0.1: min(0.05 / 0.1, 1) = 0.5
    p = one_step([3.0, 4.0], [0.6, 0.8], lr=0.1, eta=0.01, clip_lr=True)
    assert p == pytest.approx([3 - 0.1 * 0.5 * 0.6, 4 - 0.1 * 0.5 * 0.8])
    # ratio 5, lr 0.1: min(50, 1) = 1, a plain SGD step
    p = one_step([3.0, 4.0], [0.6, 0.8], lr=0.1, eta=1.0, clip_lr=True)
    assert p == pytest.approx([3 - 0.1 * 0.6, 4 - 0.1 * 0.8])


def test_zero_weights_use_ratio_one():
    p = one_step([0.0, 0.0], [1.0, 2.0], lr=0.1, eta=0.01)
    assert p == pytest.approx([-0.1, -0.2])


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


def test_lars_exclude_group_is_sgd_with_weight_decay_and_nesterov():
    lars, sgd = sgd_reference_run(
        lambda ps: LARS([{"params": ps, "lars_exclude": True}], lr=0.1, weight_decay=0.01,
                        nesterov=True),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
        shapes=[(2, 3), (5,)],
    )
    for a, b in zip(lars, sgd):
        torch.testing.assert_close(a, b)


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
                                    {"lr": 0.1, "momentum": 0.0, "nesterov": True}])
def test_rejects_impossible_arguments(kwargs):
    with pytest.raises(ValueError):
        LARS([nn.Parameter(torch.ones(2))], **kwargs)
