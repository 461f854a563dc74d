"""Conditional VAE (Sohn et al. 2015): encoder q(z | x, y) and decoder p(x | z, y) both see
the one-hot class label y; the prior stays N(0, I).

The label enters the encoder next to the image features (appended to the flattened input
of the dense layers) and the decoder next to z (the decoder's input is [z, one_hot(y)]).
So `sample(n, y=torch.full((n,), 7))` draws sevens, and z carries what the label does not:
style, thickness, slant. Every method needs `y`; `sample` without labels cycles through
the classes (0, 1, ..., K-1, 0, 1, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vaekit.config.schema import ModelConfig
from vaekit.core.errors import ConfigError
from vaekit.data.datasets import DataSplits
from vaekit.models.base import GaussianVAE


class ConditionalVAE(GaussianVAE):
    """GaussianVAE whose encoder and decoder are conditioned on the one-hot label."""

    needs_labels = True

    def __init__(self, config: ModelConfig, shape: tuple[int, ...]) -> None:
        if config.n_classes is None:
            raise ConfigError(
                "model cvae: model.n_classes is not set (training records it from the labels)"
            )
        super().__init__(config, shape, cond_dim=config.n_classes)
        self.n_classes = config.n_classes

    @staticmethod
    def configure(config: ModelConfig, data: DataSplits) -> None:
        """Record the number of classes from the training labels (before the model is built)."""
        if data.train.y is None:
            raise ConfigError(f"model cvae needs class labels; dataset {data.name} has none")
        found = len(data.classes) if data.classes else int(data.train.y.max()) + 1
        if config.n_classes is None:
            config.n_classes = found
        elif config.n_classes < int(data.train.y.max()) + 1:
            raise ConfigError(
                f"model.n_classes is {config.n_classes} but {data.name} has labels up to "
                f"{int(data.train.y.max())}"
            )

    def one_hot(self, y: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """Labels (B,) -> one-hot (B, n_classes) in the dtype and device of `like`."""
        if y is None:
            raise ConfigError("the cvae model needs class labels (y) to encode and decode")
        y = torch.as_tensor(y, device=like.device).long()
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise ConfigError(
                f"labels must be in 0..{self.n_classes - 1}, got {int(y.min())}..{int(y.max())}"
            )
        return F.one_hot(y, self.n_classes).to(like.dtype)

    def encode(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) -> (z_mean, z_log_var) of q(z | x, y)."""
        return self.encoder(x, self.one_hot(y, x))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """(z, y) -> parameters of p(x | z, y)."""
        return self.decoder(torch.cat([z, self.one_hot(y, z)], dim=1))

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n images of classes `y` (default: cycling through the classes) from the prior."""
        device = next(self.parameters()).device
        if y is None:
            y = torch.arange(n, device=device) % self.n_classes
        return super().sample(n, generator, y=torch.as_tensor(y, device=device))

    @torch.no_grad()
    def class_grid(
        self, per_class: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels): `per_class` samples of every class, one class after the other
        (rows of a grid with `per_class` columns)."""
        device = next(self.parameters()).device
        labels = torch.arange(self.n_classes, device=device).repeat_interleave(per_class)
        return self.sample(len(labels), generator, y=labels), labels
