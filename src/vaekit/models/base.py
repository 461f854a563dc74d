"""The Gaussian VAE: encoder -> q(z|x) = N(z_mean, exp(z_log_var)) -> z -> decoder -> p(x|z).

Objective (per example, in nats): -ELBO = -log p(x|z) + KL(q(z|x) || N(0, I)), with the
reconstruction term summed over all data dimensions and the KL summed over latent
dimensions; the training loss is the batch mean of recon + beta * KL. Averaging the
reconstruction over pixels instead (as several tutorials do) scales it down by 784 against
the KL and collapses the posterior.

Regularisers and objectives on top: beta weighs the KL (beta-VAE); free bits floor each
latent dimension's batch-mean KL in the loss (Kingma et al. 2016), so dimensions under the
floor feel no pull towards the prior; `iw_k` > 1 trains on the importance-weighted bound
(IWAE, Burda et al. 2015) instead of the ELBO.

Every method takes the class labels as an optional keyword `y`: unconditional models ignore
them, conditional ones (`cvae.py`) require them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vaekit.config.schema import ModelConfig
from vaekit.core.noise import randn_batch
from vaekit.likelihoods import LOG_2PI, build_likelihood
from vaekit.nn import build_networks


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
    eps = randn_batch(z_mean.shape, 0, generator, z_mean.device, z_mean.dtype)
    return torch.addcmul(z_mean, torch.exp(0.5 * z_log_var), eps)


def free_bits_kl(kl_per_dim: torch.Tensor, floor: float) -> torch.Tensor:
    """sum_d max(floor, mean over the batch of KL_d): the KL term under free bits."""
    return kl_per_dim.mean(0).clamp(min=floor).sum()


def label_args(model: nn.Module, y: torch.Tensor | None, device=None) -> dict:
    """{"y": labels} for a model that needs them (conditional), else {}."""
    if not model.needs_labels:
        return {}
    return {"y": None if y is None else y.to(device)}


class Model(nn.Module):
    """What every vaekit model declares about itself, with the defaults, in one place: the
    trainer, evaluation and the applications read these attributes instead of guessing."""

    has_elbo = False  # elbo_terms / log_importance_weights exist (VAEs; AE and PCA: no)
    needs_labels = False  # every method needs the class labels `y` (conditional models)
    trains_on_labels = False  # the training loss takes (partly hidden) labels (M2)
    gradient_trained = True  # False: fitted in one step by `fit(x)` (PCA)
    one_gaussian_latent = False  # z ~ q(z|x) = N(z_mean, exp(z_log_var)) is the whole posterior
    objective_options = False  # free bits and IWAE training apply to its loss
    can_classify = False  # `classify(x)` gives class probabilities q(y|x) (M2, m1m2)
    has_analogies = False  # `analogies(x)`: style from an image, content from each label
    data_kinds = ("image", "table")  # the kinds of data it trains on (seqvae: "sequence")

    @property
    def decoded_dim(self) -> int:
        """How many leading code dimensions the decoder reads (all but for a hierarchical VAE)."""
        return self.latent_dim

    @staticmethod
    def configure(config: Any, data: Any) -> None:
        """Record in the ModelConfig what the model learns from the data before it is built
        (e.g. the number of classes)."""

    @staticmethod
    def prepare_data(config: Any, data: Any) -> Any:
        """The model's own view of the training data (M2 hides labels)."""
        return data

    def initialise(self) -> None:
        """Set weights before training starts (m1m2 copies its feature VAE's weights)."""

    def after_training(self, x: torch.Tensor) -> None:
        """Fit what training leaves (the autoencoder's sampling Gaussian)."""


