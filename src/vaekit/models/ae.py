"""Deterministic autoencoder: the VAE's networks without the noise and without the KL.

Trained on the reconstruction term alone (the likelihood's negative log, e.g. the Bernoulli
cross-entropy summed over pixels), with a one-head encoder: x -> z -> x. It has no prior,
so no ELBO; to draw samples anyway, `after_training` fits a full-covariance Gaussian to the
codes of the training set and keeps its mean and Cholesky factor as buffers (saved with the
weights), and `sample` decodes draws from it. This is the baseline the tutorials describe:
sharp reconstructions, but codes that fill an irregular region, so Gaussian draws often land
where the decoder has seen nothing.
"""

from __future__ import annotations

import torch

from vaekit.config.schema import ModelConfig
from vaekit.likelihoods import build_likelihood
from vaekit.models.base import LossTerms, Model
from vaekit.models.batched import encode_all
from vaekit.nn import build_networks

JITTER = 1e-6  # added to the code covariance's diagonal before the Cholesky factorisation


def fit_gaussian(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and lower Cholesky factor (D, D) of the Gaussian fitted to codes (N, D)."""
    codes = codes.double()
    mean = codes.mean(0)
    cov = torch.cov(codes.T).reshape(codes.shape[1], codes.shape[1])
    cov += JITTER * (1 + cov.diagonal().mean()) * torch.eye(len(mean), dtype=cov.dtype)
    return mean, torch.linalg.cholesky(cov)


class Autoencoder(Model):
    """x -> code z (latent_dim) -> likelihood parameters; samples from a Gaussian over codes."""

    def __init__(self, config: ModelConfig, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.config = config
        self.shape = tuple(shape)
        self.latent_dim = config.latent_dim
        self.encoder, self.decoder = build_networks(config, self.shape, heads=1)
        self.likelihood = build_likelihood(config.likelihood, self.shape)
        self.register_buffer("code_mean", torch.zeros(self.latent_dim))
        self.register_buffer("code_scale", torch.eye(self.latent_dim))  # Cholesky factor

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """x -> (code, None): a point, not a distribution (no log-variance)."""
        return self.encoder(x)[0], None

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """code -> likelihood parameters (B, *shape)."""
        return self.decoder(z)

    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """code -> E[x | z], images in data space."""
        return self.likelihood.mean(self.decode(z))

    def loss(
        self, x: torch.Tensor, beta: float = 1.0, *, y: torch.Tensor | None = None
    ) -> LossTerms:
        """Mean over the batch of -log p(x | decoder(encoder(x))); `beta` has nothing to weigh."""
        params = self.decode(self.encode(x)[0]).float()
        recon = self.likelihood.nll_sum(params, x) / x.shape[0]
        return LossTerms(loss=recon, recon=recon, kl=torch.zeros_like(recon))

    @torch.no_grad()
    def after_training(self, x: torch.Tensor, batch_size: int = 1000) -> None:
        """Fit the sampling Gaussian to the codes of the training images x."""
        was_training = self.training
        self.eval()
        codes = encode_all(self, x, batch_size=batch_size)[0].float()
        mean, scale = fit_gaussian(codes)
        self.code_mean.copy_(mean)
        self.code_scale.copy_(scale)
        self.train(was_training)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the code of x: images in data space."""
        return self.decode_mean(self.encode(x)[0])

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes drawn from the Gaussian fitted to the training codes: (n, latent_dim)."""
        eps = torch.randn(n, self.latent_dim, generator=generator, device=self.code_mean.device)
        return self.code_mean + eps @ self.code_scale.T

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n images decoded from draws of the Gaussian fitted to the training codes."""
        return self.decode_mean(self.sample_prior(n, generator))
