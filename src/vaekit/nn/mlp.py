"""Fully connected encoder and decoder bodies."""

from __future__ import annotations

import math

import torch
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
