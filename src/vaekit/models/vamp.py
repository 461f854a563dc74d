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

from vaekit.config.schema import ModelConfig
from vaekit.core.errors import ConfigError
from vaekit.likelihoods import LOG_2PI
from vaekit.models.base import GaussianVAE


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


def pseudo_inputs(components: int, shape: tuple[int, ...]) -> nn.Parameter:
    """K learnable pseudo-inputs of the data's shape: near-blank images to start (the
    paper's initialisation: mean 0.05, std 0.01); used through `in_data_range`."""
    if components < 1:
        raise ConfigError("model.prior_components must be >= 1")
    return nn.Parameter(0.05 + 0.01 * torch.randn(components, *shape))


def in_data_range(inputs: torch.Tensor) -> torch.Tensor:
    """Pseudo-inputs clipped to the data's [0, 1] range (hardtanh, as in the paper)."""
    return F.hardtanh(inputs, 0.0, 1.0)


def vamp_log_prior(z: torch.Tensor, means: torch.Tensor, log_vars: torch.Tensor) -> torch.Tensor:
    """log p(z) = logsumexp_k log N(z; means_k, e^log_vars_k) - log K: (..., D) -> (...)."""
    return torch.logsumexp(mixture_log_density(z, means, log_vars), -1) - math.log(len(means))


def vamp_kl_terms(z, z_mean, z_log_var, means, log_vars, per_dim: bool = True):
    """One-sample estimate of KL(q(z|x) || p(z)) at the sample z, per example (B,), and
    (if per_dim) per dimension (B, D) against each dimension's marginal of the mixture
    (else None); means, log_vars (K, D) are the mixture's components."""
    eps = (z - z_mean) * torch.exp(-0.5 * z_log_var)
    log_q_dims = -0.5 * (eps.square() + z_log_var + LOG_2PI)  # (B, D)
    kl = log_q_dims.sum(1) - vamp_log_prior(z, means, log_vars)
    if not per_dim:
        return kl, None
    # per dimension d: log q(z_d | x) - log (1/K sum_k N(z_d; means_kd, e^log_vars_kd))
    diff = z.unsqueeze(1) - means  # (B, K, D)
    log_p_dims = -0.5 * (diff.square() * torch.exp(-log_vars) + log_vars + LOG_2PI)
    marginal = torch.logsumexp(log_p_dims, 1) - math.log(len(means))  # (B, D)
    return kl, log_q_dims - marginal


def sample_mixture(means: torch.Tensor, log_vars: torch.Tensor, n: int, generator=None):
    """n draws from the mixture: a uniformly chosen component each, then its Gaussian."""
    pick = torch.randint(len(means), (n,), generator=generator, device=means.device)
    eps = torch.randn(n, means.shape[1], generator=generator, device=means.device)
    return means[pick] + torch.exp(0.5 * log_vars[pick]) * eps


class VampPriorVAE(GaussianVAE):
    """The Gaussian VAE of base.py with p(z) = 1/K sum_k q(z | u_k)."""

    def __init__(self, config: ModelConfig, shape: tuple[int, ...]) -> None:
        if config.arch != "mlp":  # a conv encoder would see K extra images per step
            raise ConfigError("model vamp has fully connected networks only (arch mlp)")
        super().__init__(config, shape)
        self.pseudo_inputs = pseudo_inputs(config.prior_components, shape)

    def prior_params(self, dtype: torch.dtype = torch.float32):
        """(means, log_vars), each (K, latent_dim): the encoder's posterior of each pseudo-input."""
        means, log_vars = self.encode(in_data_range(self.pseudo_inputs))
        return means.to(dtype), log_vars.to(dtype)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) of the mixture: (..., D) -> (...)."""
        return vamp_log_prior(z, *self.prior_params(z.dtype))

    def kl_terms(self, z, z_mean, z_log_var, per_dim: bool = True):
        """One-sample KL estimate per example (B,) and, if per_dim, per dimension (B, D)."""
        return vamp_kl_terms(z, z_mean, z_log_var, *self.prior_params(z.dtype), per_dim)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from the mixture prior."""
        return sample_mixture(*self.prior_params(), n, generator)
