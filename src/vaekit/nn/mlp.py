"""Fully connected encoder and decoder bodies."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them and after the last one."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)


def with_condition(h: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """Features (B, F), with a conditioning vector (B, K) appended when one is given."""
    return h if cond is None else torch.cat([h, cond.to(h.dtype)], dim=1)


class MLPEncoder(nn.Module):
    """x (B, *shape) [+ condition (B, cond_dim)] -> `heads` tensors of (B, latent_dim).

    A VAE takes two heads (z_mean, z_log_var); a deterministic autoencoder one (the code).
    One output layer produces all heads: one GEMM instead of two.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        hidden: list[int],
        latent_dim: int,
        cond_dim: int = 0,
        heads: int = 2,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.body = mlp([math.prod(shape) + cond_dim, *hidden])
        self.head = nn.Linear(hidden[-1], heads * latent_dim)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        h = self.body(with_condition(x.flatten(1), cond))
        return self.head(h).chunk(self.heads, dim=1)

    def forward_each_condition(
        self, x: torch.Tensor, conds: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """The heads for every (example, condition) pair, rows b-major: (B * K, latent_dim)
        each for x (B, ...) and conds (K, cond_dim). Equals forward on the repeated pairs,
        but the first layer's product with x is computed once per example, not K times."""
        first = self.body[0]
        n_x = first.in_features - conds.shape[1]
        base = F.linear(x.flatten(1), first.weight[:, :n_x], first.bias)  # (B, H)
        shift = conds.to(base.dtype) @ first.weight[:, n_x:].T  # (K, H)
        h = self.body[1:]((base.unsqueeze(1) + shift).flatten(0, 1))  # (B * K, ...)
        return self.head(h).chunk(self.heads, dim=1)


class MLPDecoder(nn.Module):
    """z (B, latent_dim) -> distribution parameters (B, *shape), hidden sizes mirrored.

    A conditional model passes latent_dim = code size + condition size and concatenates."""

    def __init__(self, shape: tuple[int, ...], hidden: list[int], latent_dim: int) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.body = mlp([latent_dim, *reversed(hidden)])
        self.out = nn.Linear(hidden[0], math.prod(shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(z)).view(-1, *self.shape)
