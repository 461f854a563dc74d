"""Fully connected layers on oneDNN's fused kernels where the CPU build has them.

On a CPU, PyTorch runs an fp32 `nn.Linear` through its default BLAS (MKL) and the ReLU as a
separate pass. oneDNN (bundled with every x86 PyTorch build) computes the same product with
the bias and ReLU fused in, and its fp32 GEMMs ran 10-25% faster at these shapes
(benchmarks/RESULTS.md). `Dense` and `MLP` keep `nn.Linear`'s and `nn.Sequential`'s
parameters and state-dict keys, so checkpoints do not care which kernels made them; they fall
back to plain PyTorch on GPUs, under autocast, under `torch.compile`, for other dtypes, and
when `use_fused_kernels(False)` is in force.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_state = {"enabled": True, "works": None}  # works: None until the first self-check


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias, relu: bool) -> torch.Tensor:
    """x (B, in) @ weight (out, in).T + bias, ReLU'd if asked: one oneDNN call."""
    attr = "relu" if relu else "none"
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], "")


def _self_check() -> bool:
    """Whether this PyTorch build runs oneDNN's fused linear and agrees with F.linear."""
    try:
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*s, generator=gen) for s in ((5, 7), (3, 7), (3,)))
        fused = _onednn_linear(x, w, b, relu=True)
        return bool(torch.allclose(fused, F.relu(F.linear(x, w, b)), atol=1e-5))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _autocast_on() -> bool:
    """Whether CPU autocast is on (the device-type argument is new in torch 2.4)."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:
        return torch.is_autocast_cpu_enabled()


def fused_kernels_active(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `x @ weight.T` goes through oneDNN here (CPU, fp32, eager, no autocast)."""
    if not _state["enabled"] or x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    if weight.dtype != torch.float32 or _autocast_on():
        return False
    if torch.compiler.is_compiling():
        return False
    if _state["works"] is None:
        _state["works"] = _self_check()
    return _state["works"]


@contextlib.contextmanager
def use_fused_kernels(enabled: bool) -> Iterator[None]:
    """Switch the fused oneDNN path on or off inside a `with` block (the default is on)."""
    before = _state["enabled"]
    _state["enabled"] = enabled
    try:
        yield
    finally:
        _state["enabled"] = before


class _FusedLinear(torch.autograd.Function):
    """y = [relu](x W^T + b) with forward and both backward GEMMs in oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias, relu: bool):  # x (B, in), weight (out, in)
        y = _onednn_linear(x, weight, bias, relu)  # (B, out)
        ctx.relu, ctx.has_bias = relu, bias is not None
        ctx.save_for_backward(x, weight, y if relu else None)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):  # grad_y (B, out)
        x, weight, y = ctx.saved_tensors
        if ctx.relu:
            grad_y = torch.ops.aten.threshold_backward(grad_y, y, 0)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_linear(grad_y, weight.t(), None, relu=False)  # (B, in)
        if ctx.needs_input_grad[1]:
            grad_w = _onednn_linear(grad_y.t(), x.t(), None, relu=False)  # (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum(0)
        return grad_x, grad_w, grad_b, None


def dense(x: torch.Tensor, layer: nn.Linear, relu: bool = False) -> torch.Tensor:
    """`layer(x)`, ReLU'd if asked, for x (..., in): oneDNN's fused kernel where it applies."""
    weight, bias = layer.weight, layer.bias
    if not fused_kernels_active(x, weight):
        y = F.linear(x, weight, bias)
        return F.relu(y) if relu else y
    flat = x.reshape(-1, x.shape[-1])
    needs_grad = torch.is_grad_enabled() and (
        flat.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if needs_grad:
        y = _FusedLinear.apply(flat, weight, bias, relu)
    else:
        y = _onednn_linear(flat, weight, bias, relu)
    return y.view(*x.shape[:-1], y.shape[-1])


class Dense(nn.Linear):
    """`nn.Linear` (same parameters and state-dict keys) on the fused kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dense(x, self)


class MLP(nn.Sequential):
    """`nn.Sequential` that runs each Linear + ReLU pair as one fused layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = list(self)
        i = 0
        while i < len(modules):
            module = modules[i]
            fuse = (
                isinstance(module, nn.Linear)
                and i + 1 < len(modules)
                and type(modules[i + 1]) is nn.ReLU
            )
            if fuse:
                x = dense(x, module, relu=True)
                i += 2
            else:
                x = module(x)
                i += 1
        return x
