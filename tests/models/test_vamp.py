"""The VampPrior VAE: its mixture prior against torch.distributions, its one-sample KL
against the closed form, training, save/load and the bounds' order."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

import vaekit
from conftest import tiny_config
from vaekit.core.errors import ConfigError
from vaekit.evaluation.metrics import evaluate_elbo, iwae_bounds
from vaekit.models import build_model
from vaekit.models.hvae import gaussian_kl_between
from vaekit.models.vamp import VampPriorVAE


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


def hvae_vamp_config(components: int = 8, **train: object) -> vaekit.RunConfig:
    config = tiny_config(**train)
    config.model.name, config.model.prior = "hvae", "vamp"
    config.model.hidden, config.model.upper_hidden = [32], [16]
    config.model.latent_layers = [4, 2]
    config.model.prior_components = components
    return config


def test_hvae_top_layer_vamp_kl_and_weights_agree(synth):
    """K = 1: the top layer's one-sample KL averages to the closed form against the single
    component, and the mean log importance weight (log_ratio's path) matches the ELBO
    (kl_terms' path)."""
    torch.manual_seed(0)
    model = build_model(hvae_vamp_config(components=1).model, synth.shape).eval()
    x = synth.test.x[:4]
    n = 5000
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        terms = model.elbo_terms(x.repeat(n, 1, 1, 1), gen)  # row i * 4 + b is example b
        top_mean, top_log_var = model.encode(x)[0][:, 4:], model.encode(x)[1][:, 4:]
        p_mean, p_log_var = model.top_prior_params()
        log_w = model.log_importance_weights(x, n, gen)  # (n, 4)
    exact_top = gaussian_kl_between(top_mean, top_log_var, p_mean, p_log_var)  # (4, 2)
    top = terms["kl_per_dim"].view(n, 4, -1)[..., 4:].mean(0)
    assert torch.allclose(top, exact_top, atol=0.1)
    neg_elbo = terms["neg_elbo"].view(n, 4).mean(0)
    assert torch.allclose(-log_w.mean(0), neg_elbo, atol=0.5)  # nats; both s.e. < 0.15


def test_hvae_vamp_trains_saves_and_samples(synth, tmp_path):
    run = vaekit.train(hvae_vamp_config(epochs=6), tmp_path / "hv", progress=False, data=synth)
    assert run.history[-1]["test_neg_elbo"] < run.history[0]["test_neg_elbo"]
    loaded = vaekit.load(run.path)
    assert torch.equal(loaded.pseudo_inputs, run.model.pseudo_inputs)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(3)
        assert torch.equal(loaded.sample(5, gen), run.model.sample(5, gen.manual_seed(3)))
    rows = {row["k"]: row["nll"] for row in iwae_bounds(run.model, synth.test, (1, 10, 100))}
    assert rows[100] < rows[10] < rows[1]


def test_prior_option_builds_the_vamp_vae_and_refuses_other_models(synth):
    config = tiny_config()
    config.model.prior = "vamp"
    assert isinstance(build_model(config.model, synth.shape), VampPriorVAE)
    config.model.name = "cvae"
    with pytest.raises(ConfigError, match="standard normal prior only"):
        config.validate()
    config.model.name, config.model.prior = "vae", "gamma"
    with pytest.raises(ConfigError, match="unknown model.prior"):
        config.validate()
    with pytest.raises(ConfigError, match="free_bits"):
        hvae_vamp_config(free_bits=0.5).validate()
