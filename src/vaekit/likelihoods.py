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
LEVELS = 255  # 8-bit data: values k / 255, k = 0 ... 255
# discretised logistic: scale floor (a probability cannot pass 1, so this only keeps 1 / s
# finite; at 1e-4 a bin holds all but 1e-17 of the mass) and starting scale (about the
# spread of pixel intensities)
MIN_LOGISTIC_LOG_SCALE, START_LOGISTIC_LOG_SCALE = math.log(1e-4), math.log(0.1)


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


class DiscretizedLogistic(nn.Module):
    """p(x | z) of 8-bit values: the mass that a logistic with mean sigmoid(decoder output)
    and a learned scale per data dimension puts on x's bin, [x - 1/510, x + 1/510] (the
    bins of 0 and 1 reach to -inf and +inf), as in PixelCNN++ (Salimans et al. 2017) with
    one logistic. A probability of the discrete data: -log p / (dims ln 2) is the bits/dim
    of the literature. Values x in [0, 1] are read as the 8-bit level round(255 x). The
    decoder outputs the mean's logits, as for the Bernoulli: a new decoder starts at grey
    0.5 in every pixel, not at black 0 (a bias that Adam would take hundreds of steps to
    move).
    """

    name = "discretized-logistic"

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.full(tuple(shape), START_LOGISTIC_LOG_SCALE))

    def nll(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log P(x | z) per example, shape (B,), summed over all data dimensions (nats);
        `mean`: the decoder's output, the logits of the logistic's mean."""
        log_s = self.log_scale.float().clamp(min=MIN_LOGISTIC_LOG_SCALE)
        level = torch.round(x.float() * LEVELS)
        inv_s = torch.exp(-log_s)
        mu = torch.sigmoid(mean.float())
        # standardised bin edges, each computed as the neighbouring bin computes it
        upper, lower = ((level + 0.5) / LEVELS - mu) * inv_s, ((level - 0.5) / LEVELS - mu) * inv_s
        # log(sigmoid(u) - sigmoid(l)) = logsigmoid(u) - softplus(l) + log(1 - exp(l - u)),
        # stable for any u > l (no difference of two numbers near 1)
        inner = F.logsigmoid(upper) - F.softplus(lower) + torch.log(-torch.expm1(lower - upper))
        log_p = torch.where(
            level <= 0,
            F.logsigmoid(upper),
            torch.where(level >= LEVELS, F.logsigmoid(-lower), inner),
        )
        return -log_p.flatten(1).sum(1)

    def nll_sum(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log P(x | z) summed over examples and dimensions."""
        return self.nll(mean, x).sum()

    def mean(self, mean: torch.Tensor) -> torch.Tensor:
        """E[x | z], approximately: the logistic's mean, sigmoid(decoder output), in [0, 1]."""
        return torch.sigmoid(mean)


LIKELIHOODS: dict[str, Callable[[tuple[int, ...]], Any]] = {
    "bernoulli": lambda shape: Bernoulli(),
    "gaussian": lambda shape: Gaussian(shape, per_dim=False),
    "gaussian-perdim": lambda shape: Gaussian(shape, per_dim=True),
    "discretized-logistic": DiscretizedLogistic,
}


def build_likelihood(name: str, shape: tuple[int, ...]) -> Any:
    """The likelihood called `name` for examples of `shape`."""
    if name not in LIKELIHOODS:
        raise ConfigError(f"unknown likelihood {name!r} (known: {', '.join(LIKELIHOODS)})")
    return LIKELIHOODS[name](tuple(shape))
