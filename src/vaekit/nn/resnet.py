"""Residual encoder and decoder: the convolutional design with residual blocks per stage.

Each stride-2 stage of `conv.py` is followed (encoder) or preceded (decoder) by `blocks`
pre-activation residual blocks, x + conv(relu(conv(relu(x)))), at that stage's resolution.
The second convolution of every block starts at zero, so a new network is the plain
convolutional one plus identities: deeper networks train without normalisation layers
(which would make a VAE's output depend on the batch it sits in).
"""

from __future__ import annotations

import torch
from torch import nn

from vaekit.nn.conv import ConvDecoder, ConvEncoder, StageExtra


class ResidualBlock(nn.Module):
    """x + conv3x3(relu(conv3x3(relu(x)))), channels and resolution unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        nn.init.zeros_(self.branch[-1].weight)
        nn.init.zeros_(self.branch[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def residual_blocks(blocks: int) -> StageExtra:
    """The per-stage extra layers: `blocks` residual blocks."""
    return lambda channels: [ResidualBlock(channels) for _ in range(blocks)]


class ResNetEncoder(ConvEncoder):
    """ConvEncoder with `blocks` residual blocks after each strided convolution."""

    def __init__(
        self,
        shape: tuple[int, ...],
        channels: list[int],
        hidden: list[int],
        latent_dim: int,
        cond_dim: int = 0,
        heads: int = 2,
        blocks: int = 2,
    ) -> None:
        super().__init__(
            shape, channels, hidden, latent_dim, cond_dim, heads, residual_blocks(blocks)
        )


class ResNetDecoder(ConvDecoder):
    """ConvDecoder with `blocks` residual blocks before each strided transposed convolution."""

    def __init__(
        self,
        shape: tuple[int, ...],
        channels: list[int],
        hidden: list[int],
        latent_dim: int,
        blocks: int = 2,
    ) -> None:
        super().__init__(shape, channels, hidden, latent_dim, residual_blocks(blocks))
