"""Convolutional encoder and decoder (the Keras VAE example's design, any image size).

Encoder: per stage a 3x3 convolution with stride 2 (32 then 64 filters by default) and a
ReLU, then flatten, optional dense layers, and one linear layer for all heads. Decoder: the
mirror image, with 3x3 transposed convolutions of stride 2. Each stride-2 stage maps a side
of t pixels to ceil(t / 2); on the way back `output_padding` is chosen per stage so that the
decoder returns exactly the input's height and width, odd or even (28 -> 14 -> 7 -> 14 -> 28,
20 -> 10 -> 5 -> 10 -> 20, 5 -> 3 -> 2 -> 3 -> 5). No cropping, no padding of the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from vaekit.nn.mlp import mlp, with_condition

# extra layers run at a stage's resolution, given its channel count (ResNet: residual blocks)
StageExtra = Callable[[int], list[nn.Module]]


def no_extra(channels: int) -> list[nn.Module]:
    """Plain convolutional stages: nothing between the strided convolutions."""
    return []


def stage_sizes(height: int, width: int, stages: int) -> list[tuple[int, int]]:
    """(height, width) before the first stage and after each stride-2 stage."""
    sizes = [(height, width)]
    for _ in range(stages):
        h, w = sizes[-1]
        sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return sizes


def down(c_in: int, c_out: int) -> nn.Conv2d:
    """3x3 convolution, stride 2, padding 1: a side of t pixels becomes ceil(t / 2)."""
    return nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)


def up(c_in: int, c_out: int, target: tuple[int, int]) -> nn.ConvTranspose2d:
    """3x3 transposed convolution, stride 2: a side of ceil(t / 2) pixels becomes exactly t."""
    extra = (1 - target[0] % 2, 1 - target[1] % 2)  # out = 2 * in - 1 + output_padding
    return nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=extra)


class ConvEncoder(nn.Module):
    """x (B, C, H, W) [+ condition (B, cond_dim)] -> `heads` tensors of (B, latent_dim)."""

    def __init__(
        self,
        shape: tuple[int, ...],
        channels: list[int],
        hidden: list[int],
        latent_dim: int,
        cond_dim: int = 0,
        heads: int = 2,
        stage_extra: StageExtra = no_extra,
    ) -> None:
        super().__init__()
        in_channels, height, width = shape
        self.heads = heads
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_channels, *channels[:-1]], channels):
            layers += [down(c_in, c_out), nn.ReLU(), *stage_extra(c_out)]
        self.features = nn.Sequential(*layers)
        h, w = stage_sizes(height, width, len(channels))[-1]
        flat = channels[-1] * h * w + cond_dim
        self.body = mlp([flat, *hidden])
        self.head = nn.Linear(hidden[-1] if hidden else flat, heads * latent_dim)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        h = self.body(with_condition(self.features(x).flatten(1), cond))
        return self.head(h).chunk(self.heads, dim=1)


class ConvDecoder(nn.Module):
    """z (B, latent_dim) -> distribution parameters (B, C, H, W): the encoder mirrored."""

    def __init__(
        self,
        shape: tuple[int, ...],
        channels: list[int],
        hidden: list[int],
        latent_dim: int,
        stage_extra: StageExtra = no_extra,
    ) -> None:
        super().__init__()
        out_channels, height, width = shape
        sizes = stage_sizes(height, width, len(channels))
        self.start = (channels[-1], *sizes[-1])
        self.body = mlp([latent_dim, *reversed(hidden)])
        n_in = hidden[0] if hidden else latent_dim
        self.to_map = nn.Sequential(nn.Linear(n_in, math.prod(self.start)), nn.ReLU())
        layers: list[nn.Module] = []
        targets = [out_channels, *channels[:-1]]
        for stage in reversed(range(len(channels))):
            layers += [
                *stage_extra(channels[stage]),
                up(channels[stage], targets[stage], sizes[stage]),
            ]
            if stage > 0:
                layers.append(nn.ReLU())
        self.features = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.to_map(self.body(z)).view(-1, *self.start)
        return self.features(h)
