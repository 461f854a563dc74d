"""The optimiser: fused Adam/AdamW, stepped through optimizer.step() (its hooks run), and its
state saved in a checkpoint continues exactly as if never saved."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import tiny_config
from vaekit.models import build_model
from vaekit.training.checkpoint import flatten_optimizer, unflatten_optimizer
from vaekit.training.optim import make_optimizer
from vaekit.training.trainer import Trainer


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


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adam_or_adamw_on_the_fused_kernel(weight_decay):
    optimizer = make_optimizer(model(), 1e-2, weight_decay)
    assert type(optimizer) is (torch.optim.AdamW if weight_decay else torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert group["fused"] is True  # torch 2.4+ has the fused CPU kernel
    assert group["weight_decay"] == weight_decay


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])  # Adam, AdamW
def test_a_checkpointed_optimizer_continues_exactly(weight_decay):
    """Saved through the checkpoint's flat tensors and loaded into a new optimiser, across
    a learning-rate change: the same parameters and state as one that never stopped."""
    net_a = model()
    opt_a = make_optimizer(net_a, 1e-2, weight_decay)
    for step in range(2):
        set_grads(net_a, step)
        opt_a.step()
    tensors, meta = flatten_optimizer(copy.deepcopy(opt_a.state_dict()))
    net_b = copy.deepcopy(net_a)
    opt_b = make_optimizer(net_b, 1e-2, weight_decay)
    opt_b.load_state_dict(unflatten_optimizer(tensors, meta))
    for step in range(2, 6):
        if step == 3:  # a learning-rate schedule writes the group's lr
            opt_a.param_groups[0]["lr"] = opt_b.param_groups[0]["lr"] = 3e-3
        set_grads(net_a, step)
        set_grads(net_b, step)
        opt_a.step()
        opt_b.step()
    assert_same(opt_a, opt_b)
    assert not torch.equal(next(net_a.parameters()), next(model().parameters()))  # it moved


@pytest.mark.parametrize("step", ["auto", "autograd"])
def test_the_trainer_steps_through_optimizer_step(synth, step):
    """Step hooks registered on the trainer's optimiser run once per training step."""
    config = tiny_config(step=step)
    trainer = Trainer(config, build_model(config.model, synth.shape), synth, progress=False)
    calls = []
    trainer.optimizer.register_step_pre_hook(lambda *args: calls.append("pre"))
    trainer.optimizer.register_step_post_hook(lambda *args: calls.append("post"))
    batches = trainer.batches.epoch(0)
    for _ in range(3):
        trainer.train_step(next(batches)[0])
    assert calls == ["pre", "post"] * 3
