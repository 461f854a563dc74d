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

from vaekit.nn.conv import StageExtra


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
