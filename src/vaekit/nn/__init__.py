"""Network bodies for encoders and decoders, chosen by `ModelConfig.arch`.

`build_networks(config, shape)` returns (encoder, decoder) for images (C, H, W) or, with
the MLP, table rows (D,) (conv and resnet need images: a table is refused).
An encoder maps x (and, for conditional models, a condition vector) to `heads` tensors of
(B, latent_dim); a decoder maps (B, latent_dim + cond_dim) to (B, C, H, W) parameters.
A new architecture is one function here taking (config, shape, cond_dim, heads).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from vaekit.config.schema import ModelConfig
from vaekit.core.errors import ConfigError
from vaekit.data.datasets import kind_of_shape

from .conv import ConvDecoder, ConvEncoder, StageExtra, no_extra
from .custom import Factory, custom_networks
from .mlp import MLPDecoder, MLPEncoder
from .resnet import ResidualBlock, residual_blocks

Networks = tuple[nn.Module, nn.Module]


def mlp_networks(
    config: ModelConfig, shape: tuple[int, ...], cond_dim: int, heads: int
) -> Networks:
    """Fully connected: `hidden` layers, mirrored in the decoder."""
    latent, hidden = config.latent_dim, config.hidden
    return (
        MLPEncoder(shape, hidden, latent, cond_dim, heads),
        MLPDecoder(shape, hidden, latent + cond_dim),
    )


def conv_networks(
    config: ModelConfig,
    shape: tuple[int, ...],
    cond_dim: int,
    heads: int,
    stage_extra: StageExtra = no_extra,
) -> Networks:
    """Strided convolutions with `channels` filters (each stage followed by `stage_extra`'s
    layers), then the dense `hidden` layers."""
    latent, channels, hidden = config.latent_dim, config.channels, config.hidden
    return (
        ConvEncoder(shape, channels, hidden, latent, cond_dim, heads, stage_extra),
        ConvDecoder(shape, channels, hidden, latent + cond_dim, stage_extra),
    )


def resnet_networks(
    config: ModelConfig, shape: tuple[int, ...], cond_dim: int, heads: int
) -> Networks:
    """The convolutional design with `res_blocks` residual blocks per stage."""
    return conv_networks(config, shape, cond_dim, heads, residual_blocks(config.res_blocks))


ARCHS: dict[str, Callable[[ModelConfig, tuple[int, ...], int, int], Networks]] = {
    "mlp": mlp_networks,
    "conv": conv_networks,
    "resnet": resnet_networks,
}


BUILT_IN = ("mlp", "conv", "resnet")


def register_network(name: str, encoder_factory: Factory, decoder_factory: Factory) -> None:
    """Make `model.arch = name` build your own networks (nn/custom.py says what the
    factories return); registering a name again replaces it, a built-in name is refused."""
    if name in BUILT_IN:
        raise ConfigError(f"network name {name!r} is built in; choose another")
    if not (callable(encoder_factory) and callable(decoder_factory)):
        raise ConfigError("register_network needs two factories f(shape, latent_dim) -> nn.Module")
    ARCHS[name] = custom_networks(name, encoder_factory, decoder_factory)


def build_networks(
    config: ModelConfig, shape: tuple[int, ...], cond_dim: int = 0, heads: int = 2
) -> Networks:
    """(encoder, decoder) of architecture `config.arch` for examples of `shape`: images
    (C, H, W) for every arch, table rows (D,) for the MLP only."""
    if config.arch not in ARCHS:
        raise ConfigError(
            f"unknown arch {config.arch!r} (known: {', '.join(ARCHS)}; your own networks need "
            "vaekit.register_network first, e.g. from a module named by vaekit --plugin MODULE)"
        )
    if config.arch in ("conv", "resnet") and kind_of_shape(shape) != "image":
        raise ConfigError(
            f"arch {config.arch!r} needs images (C, H, W); this data is a table of "
            f"{shape[-1]} features per example: use arch mlp (--arch mlp)"
        )
    if config.arch == "mlp" and not config.hidden:
        raise ConfigError("arch 'mlp' needs at least one hidden layer (model.hidden)")
    return ARCHS[config.arch](config, tuple(shape), cond_dim, heads)


__all__ = [
    "ARCHS",
    "ConvDecoder",
    "ConvEncoder",
    "MLPDecoder",
    "MLPEncoder",
    "ResidualBlock",
    "build_networks",
    "register_network",
]
