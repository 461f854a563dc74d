from __future__ import annotations

import torch
from torch import nn

from vaekit.core.errors import ConfigError
from vaekit.core.noise import corrupt, in_unit_range, parse_noise


def add_denoising(model: nn.Module, spec: str, train_x: torch.Tensor) -> None:
    """Make `model` encode corrupted inputs while it is in training mode (denoising VAE)."""
    noise = parse_noise(spec)
    encoder = getattr(model, "encoder", None)  # a network, not a capability
    if encoder is None or not model.gradient_trained:
        raise ConfigError(
            "denoising training needs a model trained by gradient steps (vae, ae, cvae)"
        )
    clip = in_unit_range(train_x)
    if not clip and noise.kind == "saltpepper":
        raise ConfigError("salt-and-pepper noise needs data in [0, 1] (images)")

    def corrupt_input(module: nn.Module, args: tuple) -> tuple | None:
        if not module.training:
            return None
        return (corrupt(args[0], noise, clip=clip), *args[1:])

    encoder.register_forward_pre_hook(corrupt_input)
