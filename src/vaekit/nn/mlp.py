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


class MLPEncoder(nn.Module):
    """x (B, *shape) -> (z_mean, z_log_var), each (B, latent_dim).

    One output layer produces both halves: one GEMM instead of two.
    """

    def __init__(self, shape: tuple[int, ...], hidden: list[int], latent_dim: int) -> None:
        super().__init__()
        self.body = mlp([math.prod(shape), *hidden])
        self.head = nn.Linear(hidden[-1], 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x.flatten(1))
        z_mean, z_log_var = self.head(h).chunk(2, dim=1)
        return z_mean, z_log_var


class MLPDecoder(nn.Module):
    """z (B, latent_dim) -> distribution parameters (B, *shape), hidden sizes mirrored."""

    def __init__(self, shape: tuple[int, ...], hidden: list[int], latent_dim: int) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.body = mlp([latent_dim, *reversed(hidden)])
        self.out = nn.Linear(hidden[0], math.prod(shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(z)).view(-1, *self.shape)
