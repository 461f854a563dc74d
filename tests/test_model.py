"""The Gaussian VAE's objective: loss terms, analytic KL, gradients, importance weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaekit import ModelConfig
from vaekit.models.base import GaussianVAE, gaussian_kl, reparameterize

TINY_SHAPE = (1, 2, 2)


def tiny_model(shape: tuple[int, ...] = TINY_SHAPE, seed: int = 0) -> GaussianVAE:
    torch.manual_seed(seed)
    return GaussianVAE(ModelConfig(hidden=[3], latent_dim=2), shape)


def tiny_batch() -> torch.Tensor:
    """Three 2x2 images: intensities in [0, 1] including exact 0s and 1s."""
    return torch.tensor(
        [[[0.0, 1.0], [0.25, 0.9]], [[1.0, 1.0], [0.0, 0.5]], [[0.1, 0.0], [0.7, 0.3]]]
    ).unsqueeze(1)


def hand_bce(logits: np.ndarray, x: np.ndarray) -> np.ndarray:
    """-sum_pixels [x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))] per example, in float64."""
    p = 1.0 / (1.0 + np.exp(-logits))
    per_pixel = -(x * np.log(p) + (1.0 - x) * np.log(1.0 - p))
    return per_pixel.reshape(len(x), -1).sum(1)


def hand_kl(mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """KL(N(mean, exp(log_var)) || N(0, 1)) summed over latent dims, per example."""
    return 0.5 * (np.exp(log_var) + mean**2 - 1.0 - log_var).sum(1)


def as64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# --- 1. loss terms by hand ----------------------------------------------------------------
def test_loss_matches_hand_computation():
    model, x, beta = tiny_model(), tiny_batch(), 0.37
    torch.manual_seed(123)
    terms = model.loss(x, beta)
    torch.manual_seed(123)  # loss() draws eps from the global stream: draw the same eps
    eps = torch.randn(len(x), 2)

    with torch.no_grad():
        z_mean, z_log_var = model.encode(x)
        z = z_mean + torch.exp(0.5 * z_log_var) * eps
        logits = model.decode(z)
    recon = hand_bce(as64(logits), as64(x))
    kl = hand_kl(as64(z_mean), as64(z_log_var))

    assert terms.recon.item() == pytest.approx(recon.mean(), rel=1e-5)
    assert terms.kl.item() == pytest.approx(kl.mean(), rel=1e-5)
    assert terms.loss.item() == pytest.approx((recon + beta * kl).mean(), rel=1e-5)
    assert terms.neg_elbo.item() == pytest.approx((recon + kl).mean(), rel=1e-5)
    assert kl.mean() > 0.01  # the KL term is not negligible, so beta is really tested


def test_elbo_terms_match_hand_computation():
    model, x = tiny_model(seed=1), tiny_batch()
    terms = model.elbo_terms(x, generator=torch.Generator().manual_seed(5))
    eps = torch.randn(len(x), 2, generator=torch.Generator().manual_seed(5))

    with torch.no_grad():
        z_mean, z_log_var = model.encode(x)
        logits = model.decode(z_mean + torch.exp(0.5 * z_log_var) * eps)
    recon = hand_bce(as64(logits), as64(x))
    kl_per_dim = 0.5 * (np.exp(as64(z_log_var)) + as64(z_mean) ** 2 - 1 - as64(z_log_var))

    assert terms["recon"].shape == (3,) and terms["kl_per_dim"].shape == (3, 2)
    np.testing.assert_allclose(as64(terms["recon"]), recon, rtol=1e-5)
    np.testing.assert_allclose(as64(terms["kl_per_dim"]), kl_per_dim, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(as64(terms["kl"]), kl_per_dim.sum(1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(as64(terms["neg_elbo"]), recon + kl_per_dim.sum(1), rtol=1e-5)


def zero_decoder(model: GaussianVAE) -> GaussianVAE:
    """Decoder logits 0 everywhere: -log p(x|z) = D * log 2 for binary x, whatever z."""
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.zero_()
    return model


@pytest.mark.parametrize("shape", [(1, 2, 2), (1, 4, 4), (3, 5, 2)])
def test_reconstruction_is_summed_over_pixels(shape):
    model = zero_decoder(tiny_model(shape))
    x = torch.bernoulli(torch.full((4, *shape), 0.5), generator=torch.Generator().manual_seed(0))
    pixels = math.prod(shape)
    assert model.loss(x).recon.item() == pytest.approx(pixels * math.log(2), rel=1e-6)
    assert model.elbo_terms(x)["recon"] == pytest.approx([pixels * math.log(2)] * 4, rel=1e-6)


def test_loss_is_a_mean_over_the_batch():
    model = zero_decoder(tiny_model())  # loss deterministic: constant recon, analytic KL
    x = tiny_batch()
    once = model.loss(x, beta=2.0)
    repeated = model.loss(x.repeat(5, 1, 1, 1), beta=2.0)
    assert repeated.loss.item() == pytest.approx(once.loss.item(), rel=1e-6)
    assert repeated.kl.item() == pytest.approx(once.kl.item(), rel=1e-6)


# --- 2. analytic KL against Monte Carlo ---------------------------------------------------
def test_gaussian_kl_matches_monte_carlo():
    mean = torch.tensor([[0.5, -1.2, 0.0, 2.0]], dtype=torch.float64)
    log_var = torch.tensor([[-0.7, 0.4, 1.0, -2.5]], dtype=torch.float64)
    n = 200_000
    g = torch.Generator().manual_seed(0)
    std = torch.exp(0.5 * log_var)
    z = mean + std * torch.randn(n, 4, generator=g, dtype=torch.float64)
    # log q(z) - log p(z) per dimension; the 0.5 log(2 pi) constants cancel
    log_ratio = -0.5 * ((z - mean) / std) ** 2 - 0.5 * log_var + 0.5 * z**2
    estimate = log_ratio.mean(0)
    standard_error = log_ratio.std(0) / math.sqrt(n)

    analytic = gaussian_kl(mean, log_var)
    assert analytic.shape == (1, 4)
    # 5 standard errors: a false failure has probability ~6e-7 per dimension
    assert torch.all((analytic[0] - estimate).abs() < 5 * standard_error), (
        analytic,
        estimate,
        standard_error,
    )
    assert torch.all(standard_error < 0.02)  # the test is sharp enough to see a wrong formula


def test_gaussian_kl_is_zero_only_at_the_prior():
    zeros = torch.zeros(2, 3)
    assert torch.equal(gaussian_kl(zeros, zeros), zeros)
    assert torch.all(gaussian_kl(zeros + 0.1, zeros) > 0)
    assert torch.all(gaussian_kl(zeros, zeros - 0.1) > 0)


# --- 3. gradients through the reparameterisation ------------------------------------------
def test_reparameterization_gradients_match_closed_form():
    mean = torch.tensor([[0.3, -0.8, 1.1]], dtype=torch.float64, requires_grad=True)
    log_var = torch.tensor([[-0.5, 0.2, 0.9]], dtype=torch.float64, requires_grad=True)
    z = reparameterize(mean, log_var, torch.Generator().manual_seed(3))
    eps = torch.randn(1, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss = 0.5 * z.square().sum() + gaussian_kl(mean, log_var).sum()
    loss.backward()

    with torch.no_grad():
        sigma = torch.exp(0.5 * log_var)
        z_expected = mean + sigma * eps
        grad_mean = z_expected + mean  # d/dm [z^2 / 2] + d/dm KL
        grad_log_var = z_expected * eps * sigma / 2 + 0.5 * (torch.exp(log_var) - 1)
    torch.testing.assert_close(z.detach(), z_expected)
    torch.testing.assert_close(mean.grad, grad_mean)
    torch.testing.assert_close(log_var.grad, grad_log_var)


def test_loss_gradients_reach_the_encoder_and_match_finite_differences():
    model, x = tiny_model(seed=2), tiny_batch()
    with torch.no_grad():
        mean0, log_var0 = model.encode(x)

    def loss_at(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """The model's loss with the encoder's outputs replaced by (mean, log_var)."""
        model.encode = lambda _x: (mean, log_var)  # instance attribute shadows the method
        try:
            torch.manual_seed(11)  # the same eps every call
            return model.loss(x).loss
        finally:
            del model.encode

    mean = mean0.clone().requires_grad_(True)
    log_var = log_var0.clone().requires_grad_(True)
    loss_at(mean, log_var).backward()
    assert torch.all(mean.grad != 0) and torch.all(log_var.grad != 0)

    h = 1e-2
    for grad, which in ((mean.grad, 0), (log_var.grad, 1)):
        for i, j in ((0, 0), (1, 1), (2, 0)):
            args_plus = [mean0.clone(), log_var0.clone()]
            args_minus = [mean0.clone(), log_var0.clone()]
            args_plus[which][i, j] += h
            args_minus[which][i, j] -= h
            with torch.no_grad():
                numeric = (loss_at(*args_plus) - loss_at(*args_minus)).item() / (2 * h)
            assert grad[i, j].item() == pytest.approx(numeric, rel=2e-2, abs=1e-4)

    model.zero_grad()
    torch.manual_seed(11)
    model.loss(x).loss.backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for encoder.{name}"


# --- 4. importance weights ----------------------------------------------------------------
def test_log_importance_weights_average_to_minus_neg_elbo():
    model, x = tiny_model(seed=4), tiny_batch()
    k = 20_000
    log_w = model.log_importance_weights(x, k, generator=torch.Generator().manual_seed(0))
    assert log_w.shape == (k, len(x))
    assert torch.isfinite(log_w).all()

    # E_q[log w] = -(E_q[recon] + KL): estimate E_q[recon] from independent draws
    repeated = x.repeat(k, 1, 1, 1)  # example b at rows b, b + B, b + 2B, ...
    terms = model.elbo_terms(repeated, generator=torch.Generator().manual_seed(1))
    neg_elbo = terms["neg_elbo"].view(k, len(x)).double()
    log_w = log_w.double()
    standard_error = torch.sqrt(log_w.var(0) / k + neg_elbo.var(0) / k)
    difference = log_w.mean(0) + neg_elbo.mean(0)
    assert torch.all(difference.abs() < 5 * standard_error), (difference, standard_error)
    # the comparison is sharp: a missing log-det-Jacobian (0.5 sum log_var) would show
    with torch.no_grad():
        log_var_sum = model.encode(x)[1].sum(1).double()
    assert torch.all(0.5 * log_var_sum.abs() > 5 * standard_error)
