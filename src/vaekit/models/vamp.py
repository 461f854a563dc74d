"""VAE with a VampPrior (Tomczak & Welling 2018): the prior is the mixture of the
posteriors of K learned pseudo-inputs u_k, p(z) = 1/K sum_k q(z | u_k), instead of N(0, I).

The prior then follows where the encoder puts the data, so less of the KL is spent pulling
codes towards the origin. The KL has no closed form: training and the ELBO use the
one-sample estimate log q(z|x) - log p(z) at the reparameterised sample (unbiased, like the
reconstruction term), and the IWAE bound uses log p(z) as it is. The per-dimension KL
reported for plots and `vaekit evaluate` is against each dimension's marginal of the
mixture, so it does not sum to the total. Pseudo-inputs live in the data's [0, 1] range
(hardtanh, as in the paper); `model.prior_components` sets K (500 in the paper; each
training step encodes all K, so K costs like K extra examples per batch).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig
from ..errors import ConfigError
from .base import LOG_2PI, GaussianVAE


def mixture_log_density(
    z: torch.Tensor, means: torch.Tensor, log_vars: torch.Tensor
) -> torch.Tensor:
    """log N(z; means_k, e^log_vars_k) of every sample under every component: z (..., D),
    means and log_vars (K, D) -> (..., K). The square is expanded into matrix products, so
    memory is (..., K), not (..., K, D)."""
    precision = torch.exp(-log_vars)  # (K, D)
    flat = z.reshape(-1, z.shape[-1])  # (N, D)
    quadratic = (
        flat.square() @ precision.T  # sum_d z^2 / var
        - 2 * flat @ (means * precision).T  # - 2 sum_d z mean / var
        + (means.square() * precision + log_vars).sum(1)  # sum_d mean^2 / var + log var
    )  # (N, K)
    log_density = -0.5 * (quadratic + z.shape[-1] * LOG_2PI)
    return log_density.view(*z.shape[:-1], means.shape[0])


class VampPriorVAE(GaussianVAE):
    """The Gaussian VAE of base.py with p(z) = 1/K sum_k q(z | u_k)."""

    def __init__(self, config: ModelConfig, shape: tuple[int, ...]) -> None:
        if config.prior_components < 1:
            raise ConfigError("model.prior_components must be >= 1")
        if config.arch != "mlp":  # a conv encoder would see K extra images per step
            raise ConfigError("model vamp has fully connected networks only (arch mlp)")
        super().__init__(config, shape)
        # near-blank images to start (the paper's initialisation: mean 0.05, std 0.01)
        self.pseudo_inputs = nn.Parameter(
            0.05 + 0.01 * torch.randn(config.prior_components, *shape)
        )

    def prior_params(self, dtype: torch.dtype = torch.float32):
        """(means, log_vars), each (K, latent_dim): the encoder's posterior of each pseudo-input."""
        means, log_vars = self.encode(F.hardtanh(self.pseudo_inputs, 0.0, 1.0))
        return means.to(dtype), log_vars.to(dtype)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) = logsumexp_k log q(z | u_k) - log K: (..., D) -> (...)."""
        means, log_vars = self.prior_params(z.dtype)
        log_density = mixture_log_density(z, means, log_vars)
        return torch.logsumexp(log_density, -1) - math.log(len(means))

    def kl_terms(self, z, z_mean, z_log_var, per_dim: bool = True):
        """One-sample KL estimate per example (B,), and (if per_dim) per dimension (B, D)
        against each dimension's marginal of the mixture (else None)."""
        means, log_vars = self.prior_params(z.dtype)
        eps = (z - z_mean) * torch.exp(-0.5 * z_log_var)
        log_q_dims = -0.5 * (eps.square() + z_log_var + LOG_2PI)  # (B, D)
        log_p = torch.logsumexp(mixture_log_density(z, means, log_vars), -1)
        kl = log_q_dims.sum(1) - (log_p - math.log(len(means)))
        if not per_dim:
            return kl, None
        # per dimension d: log q(z_d | x) - log (1/K sum_k N(z_d; means_kd, e^log_vars_kd))
        diff = z.unsqueeze(1) - means  # (B, K, D)
        log_p_dims = -0.5 * (diff.square() * torch.exp(-log_vars) + log_vars + LOG_2PI)
        marginal = torch.logsumexp(log_p_dims, 1) - math.log(len(means))  # (B, D)
        return kl, log_q_dims - marginal

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from the mixture: a uniformly chosen component each, then its Gaussian."""
        means, log_vars = self.prior_params()
        device = means.device
        pick = torch.randint(len(means), (n,), generator=generator, device=device)
        eps = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return means[pick] + torch.exp(0.5 * log_vars[pick]) * eps
