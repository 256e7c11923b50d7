"""Parameter groups, optimizer construction from the config, and linear lr scaling."""

import pytest
import torch
from torch import nn

from solo.config import OptimizerConfig
from solo.utils.lars import LARS
from solo.utils.optim import build_optimizer, param_groups, scaled_lr


def tiny() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def ids(group: dict) -> list[int]:
    return [id(p) for p in group["params"]]


def test_split_puts_biases_and_norm_params_in_a_no_decay_group():
    model = tiny()
    groups = param_groups([{"name": "backbone", "params": list(model.named_parameters()),
                            "lr": 0.3}], exclude_bias_n_norm_wd=True)
    assert [g["name"] for g in groups] == ["backbone", "backbone_no_wd"]
    assert ids(groups[0]) == [id(model[0].weight)]
    assert ids(groups[1]) == [id(model[0].bias), id(model[1].weight), id(model[1].bias)]
    assert groups[1]["weight_decay"] == 0.0
    assert "weight_decay" not in groups[0]  # takes the optimizer's weight decay
    assert groups[0]["lr"] == groups[1]["lr"] == 0.3


def test_no_split_keeps_one_group_of_plain_params():
    model = tiny()
    groups = param_groups([{"name": "backbone", "params": model.parameters()}], False)
    assert len(groups) == 1
    assert ids(groups[0]) == [id(p) for p in model.parameters()]


def test_frozen_params_and_empty_groups_are_dropped():
    model, head = tiny(), nn.Linear(4, 2)
    model[1].weight.requires_grad_(False)
    head.requires_grad_(False)
    groups = param_groups([{"name": "backbone", "params": model.named_parameters()},
                           {"name": "head", "params": head.parameters()}], True)
    assert [g["name"] for g in groups] == ["backbone", "backbone_no_wd"]
    assert ids(groups[1]) == [id(model[0].bias), id(model[1].bias)]


def cfg(name: str, **kwargs) -> OptimizerConfig:
    return OptimizerConfig(name=name, batch_size=128, lr=0.3, weight_decay=1e-4, kwargs=kwargs)


@pytest.mark.parametrize("name, cls, defaults", [
    ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
    ("lars", LARS, {"momentum": 0.9, "eta": 1e-3, "clip_lr": False,
                    "exclude_bias_n_norm": False}),
    ("adam", torch.optim.Adam, {"betas": (0.9, 0.999)}),
    ("adamw", torch.optim.AdamW, {"betas": (0.9, 0.999)}),
])
def test_each_optimizer_has_solo_learn_defaults(name, cls, defaults):
    opt = build_optimizer(cfg(name), [{"name": "backbone", "params": tiny().parameters()}],
                          lr=0.6)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.6 and group["weight_decay"] == 1e-4
    for key, value in defaults.items():
        assert group[key] == value, key


def test_kwargs_override_defaults_and_betas_become_a_tuple():
    opt = build_optimizer(cfg("lars", eta=0.02, clip_lr=True, exclude_bias_n_norm=True),
                          [{"params": tiny().parameters()}], lr=0.6)
    group = opt.param_groups[0]
    assert (group["eta"], group["clip_lr"], group["exclude_bias_n_norm"]) == (0.02, True, True)
    opt = build_optimizer(cfg("adamw", betas=[0.9, 0.95]), [{"params": tiny().parameters()}],
                          lr=1e-3)
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_groups_keep_their_lr_and_weight_decay():
    model, probe, other = tiny(), nn.Linear(4, 10), nn.Linear(4, 4)
    groups = param_groups([{"name": "backbone", "params": model.named_parameters()},
                           {"name": "projector", "params": other.parameters(), "lr": 0.05},
                           {"name": "classifier", "params": probe.parameters(), "lr": 0.2,
                            "weight_decay": 0.0}], True)
    opt = build_optimizer(cfg("sgd"), groups, lr=0.6)
    lrs = {g["name"]: (g["lr"], g["weight_decay"]) for g in opt.param_groups}
    assert lrs == {"backbone": (0.6, 1e-4), "backbone_no_wd": (0.6, 0.0),
                   "projector": (0.05, 1e-4), "projector_no_wd": (0.05, 0.0),
                   "classifier": (0.2, 0.0), "classifier_no_wd": (0.2, 0.0)}


def test_unknown_kwarg_names_key_optimizer_and_valid_kwargs():
    with pytest.raises(ValueError) as error:
        build_optimizer(cfg("lars", etaa=0.02), [{"params": tiny().parameters()}], 0.6)
    message = str(error.value)
    assert "etaa" in message and "'lars'" in message and "clip_lr" in message


def test_scaled_lr_is_linear_in_global_batch():
    assert scaled_lr(0.3, batch_size=128, world_size=2) == pytest.approx(0.3)
    assert scaled_lr(0.3, batch_size=256, world_size=4) == pytest.approx(1.2)
    assert scaled_lr(1.0, batch_size=64, world_size=1) == pytest.approx(0.25)


def test_config_and_builder_list_the_same_optimizers():
    from solo.config import OPTIMIZERS
    from solo.utils.optim import _OPTIMIZERS

    assert set(OPTIMIZERS) == set(_OPTIMIZERS)


def test_a_lars_group_without_adaptation_takes_sgd_steps():
    torch.manual_seed(0)
    lars_net, sgd_net = tiny(), tiny()
    sgd_net.load_state_dict(lars_net.state_dict())
    lars = LARS([{"params": lars_net.parameters(), "lars_adaptation": False}], lr=0.1,
                weight_decay=1e-2, eta=0.02, clip_lr=True)
    sgd = torch.optim.SGD(sgd_net.parameters(), lr=0.1, weight_decay=1e-2, momentum=0.9)
    x = torch.randn(8, 3)
    for _ in range(3):
        for net, opt in ((lars_net, lars), (sgd_net, sgd)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(lars_net.parameters(), sgd_net.parameters()):
        torch.testing.assert_close(a, b)


def test_fixed_lr_groups_are_restored_after_a_scheduler_step():
    from solo.utils.optim import restore_fixed_lrs

    opt = build_optimizer(cfg("sgd"), [{"name": "backbone", "params": tiny().parameters()},
                                       {"name": "predictor", "params": tiny().parameters(),
                                        "fixed_lr": True}], lr=0.6)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(), scheduler.step(), restore_fixed_lrs(opt)
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.6]
