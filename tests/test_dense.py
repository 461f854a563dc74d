"""The fused oneDNN layers compute what nn.Linear + nn.ReLU compute, gradients included, and
keep their state-dict keys; they step aside where they do not apply."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaekit.nn.dense import Dense, fused_kernels_active, use_fused_kernels
from vaekit.nn.mlp import mlp

needs_onednn = pytest.mark.skipif(
    not fused_kernels_active(torch.zeros(1, 1), torch.zeros(1, 1)),
    reason="this PyTorch build has no oneDNN fused linear",
)


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(mlp([30, 20, 10]), Dense(10, 5))


def outputs_and_grads(net: nn.Module, x: torch.Tensor, fused: bool) -> list[torch.Tensor]:
    """The output and every gradient (input's and parameters') of a squared-sum loss."""
    net.zero_grad()
    x = x.clone().requires_grad_(True)
    with use_fused_kernels(fused):
        y = net(x)
        y.square().sum().backward()
    return [y.detach(), x.grad] + [p.grad for p in net.parameters()]


@needs_onednn
def test_fused_layers_match_plain_pytorch_forward_and_backward():
    net, x = network(), torch.randn(16, 30)
    fused = outputs_and_grads(net, x, fused=True)
    plain = outputs_and_grads(net, x, fused=False)
    assert len(fused) == 2 + 6
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # ReLU really is applied: some hidden units are cut to exactly zero
    with torch.no_grad():
        assert (net[0](x) == 0).any()


@needs_onednn
def test_fused_path_handles_leading_dimensions_and_no_grad():
    net, x = network(), torch.randn(3, 4, 30)  # (K samples, B, features)
    with torch.no_grad():
        stacked = net(x)
        each = torch.stack([net(rows) for rows in x])
        with use_fused_kernels(False):
            plain = net(x)
    assert stacked.shape == (3, 4, 5)
    torch.testing.assert_close(stacked, each)
    torch.testing.assert_close(stacked, plain, rtol=1e-5, atol=1e-5)


def test_state_dict_matches_plain_linear_and_sequential():
    fused = network()
    plain = nn.Sequential(
        nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 10), nn.ReLU()),
        nn.Linear(10, 5),
    )
    assert list(fused.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(8, 30)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)


def test_plain_path_under_autocast_other_dtypes_and_when_switched_off():
    weight = torch.zeros(5, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused_kernels_active(torch.zeros(2, 3), weight)
    assert not fused_kernels_active(torch.zeros(2, 3, dtype=torch.float64), weight)
    with use_fused_kernels(False):
        assert not fused_kernels_active(torch.zeros(2, 3), weight)
    net = network().double()
    assert net(torch.randn(4, 30, dtype=torch.float64)).dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert network()(torch.randn(4, 30)).dtype == torch.bfloat16
