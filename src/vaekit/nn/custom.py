"""Your own networks: `register_network(name, encoder_factory, decoder_factory)` lets
`model.arch = name` (`--arch name`) build them, for every model that builds its networks
with `build_networks` (vae, cvae, ae, vamp, m2), with nothing in vaekit edited.

    encoder_factory(shape, latent_dim) -> nn.Module: x (B, *shape) -> features (B, F), any F
    decoder_factory(shape, latent_dim) -> nn.Module: z (B, latent_dim) -> (B, *shape)

vaekit adds the encoder's output layer itself (one Linear from the features to z_mean and
z_log_var, or to the code of an autoencoder; a conditional model's one-hot label joins the
features there), so an encoder is only a feature extractor. The decoder returns the
likelihood's parameters: logits for bernoulli, means for the Gaussians; a conditional model
passes latent_dim = code size + number of classes. Both are checked on a dummy batch when
the model is built, so a shape mistake is one line naming the network.

Saved runs hold the weights only: the process that loads one must have registered the same
name first (`vaekit --plugin MODULE ...` imports MODULE, which registers, before a command).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vaekit.core.errors import ConfigError
from vaekit.nn.mlp import with_condition

Factory = Callable[[tuple[int, ...], int], nn.Module]


@torch.no_grad()
def dry_run(module: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """`module(batch)` in eval mode (no batch-norm statistics change), mode restored."""
    was_training = module.training
    module.eval()
    try:
        return module(batch)
    finally:
        module.train(was_training)


class CustomEncoder(nn.Module):
    """A user's feature extractor followed by vaekit's output layer of `heads` x latent_dim."""

    def __init__(
        self,
        name: str,
        body: nn.Module,
        shape: tuple[int, ...],
        latent_dim: int,
        cond_dim: int,
        heads: int,
    ) -> None:
        super().__init__()
        self.body, self.heads = body, heads
        try:
            features = dry_run(body, torch.zeros(2, *shape))
        except Exception as err:  # the user's code: any error is theirs to see, in one line
            raise ConfigError(
                f"network {name!r}: the encoder fails on examples of {shape}: {err}"
            ) from None
        if not isinstance(features, torch.Tensor) or features.ndim < 2 or len(features) != 2:
            raise ConfigError(
                f"network {name!r}: the encoder must return features (B, F) for x (B, *shape)"
            )
        self.head = nn.Linear(features[0].numel() + cond_dim, heads * latent_dim)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        h = self.body(x).flatten(1)
        return self.head(with_condition(h, cond)).chunk(self.heads, dim=1)


class CustomDecoder(nn.Module):
    """A user's decoder, checked to map (B, latent_dim) codes to (B, *shape)."""

    def __init__(self, name: str, body: nn.Module, shape: tuple[int, ...], latent_dim: int) -> None:
        super().__init__()
        self.body = body
        try:
            out = dry_run(body, torch.zeros(2, latent_dim))
        except Exception as err:
            raise ConfigError(
                f"network {name!r}: the decoder fails on codes of size {latent_dim}: {err}"
            ) from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, *shape):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"network {name!r}: the decoder returns {got} for 2 codes; expected {(2, *shape)}"
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


def custom_networks(name: str, encoder_factory: Factory, decoder_factory: Factory):
    """The ARCHS entry of a registered pair: (config, shape, cond_dim, heads) -> networks."""

    def build(config, shape: tuple[int, ...], cond_dim: int, heads: int):
        latent = config.latent_dim
        encoder = CustomEncoder(
            name, encoder_factory(shape, latent), shape, latent, cond_dim, heads
        )
        decoder = CustomDecoder(
            name, decoder_factory(shape, latent + cond_dim), shape, latent + cond_dim
        )
        return encoder, decoder

    return build
