"""Model registry: a name -> a constructor taking (ModelConfig, data shape)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from .base import GaussianVAE

MODELS: dict[str, Callable[[ModelConfig, tuple[int, ...]], nn.Module]] = {"vae": GaussianVAE}


def build_model(config: ModelConfig, shape: tuple[int, ...]) -> nn.Module:
    if config.name not in MODELS:
        raise ConfigError(f"unknown model {config.name!r} (known: {', '.join(sorted(MODELS))})")
    return MODELS[config.name](config, tuple(shape))
