"""Hierarchical VAE with L stochastic layers and top-down inference (Sønderby et al. 2016;
Kingma et al. 2016): more latent layers, a tighter bound, the same ELBO and IWAE machinery.

Generative model: z_L ~ N(0, I), z_l ~ p(z_l | z_{l+1}) = N(mu, sigma^2) from an MLP,
x ~ p(x | z_1). Inference shares a bottom-up pass d_1 = f_1(x), d_{l+1} = f_{l+1}(d_l) and
samples top-down: q(z_L | x) from d_L, then q(z_l | x, z_{l+1}) from [d_l, t_l], where t_l
is the top-down feature of z_{l+1} that also parameterises the prior p(z_l | z_{l+1}).
Every KL term is then in closed form given the sample above it:

    -ELBO = -log p(x | z_1) + KL(q(z_L|x) || N(0, I))
            + sum_{l<L} KL(q(z_l | x, z_{l+1}) || p(z_l | z_{l+1})),

and the importance weight of a sample (z_1..z_L) is log p(x, z) - log q(z | x).

With `model.prior = "vamp"` the top layer's prior is a VampPrior (vamp.py): the mixture of
q(z_L | u_k) over K learned pseudo-inputs u_k, whose KL term is then the one-sample
estimate log q(z_L | x) - log p(z_L) (the lower layers keep their closed forms).

`model.latent_layers` lists the layer sizes from the bottom (z_1, next to x) up;
`model.hidden` sizes the networks between x and z_1, `model.upper_hidden` those between
latent layers. `encode` returns the concatenated top-down posterior means (each layer's
mean given the means above it), so plots, probes and `latent_dim` see all layers; `decode`
reads z_1 (the first `latent_layers[0]` entries).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from vaekit.config.schema import ModelConfig
from vaekit.core.errors import ConfigError
from vaekit.core.noise import randn_batch
from vaekit.likelihoods import LOG_2PI, build_likelihood
from vaekit.models.base import LossTerms, Model, gaussian_kl
from vaekit.models.vamp import (
    in_data_range,
    pseudo_inputs,
    sample_mixture,
    vamp_kl_terms,
    vamp_log_prior,
)
from vaekit.nn.mlp import MLPDecoder, mlp


def gaussian_kl_between(
    q_mean: torch.Tensor, q_log_var: torch.Tensor, p_mean: torch.Tensor, p_log_var: torch.Tensor
) -> torch.Tensor:
    """KL(N(q_mean, e^q_log_var) || N(p_mean, e^p_log_var)) per dimension."""
    return 0.5 * (
        p_log_var - q_log_var + (q_log_var.exp() + (q_mean - p_mean).square()) / p_log_var.exp() - 1
    )


def gaussian_log_density(
    z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor
) -> torch.Tensor:
    """log N(z; mean, e^log_var) summed over the last dimension."""
    return -0.5 * ((z - mean).square() / log_var.exp() + log_var + LOG_2PI).sum(-1)


class GaussianHead(nn.Module):
    """Features -> (mean, log-variance) of a diagonal Gaussian over `size` dimensions."""

    def __init__(self, n_in: int, size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, 2 * size)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.linear(h).chunk(2, dim=-1)
        return mean, log_var


class HierarchicalVAE(Model):
    """L stochastic layers, top-down inference; Bernoulli or Gaussian p(x | z_1)."""

    has_elbo = True
    objective_options = True

    def __init__(self, config: ModelConfig, shape: tuple[int, ...]) -> None:
        super().__init__()
        sizes = config.latent_layers
        if not sizes or len(sizes) < 2:
            raise ConfigError("model hvae needs model.latent_layers with two or more sizes")
        if config.arch != "mlp":
            raise ConfigError("model hvae has fully connected networks only (arch mlp)")
        self.config, self.shape = config, tuple(shape)
        self.sizes = list(sizes)
        self.latent_dim = sum(sizes)
        self.z1_dim = sizes[0]  # decode reads z_1, the first entries of a code
        hidden, upper = config.hidden, config.upper_hidden
        # bottom-up: d_1 = f_1(x); d_{l+1} = f_{l+1}(d_l)
        self.up = nn.ModuleList([mlp([math.prod(shape), *hidden])])
        self.up.extend(
            mlp([hidden[-1] if i == 1 else upper[-1], *upper]) for i in range(1, len(sizes))
        )
        width = [hidden[-1]] + [upper[-1]] * (len(sizes) - 1)  # width of d_l
        # top-down: t_l = g_l(z_{l+1}) gives p(z_l | z_{l+1}) and, with d_l, q(z_l | x, z_{l+1})
        self.down = nn.ModuleList(mlp([sizes[i + 1], *upper]) for i in range(len(sizes) - 1))
        self.prior_heads = nn.ModuleList(
            GaussianHead(upper[-1], sizes[i]) for i in range(len(sizes) - 1)
        )
        self.posterior_heads = nn.ModuleList(
            GaussianHead(width[i] + (upper[-1] if i < len(sizes) - 1 else 0), sizes[i])
            for i in range(len(sizes))
        )
        self.decoder = MLPDecoder(self.shape, hidden, sizes[0])
        self.likelihood = build_likelihood(config.likelihood, self.shape)
        self.vamp = config.prior == "vamp"
        if self.vamp:
            self.pseudo_inputs = pseudo_inputs(config.prior_components, self.shape)

    @property
    def decoded_dim(self) -> int:
        return self.z1_dim

    @staticmethod
    def configure(config: ModelConfig, data) -> None:
        """Record the total latent size (all layers) as model.latent_dim."""
        if config.latent_layers:
            config.latent_dim = sum(config.latent_layers)

    # --- inference and generation -------------------------------------------------------
    def bottom_up(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[d_1, ..., d_L], each (B, width)."""
        features, h = [], x.flatten(1)
        for layer in self.up:
            h = layer(h)
            features.append(h)
        return features

    def top_down(self, features: list[torch.Tensor], noise=None, use_mean: bool = False):
        """Sample z_L..z_1 from q given the bottom-up features (expanded to the noise's
        leading sample dimension, if any). Returns per layer, bottom first: z, posterior
        (mean, log_var), prior (mean, log_var) (None for the top) and the noise used."""
        n_layers = len(self.sizes)
        layers: list[dict] = [{} for _ in range(n_layers)]
        above = None
        for i in reversed(range(n_layers)):
            d = features[i]
            if above is None:
                q_mean, q_log_var = self.posterior_heads[i](d)
                prior = None
            else:
                t = self.down[i](above)
                prior = self.prior_heads[i](t)
                d = d.expand(*t.shape[:-1], d.shape[-1])
                q_mean, q_log_var = self.posterior_heads[i](torch.cat([d, t], dim=-1))
            if use_mean:
                eps = torch.zeros_like(q_mean)
            else:
                eps = noise[i] if noise is not None else torch.randn_like(q_mean)
            z = q_mean + torch.exp(0.5 * q_log_var) * eps
            layers[i] = {"z": z, "q": (q_mean, q_log_var), "p": prior, "eps": eps}
            above = z
        return layers

    def draw_noise(self, leading: tuple[int, ...], batch_dim: int, generator, device, dtype):
        """Standard normal noise for every layer, shaped (*leading, size)."""
        return [
            randn_batch((*leading, size), batch_dim, generator, device, dtype)
            for size in self.sizes
        ]

    def top_prior_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """VampPrior only: the K components (means, log_vars), each (K, top size), in fp32:
        q(z_L | u_k) of the pseudo-inputs."""
        top_features = self.bottom_up(in_data_range(self.pseudo_inputs))[-1]
        means, log_vars = self.posterior_heads[-1](top_features)
        return means.float(), log_vars.float()

    def kl_terms(self, layers: list[dict], per_dim: bool = True):
        """KL of all layers given the samples above, in fp32: per example (B,) and, if
        per_dim, per dimension (B, latent_dim), bottom layer first (else None)."""
        totals, dims = [], []
        for layer in layers:
            q_mean, q_log_var = (t.float() for t in layer["q"])
            if layer["p"] is None and self.vamp:
                z = layer["z"].float()
                total, per = vamp_kl_terms(z, q_mean, q_log_var, *self.top_prior_params(), per_dim)
            else:
                if layer["p"] is None:
                    per = gaussian_kl(q_mean, q_log_var)
                else:
                    p_mean, p_log_var = (t.float() for t in layer["p"])
                    per = gaussian_kl_between(q_mean, q_log_var, p_mean, p_log_var)
                total = per.sum(1)
            totals.append(total)
            dims.append(per)
        return sum(totals), torch.cat(dims, dim=1) if per_dim else None

    def log_ratio(self, layers: list[dict]) -> torch.Tensor:
        """log p(z) - log q(z | x) of the samples, summed over layers, in fp32."""
        total = 0.0
        for layer in layers:
            z = layer["z"].float()
            q_mean, q_log_var = (t.float() for t in layer["q"])
            eps = layer["eps"].float()
            log_q = -0.5 * (eps.square() + q_log_var + LOG_2PI).sum(-1)
            if layer["p"] is None and self.vamp:
                log_p = vamp_log_prior(z, *self.top_prior_params())
            elif layer["p"] is None:
                log_p = -0.5 * (z.square() + LOG_2PI).sum(-1)
            else:
                p_mean, p_log_var = (t.float() for t in layer["p"])
                log_p = gaussian_log_density(z, p_mean, p_log_var)
            total = total + log_p - log_q
        return total

    # --- the VAE interface ----------------------------------------------------------------
    def encode(self, x: torch.Tensor, y=None) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (means, log-variances) of all layers, bottom first, each (B, latent_dim):
        top-down with each layer's mean in place of its sample."""
        layers = self.top_down(self.bottom_up(x), use_mean=True)
        return (
            torch.cat([layer["q"][0] for layer in layers], 1),
            torch.cat([layer["q"][1] for layer in layers], 1),
        )

    def decode(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """z (its first latent_layers[0] entries: z_1, or z_1 alone) -> parameters of p(x|z_1)."""
        return self.decoder(z[:, : self.sizes[0]])

    def decode_mean(self, z: torch.Tensor, y=None) -> torch.Tensor:
        return self.likelihood.mean(self.decode(z))

    def loss(
        self, x: torch.Tensor, beta: float = 1.0, *, free_bits: float = 0.0, iw_k: int = 1, y=None
    ):
        """Batch mean of -log p(x|z_1) + beta * (sum of the layers' KLs), or the IWAE bound."""
        if iw_k > 1:
            return self.iwae_loss(x, beta, iw_k)
        features = self.bottom_up(x)
        layers = self.top_down(
            features, self.draw_noise((len(x),), 0, None, x.device, features[0].dtype)
        )
        recon = self.likelihood.nll_sum(self.decode(layers[0]["z"]).float(), x) / len(x)
        kl_each, kl_dims = self.kl_terms(layers, per_dim=free_bits > 0)  # (B,), (B, latent_dim)
        kl = kl_each.sum() / len(x)
        penalty = kl_dims.mean(0).clamp(min=free_bits).sum() if free_bits > 0 else kl
        return LossTerms(loss=recon + beta * penalty, recon=recon, kl=kl)

    def iwae_loss(self, x: torch.Tensor, beta: float, k: int) -> LossTerms:
        log_px, log_ratio = self.importance_terms(x, k)
        bound = torch.logsumexp(log_px + beta * log_ratio, dim=0) - math.log(k)
        return LossTerms(loss=-bound.mean(), recon=-log_px.mean(), kl=-log_ratio.mean())

    def importance_terms(self, x: torch.Tensor, k: int, generator=None):
        """(log p(x|z_1), log p(z) - log q(z|x)), each (k, B), for k samples per example."""
        features = [d.unsqueeze(0) for d in self.bottom_up(x)]  # (1, B, width)
        noise = self.draw_noise((k, len(x)), 1, generator, x.device, features[0].dtype)
        layers = self.top_down(features, noise)
        recon_params = self.decode(layers[0]["z"].flatten(0, 1)).float()  # (k * B, *shape)
        targets = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)
        log_px = -self.likelihood.nll(recon_params, targets).view(k, len(x))
        return log_px, self.log_ratio(layers)

    @torch.no_grad()
    def log_importance_weights(
        self, x: torch.Tensor, k: int, generator=None, y=None
    ) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i | x) for k samples per example: (k, B)."""
        log_px, log_ratio = self.importance_terms(x, k, generator)
        return log_px + log_ratio

    @torch.no_grad()
    def elbo_terms(self, x: torch.Tensor, generator=None, y=None) -> dict[str, torch.Tensor]:
        """Per-example recon, kl, neg_elbo (B,) and kl_per_dim (B, latent_dim), one sample."""
        noise = self.draw_noise((len(x),), 0, generator, x.device, x.dtype)
        layers = self.top_down(self.bottom_up(x), noise)
        recon = self.likelihood.nll(self.decode(layers[0]["z"]).float(), x)
        kl, kl_per_dim = self.kl_terms(layers)
        return {"recon": recon, "kl": kl, "neg_elbo": recon + kl, "kl_per_dim": kl_per_dim}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        return self.decode_mean(self.encode(x)[0])

    @torch.no_grad()
    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of every layer from the prior, z_L ~ p(z_L) then down the layers:
        (n, latent_dim), bottom layer first (as `encode` orders them)."""
        device = next(self.parameters()).device
        if self.vamp:
            z = sample_mixture(*self.top_prior_params(), n, generator)
        else:
            z = torch.randn(n, self.sizes[-1], generator=generator, device=device)
        return self.descend(
            z, lambda i, shape: torch.randn(shape, generator=generator, device=device)
        )

    def descend(
        self, z_top: torch.Tensor, noise: Callable[[int, torch.Size], torch.Tensor]
    ) -> torch.Tensor:
        """Every layer from the top one down, z_l = mean_l(z_{l+1}) + sigma_l(z_{l+1}) *
        noise(l, shape) (standard normal noise for layer l): (n, latent_dim), bottom first.
        `noise` draws (sampling) or hands over given noise (an exported prior graph)."""
        z, layers = z_top, [z_top]
        for i in reversed(range(len(self.sizes) - 1)):
            p_mean, p_log_var = self.prior_heads[i](self.down[i](z))
            z = p_mean + torch.exp(0.5 * p_log_var) * noise(i, p_mean.shape)
            layers.append(z)
        return torch.cat(layers[::-1], 1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, y=None) -> torch.Tensor:
        """n images from the prior: z_L ~ p(z_L), then down the layers, then E[x | z_1]."""
        return self.decode_mean(self.sample_prior(n, generator))  # decode reads z_1
