"""The Gaussian VAE: encoder -> q(z|x) = N(z_mean, exp(z_log_var)) -> z -> decoder -> p(x|z).

Objective (per example, in nats): -ELBO = -log p(x|z) + KL(q(z|x) || N(0, I)), with the
reconstruction term summed over all data dimensions and the KL summed over latent
dimensions; the training loss is the batch mean of recon + beta * KL. Averaging the
reconstruction over pixels instead (as several tutorials do) scales it down by 784 against
the KL and collapses the posterior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..likelihoods import LIKELIHOODS
from ..nn import MLPDecoder, MLPEncoder


@dataclass
class LossTerms:
    """Batch means, in nats per example. `loss` is what the optimiser minimises."""

    loss: torch.Tensor
    recon: torch.Tensor  # -E_q[log p(x|z)]
    kl: torch.Tensor  # KL(q(z|x) || p(z))

    @property
    def neg_elbo(self) -> torch.Tensor:
        return self.recon + self.kl


def gaussian_kl(z_mean: torch.Tensor, z_log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(z_mean, exp(z_log_var)) || N(0, I)) per latent dimension, shape (B, D)."""
    return 0.5 * (z_log_var.exp() + z_mean.square() - 1.0 - z_log_var)


def reparameterize(
    z_mean: torch.Tensor, z_log_var: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """z = mean + sigma * eps with eps ~ N(0, I): differentiable in mean and log-variance."""
    eps = torch.randn(z_mean.shape, generator=generator, device=z_mean.device, dtype=z_mean.dtype)
    return torch.addcmul(z_mean, torch.exp(0.5 * z_log_var), eps)


LOG_2PI = math.log(2 * math.pi)

NETWORKS = {"mlp": (MLPEncoder, MLPDecoder)}


class GaussianVAE(nn.Module):
    """VAE with a diagonal Gaussian posterior, a standard normal prior and a chosen likelihood."""

    def __init__(self, config: ModelConfig, shape: tuple[int, ...]) -> None:
        super().__init__()
        if config.arch not in NETWORKS:
            raise ConfigError(f"unknown arch {config.arch!r} (known: {', '.join(NETWORKS)})")
        if config.likelihood not in LIKELIHOODS:
            known = ", ".join(LIKELIHOODS)
            raise ConfigError(f"unknown likelihood {config.likelihood!r} (known: {known})")
        self.config = config
        self.shape = tuple(shape)
        self.latent_dim = config.latent_dim
        encoder_cls, decoder_cls = NETWORKS[config.arch]
        self.encoder = encoder_cls(self.shape, config.hidden, config.latent_dim)
        self.decoder = decoder_cls(self.shape, config.hidden, config.latent_dim)
        self.likelihood = LIKELIHOODS[config.likelihood]()

    # --- the three pieces -------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, *shape) -> (z_mean, z_log_var), each (B, latent_dim)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) -> likelihood parameters (B, *shape) (logits for Bernoulli)."""
        return self.decoder(z)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """z -> E[x | z], images in data space."""
        return self.likelihood.mean(self.decode(z))

    # --- objective --------------------------------------------------------------------
    def loss(self, x: torch.Tensor, beta: float = 1.0) -> LossTerms:
        """Training objective on a batch: mean over examples of recon + beta * KL."""
        z_mean, z_log_var = self.encode(x)
        z = reparameterize(z_mean, z_log_var)
        recon_logits = self.decode(z).float()  # sums in fp32 even under bf16 autocast
        z_mean, z_log_var = z_mean.float(), z_log_var.float()
        batch = x.shape[0]
        recon = self.likelihood.nll_sum(recon_logits, x) / batch
        kl = gaussian_kl(z_mean, z_log_var).sum() / batch
        return LossTerms(loss=recon + beta * kl, recon=recon, kl=kl)

    @torch.no_grad()
    def elbo_terms(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-example terms (B,) for evaluation: recon, kl, neg_elbo, and kl per dim (B, D)."""
        z_mean, z_log_var = self.encode(x)
        z = reparameterize(z_mean, z_log_var, generator)
        recon = self.likelihood.nll(self.decode(z), x)
        kl_per_dim = gaussian_kl(z_mean, z_log_var)
        kl = kl_per_dim.sum(1)
        return {"recon": recon, "kl": kl, "neg_elbo": recon + kl, "kl_per_dim": kl_per_dim}

    @torch.no_grad()
    def log_importance_weights(
        self, x: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i | x) for k posterior samples per example: shape (k, B).

        logsumexp over dim 0 minus log k is the IWAE bound (Burda et al. 2015); k = 1 gives
        an unbiased single-sample ELBO. Memory grows with k * B: callers chunk over k.
        """
        z_mean, z_log_var = self.encode(x)  # (B, D) each
        eps = torch.randn(
            (k, *z_mean.shape), generator=generator, device=x.device, dtype=z_mean.dtype
        )
        z = z_mean + torch.exp(0.5 * z_log_var) * eps  # (k, B, D)
        log_q = -0.5 * (eps.square() + z_log_var + LOG_2PI).sum(-1)  # (k, B)
        log_prior = -0.5 * (z.square() + LOG_2PI).sum(-1)  # (k, B)
        recon_params = self.decode(z.flatten(0, 1))  # (k * B, *shape)
        targets = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)
        log_px = -self.likelihood.nll(recon_params, targets).view(k, -1)  # (k, B)
        return log_px + log_prior - log_q

    # --- conveniences for users -------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean: images in data space."""
        z_mean, _ = self.encode(x)
        return self.decode_mean(z_mean)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images decoded from the prior N(0, I) (the likelihood's mean)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.decode_mean(z)
