"""Observation models p(x | z): negative log-likelihoods summed over data dimensions.

Each likelihood turns the decoder's output ("parameters", shaped like the data) into
`nll(params, x)` per example (B,), `nll_sum` over a batch, and `mean(params)` = E[x | z].
A likelihood with parameters of its own (the Gaussian's learned variance) is an nn.Module
that the model owns, so its parameters are trained, checkpointed and saved with the model;
a parameter-free one is a plain object.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.core.errors import ConfigError

LOG_2PI = math.log(2 * math.pi)
MIN_LOG_SCALE = math.log(1e-3)  # sigma floor: pixels that never vary (MNIST's borders) would
# otherwise drive sigma to 0 and the log-density to +infinity


class Bernoulli:
    """Bernoulli likelihood on intensities in [0, 1], parameterised by logits.

    For non-binary targets this is the cross-entropy that the VAE literature reports
    for "continuous" MNIST; with binarised data it is an exact log-likelihood.
    """

    name = "bernoulli"

    @staticmethod
    def nll(recon_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per example, shape (B,), summed over all data dimensions."""
        bce = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="none")
        return bce.flatten(1).sum(1)

    @staticmethod
    def nll_sum(recon_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) summed over examples and dimensions (one fused kernel)."""
        return F.binary_cross_entropy_with_logits(recon_logits, x, reduction="sum")

    @staticmethod
    def mean(recon_logits: torch.Tensor) -> torch.Tensor:
        """E[x | z]: pixel intensities in [0, 1]."""
        return torch.sigmoid(recon_logits)


class Gaussian(nn.Module):
    """N(x; mean, sigma^2) per data dimension; the decoder outputs the mean, sigma is learned.

    `per_dim=False`: one sigma shared by all dimensions; True: one sigma per dimension
    (shaped like one example). log sigma starts at 0 and is floored at log(1e-3).
    Values are log-densities: in nats, comparable between Gaussian models on the same data
    but not with the Bernoulli's probabilities.
    """

    def __init__(self, shape: tuple[int, ...], per_dim: bool = False) -> None:
        super().__init__()
        self.name = "gaussian-perdim" if per_dim else "gaussian"
        self.log_scale = nn.Parameter(torch.zeros(tuple(shape) if per_dim else ()))

    def log_sigma(self) -> torch.Tensor:
        """log sigma, floored: a scalar or shaped like one example."""
        return self.log_scale.float().clamp(min=MIN_LOG_SCALE)

    def nll(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per example, shape (B,), summed over all data dimensions."""
        log_sigma = self.log_sigma()
        z = (x - mean.float()) * torch.exp(-log_sigma)
        per_dim = 0.5 * z.square() + log_sigma + 0.5 * LOG_2PI
        return per_dim.flatten(1).sum(1)

    def nll_sum(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) summed over examples and dimensions."""
        return self.nll(mean, x).sum()

    def mean(self, mean: torch.Tensor) -> torch.Tensor:
        """E[x | z]: the decoder's output itself."""
        return mean


LIKELIHOODS: dict[str, Callable[[tuple[int, ...]], Any]] = {
    "bernoulli": lambda shape: Bernoulli(),
    "gaussian": lambda shape: Gaussian(shape, per_dim=False),
    "gaussian-perdim": lambda shape: Gaussian(shape, per_dim=True),
}


def build_likelihood(name: str, shape: tuple[int, ...]) -> Any:
    """The likelihood called `name` for examples of `shape`."""
    if name not in LIKELIHOODS:
        raise ConfigError(f"unknown likelihood {name!r} (known: {', '.join(LIKELIHOODS)})")
    return LIKELIHOODS[name](tuple(shape))