class GaussianVAE(Model):
    """VAE with a diagonal Gaussian posterior, a standard normal prior and a chosen likelihood."""

    has_elbo = True
    one_gaussian_latent = True
    objective_options = True

    def __init__(self, config: ModelConfig, shape: tuple[int, ...], cond_dim: int = 0) -> None:
        super().__init__()
        self.config = config
        self.shape = tuple(shape)
        self.latent_dim = config.latent_dim
        self.encoder, self.decoder = build_networks(config, self.shape, cond_dim)
        self.likelihood = build_likelihood(config.likelihood, self.shape)

    # --- the three pieces -------------------------------------------------------------
    def encode(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, *shape) -> (z_mean, z_log_var), each (B, latent_dim)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, latent_dim) -> likelihood parameters (B, *shape) (logits for Bernoulli)."""
        return self.decoder(z)

    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z -> E[x | z], images in data space."""
        return self.likelihood.mean(self._decode(z, y))

    def _encode(self, x: torch.Tensor, y: torch.Tensor | None):
        """encode, passing labels only when there are some (a replaced encode may not take them)."""
        return self.encode(x) if y is None else self.encode(x, y)

    def _decode(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.decode(z) if y is None else self.decode(z, y)

    # --- objective --------------------------------------------------------------------
    def loss(
        self,
        x: torch.Tensor,
        beta: float = 1.0,
        *,
        free_bits: float = 0.0,
        iw_k: int = 1,
        y: torch.Tensor | None = None,
    ) -> LossTerms:
        """Training objective on a batch: mean over examples of recon + beta * KL (the KL
        with per-dimension floor `free_bits` nats), or the IWAE bound for `iw_k` > 1."""
        if iw_k > 1:
            return self.iwae_loss(x, beta, iw_k, y)
        z_mean, z_log_var = self._encode(x, y)
        z = reparameterize(z_mean, z_log_var)
        recon_logits = self._decode(z, y).float()  # sums in fp32 even under bf16 autocast
        z_mean, z_log_var = z_mean.float(), z_log_var.float()
        batch = x.shape[0]
        recon = self.likelihood.nll_sum(recon_logits, x) / batch
        kl_each, kl_per_dim = self.kl_terms(z.float(), z_mean, z_log_var, free_bits > 0)
        kl = kl_each.sum() / batch
        penalty = free_bits_kl(kl_per_dim, free_bits) if free_bits > 0 else kl
        return LossTerms(loss=recon + beta * penalty, recon=recon, kl=kl)

    def iwae_loss(
        self, x: torch.Tensor, beta: float, k: int, y: torch.Tensor | None = None
    ) -> LossTerms:
        """-(log mean_i w_i) averaged over the batch, with log w = log p(x|z) + beta (log p(z)
        - log q(z|x)) for k posterior samples (beta = 1: the IWAE bound). `recon` and `kl`
        report the ELBO's terms (sample mean and closed form)."""
        log_px, log_ratio, z_mean, z_log_var = self.importance_terms(x, k, None, y)
        bound = torch.logsumexp(log_px + beta * log_ratio, dim=0) - math.log(k)
        kl = gaussian_kl(z_mean, z_log_var).sum(1).mean()
        return LossTerms(loss=-bound.mean(), recon=-log_px.mean(), kl=kl)

    @torch.no_grad()
    def elbo_terms(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        y: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-example terms (B,) for evaluation: recon, kl, neg_elbo, and kl per dim (B, D)."""
        z_mean, z_log_var = self._encode(x, y)
        z = reparameterize(z_mean, z_log_var, generator)
        recon = self.likelihood.nll(self._decode(z, y), x)
        kl, kl_per_dim = self.kl_terms(z, z_mean, z_log_var)
        return {"recon": recon, "kl": kl, "neg_elbo": recon + kl, "kl_per_dim": kl_per_dim}

    # --- the prior (a subclass with another prior replaces these three) -----------------
    def kl_terms(
        self, z: torch.Tensor, z_mean: torch.Tensor, z_log_var: torch.Tensor, per_dim: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """KL(q(z|x) || p(z)) per example (B,) and per latent dimension (B, D) for the
        sample z (B, D): in closed form for N(0, I), so neither z nor per_dim (a subclass
        may skip the per-dimension terms when per_dim is False) is used here."""
        kl_per_dim = gaussian_kl(z_mean, z_log_var)
        return kl_per_dim.sum(1), kl_per_dim

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) summed over the last dimension: (..., D) -> (...)."""
        return -0.5 * (z.square() + LOG_2PI).sum(-1)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z): (n, latent_dim)."""
        device = next(self.parameters()).device
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def importance_terms(
        self,
        x: torch.Tensor,
        k: int,
        generator: torch.Generator | None = None,
        y: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log p(x|z_i), log p(z_i) - log q(z_i|x)), each (k, B), for k posterior samples
        per example, and the posterior's (z_mean, z_log_var) in fp32. Differentiable."""
        z_mean, z_log_var = (t.float() for t in self._encode(x, y))  # (B, D) each
        eps = randn_batch((k, *z_mean.shape), 1, generator, x.device, z_mean.dtype)  # (k, B, D)
        z = z_mean + torch.exp(0.5 * z_log_var) * eps  # (k, B, D)
        log_q = -0.5 * (eps.square() + z_log_var + LOG_2PI).sum(-1)  # (k, B)
        log_prior = self.log_prior(z)  # (k, B)
        labels = None if y is None else y.repeat(k)  # row i * B + b of z.flatten is example b
        recon_params = self._decode(z.flatten(0, 1), labels).float()  # (k * B, *shape)
        targets = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)
        log_px = -self.likelihood.nll(recon_params, targets).view(k, -1)  # (k, B)
        return log_px, log_prior - log_q, z_mean, z_log_var

    @torch.no_grad()
    def log_importance_weights(
        self,
        x: torch.Tensor,
        k: int,
        generator: torch.Generator | None = None,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i | x) for k posterior samples per example: shape (k, B).

        logsumexp over dim 0 minus log k is the IWAE bound (Burda et al. 2015); k = 1 gives
        an unbiased single-sample ELBO. Memory grows with k * B: callers chunk over k.
        """
        log_px, log_ratio, _, _ = self.importance_terms(x, k, generator, y)
        return log_px + log_ratio

    # --- conveniences for users -------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the posterior mean: images in data space."""
        z_mean, _ = self._encode(x, y)
        return self.decode_mean(z_mean) if y is None else self.decode_mean(z_mean, y)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n images decoded from the prior (the likelihood's mean)."""
        z = self.sample_prior(n, generator)
        return self.decode_mean(z) if y is None else self.decode_mean(z, y)
