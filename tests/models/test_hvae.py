"""The hierarchical VAE: closed-form KLs, its bound against its importance weights, training."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import vaekit
from conftest import tiny_config
from vaekit.core.errors import ConfigError
from vaekit.evaluation.metrics import evaluate_elbo, iwae_bounds
from vaekit.models import build_model
from vaekit.models.hvae import gaussian_kl_between, gaussian_log_density


def hvae_config(**train: object) -> vaekit.RunConfig:
    config = tiny_config(**train)
    config.model.name = "hvae"
    config.model.hidden = [32]
    config.model.upper_hidden = [16]
    config.model.latent_layers = [4, 2]
    return config


def test_kl_between_gaussians_matches_torch():
    g = torch.Generator().manual_seed(0)
    qm, qv, pm, pv = (torch.randn(6, 3, generator=g) for _ in range(4))
    expected = kl_divergence(Normal(qm, (0.5 * qv).exp()), Normal(pm, (0.5 * pv).exp()))
    assert torch.allclose(gaussian_kl_between(qm, qv, pm, pv), expected, atol=1e-5)
    z = torch.randn(6, 3, generator=g)
    log_density = Normal(pm, (0.5 * pv).exp()).log_prob(z).sum(-1)
    assert torch.allclose(gaussian_log_density(z, pm, pv), log_density, atol=1e-5)


def test_importance_weights_average_to_the_elbo(synth):
    """E_q[log w] is the ELBO: the mean of many single-sample weights matches the ELBO
    computed with closed-form KLs (independent estimators of one number)."""
    torch.manual_seed(0)
    model = build_model(hvae_config().model, synth.shape).eval()
    x = synth.test.x[:16]
    gen = torch.Generator().manual_seed(1)
    log_w = model.log_importance_weights(x, 4000, gen)  # (k, B)
    repeated = x.repeat(4000, 1, 1, 1)  # row i * 16 + b is example b
    elbo = model.elbo_terms(repeated, gen)["neg_elbo"].view(4000, 16).mean(0)
    assert torch.allclose(-log_w.mean(0), elbo, atol=0.5)  # nats; both s.e. < 0.15


def test_hvae_trains_saves_and_tightens_with_k(synth, tmp_path):
    config = hvae_config(epochs=6)
    run = vaekit.train(config, tmp_path / "h", progress=False, data=synth)
    assert run.config.model.latent_dim == 6  # both layers, recorded
    assert run.history[-1]["test_neg_elbo"] < run.history[0]["test_neg_elbo"]
    loaded = vaekit.load(run.path)
    x = synth.test.x[:8]
    assert torch.equal(loaded.encode(x)[0], run.model.encode(x)[0])
    assert run.model.sample(5).shape == (5, *synth.shape)
    elbo = evaluate_elbo(run.model, synth.test)
    assert len(elbo["kl_per_dim"]) == 6
    rows = {row["k"]: row["nll"] for row in iwae_bounds(run.model, synth.test, (1, 10, 100))}
    assert rows[1] == pytest.approx(elbo["neg_elbo"], abs=1.0)
    assert rows[100] < rows[10] < rows[1]


def test_hvae_iwae_objective_trains(synth, tmp_path):
    run = vaekit.train(
        hvae_config(iw_k=4), tmp_path / "h", progress=False, outputs=False, data=synth
    )
    assert run.history[-1]["test_neg_elbo"] < run.history[0]["test_neg_elbo"] + 1.0


def test_hvae_needs_two_layers(synth):
    config = hvae_config()
    config.model.latent_layers = [4]
    with pytest.raises(ConfigError, match="two or more"):
        build_model(config.model, synth.shape)


def test_anomaly_scores_of_a_hierarchical_model(synth, tmp_path):
    from vaekit.apps.anomaly import anomaly_scores

    run = vaekit.train(hvae_config(), tmp_path / "h", progress=False, outputs=False, data=synth)
    x = synth.test.x[:20]
    scores = anomaly_scores(run.model, x, ("elbo", "iwae", "recon"), samples=50)
    assert all(s.shape == (20,) and torch.isfinite(s).all() for s in scores.values())
    assert (scores["iwae"] <= scores["elbo"] + 1e-6).all()  # log-mean-exp >= mean


def test_report_of_a_hierarchical_run(synth, tmp_path):
    from vaekit.apps.report import write_report

    run = vaekit.train(hvae_config(), tmp_path / "h", progress=False, data=synth)
    page = write_report(run.path, data=synth).read_text()
    assert "<h2>Manifold</h2>" in page and "<h2>KL per dimension</h2>" in page


def test_exploring_a_hierarchical_model_uses_its_own_kl_and_decoded_layer(synth, tmp_path):
    """The KL bars are the model's own per-layer KLs (they add up to evaluate's KL term, not
    to KL against N(0, 1)); grids and traversals vary only z_1, the layer decode reads."""
    from vaekit.apps.explore import ExploreRun, kl_per_dim, manifold, save_manifold, save_traversal
    from vaekit.models.base import gaussian_kl

    torch.manual_seed(0)
    model = build_model(hvae_config().model, synth.shape).eval()
    scores = kl_per_dim(model, synth.test.x)
    assert scores.sum().item() == pytest.approx(evaluate_elbo(model, synth.test)["kl"], rel=1e-5)
    z_mean, z_log_var = model.encode(synth.test.x)
    assert not torch.allclose(scores.float(), gaussian_kl(z_mean, z_log_var).mean(0), atol=0.01)

    with torch.no_grad():  # make an upper-layer dimension the most informative by far
        model.posterior_heads[1].linear.weight[:2].mul_(50.0)  # z_2's means
    run = ExploreRun(tmp_path, model, synth.test, None)
    assert kl_per_dim(model, synth.test.x).argmax().item() >= 4  # z_2 is dims 4, 5
    assert set(save_traversal(run, tmp_path / "t.png")) == {0, 1, 2, 3}
    assert all(d < 4 for d in save_manifold(run, tmp_path / "m.png", 3).dims)
    # the grid covers z_1's marginal under the hierarchical prior, drawn top-down
    grid = manifold(model, 4, (0, 1))
    draws = model.sample_prior(20_000, torch.Generator().manual_seed(3))
    assert draws.shape == (20_000, 6)
    inside = (draws[:, :2, None] < grid.values[None]).float().mean(0)  # (2, 4): mass below
    expected = torch.tensor([[0.125, 0.375, 0.625, 0.875]] * 2)
    torch.testing.assert_close(inside, expected, atol=0.02, rtol=0)
