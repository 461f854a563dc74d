"""The VampPrior VAE: its mixture prior against torch.distributions, its one-sample KL
against the closed form, training, save/load and the bounds' order."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

import vaekit
from conftest import tiny_config
from vaekit.errors import ConfigError
from vaekit.evaluate import evaluate_elbo, iwae_bounds
from vaekit.models import build_model
from vaekit.models.hvae import gaussian_kl_between


def vamp_config(components: int = 8, **train: object) -> vaekit.RunConfig:
    config = tiny_config(**train)
    config.model.name = "vamp"
    config.model.prior_components = components
    return config


def test_log_prior_is_the_mixture_of_the_pseudo_input_posteriors(synth):
    torch.manual_seed(0)
    model = build_model(vamp_config(components=5).model, synth.shape)
    means, log_vars = model.encode(model.pseudo_inputs.clamp(0, 1))  # the K posteriors
    z = torch.randn(7, 3, model.latent_dim)
    per_component = Normal(means, (0.5 * log_vars).exp()).log_prob(z.unsqueeze(-2)).sum(-1)
    expected = torch.logsumexp(per_component, -1) - math.log(5)  # (7, 3)
    assert torch.allclose(model.log_prior(z), expected, atol=1e-4)
    samples = model.sample_prior(4000, torch.Generator().manual_seed(1))
    assert samples.shape == (4000, model.latent_dim)  # draws from the mixture: its mean
    assert torch.allclose(samples.mean(0), means.mean(0), atol=0.15)


def test_one_sample_kl_is_unbiased_for_one_component(synth):
    """With K = 1 the prior is one Gaussian, so the average of many one-sample KL estimates
    must match the closed-form KL between the two Gaussians."""
    torch.manual_seed(0)
    model = build_model(vamp_config(components=1).model, synth.shape).eval()
    x = synth.test.x[:4].repeat(5000, 1, 1, 1)  # row i * 4 + b is example b
    with torch.no_grad():
        terms = model.elbo_terms(x, torch.Generator().manual_seed(2))
        z_mean, z_log_var = model.encode(synth.test.x[:4])
        p_mean, p_log_var = model.prior_params()
    exact = gaussian_kl_between(z_mean, z_log_var, p_mean, p_log_var)  # (4, D)
    estimate = terms["kl"].view(5000, 4).mean(0)
    assert torch.allclose(estimate, exact.sum(1), atol=0.1)
    # a single component's marginal is that component: the per-dimension terms match too
    per_dim = terms["kl_per_dim"].view(5000, 4, -1).mean(0)
    assert torch.allclose(per_dim, exact, atol=0.1)


def test_vamp_trains_saves_and_orders_its_bounds(synth, tmp_path):
    config = vamp_config(epochs=6)
    run = vaekit.train(config, tmp_path / "v", progress=False, data=synth)
    assert run.history[-1]["test_neg_elbo"] < run.history[0]["test_neg_elbo"]
    torch.manual_seed(config.train.seed)  # as training does before it builds the model
    start = build_model(vamp_config().model, synth.shape).pseudo_inputs
    assert not torch.allclose(run.model.pseudo_inputs, start)  # the prior was learned
    loaded = vaekit.load(run.path)
    z = torch.randn(5, loaded.latent_dim)
    with torch.no_grad():
        assert torch.equal(loaded.log_prior(z), run.model.log_prior(z))
        assert torch.equal(loaded.decode(z), run.model.decode(z))
    elbo = evaluate_elbo(run.model, synth.test)
    rows = {row["k"]: row["nll"] for row in iwae_bounds(run.model, synth.test, (1, 10, 100))}
    assert rows[1] == pytest.approx(elbo["neg_elbo"], abs=1.0)
    assert rows[100] < rows[10] < rows[1]  # ELBO >= IWAE_10 >= IWAE_100 in -log p terms


def test_vamp_refuses_free_bits_and_empty_priors():
    config = vamp_config(free_bits=0.5)
    with pytest.raises(ConfigError, match="free_bits"):
        config.validate()
    with pytest.raises(ConfigError, match="prior_components"):
        vamp_config(components=0).validate()
