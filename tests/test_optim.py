"""FusedAdamStep steps the optimiser exactly as optimizer.step() does."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vaekit.training.optim import FusedAdamStep, make_optimizer


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def set_grads(net: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        p.grad = torch.randn(p.shape, generator=generator)


def assert_same(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    for pa, pb in zip(a.param_groups[0]["params"], b.param_groups[0]["params"]):
        assert torch.equal(pa, pb)
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(a.state[pa][key], b.state[pb][key]), key


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])  # Adam, AdamW
def test_same_parameters_and_state_as_optimizer_step(weight_decay):
    net_a, net_b = model(), model()
    opt_a = make_optimizer(net_a, 1e-2, weight_decay)
    opt_b = make_optimizer(net_b, 1e-2, weight_decay)
    fast = FusedAdamStep(opt_b)
    assert fast.usable  # torch 2.4+ has the fused CPU kernel
    for step in range(6):
        if step == 3:  # a learning-rate schedule writes the group's lr
            opt_a.param_groups[0]["lr"] = opt_b.param_groups[0]["lr"] = 3e-3
        set_grads(net_a, step)
        set_grads(net_b, step)
        opt_a.step()
        fast()
    assert_same(opt_a, opt_b)
    assert not torch.equal(next(net_a.parameters()), next(model().parameters()))  # it moved


def test_continues_from_a_loaded_state():
    net_a = model()
    opt_a = make_optimizer(net_a, 1e-2)
    for step in range(2):
        set_grads(net_a, step)
        opt_a.step()
    net_b = copy.deepcopy(net_a)
    opt_b = make_optimizer(net_b, 1e-2)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as from a checkpoint file
    fast = FusedAdamStep(opt_b)
    for step in range(2, 4):
        set_grads(net_a, step)
        set_grads(net_b, step)
        opt_a.step()
        fast()
    assert_same(opt_a, opt_b)


def test_hooks_and_other_optimisers_go_through_optimizer_step():
    net = model()
    calls = []
    opt = make_optimizer(net, 1e-2)
    opt.register_step_post_hook(lambda *args: calls.append(1))
    fast = FusedAdamStep(opt)
    for step in range(3):
        set_grads(net, step)
        fast()
    assert len(calls) == 3
    assert not FusedAdamStep(torch.optim.Adam(model().parameters(), foreach=True)).usable
    assert not FusedAdamStep(torch.optim.SGD(model().parameters(), lr=0.1)).usable
