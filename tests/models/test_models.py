"""The models: the Gaussian VAE's objective (loss terms, analytic KL, gradients, importance
weights), the model family (conv/resnet networks, free bits, the IWAE objective, the
conditional VAE, the AE and PCA baselines, the learned-variance Gaussian likelihood) and
`vaekit compare`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import vaekit
from conftest import tiny_config
from vaekit.cli import main
from vaekit.config import ModelConfig, RunConfig
from vaekit.core.errors import ConfigError
from vaekit.likelihoods import MIN_LOG_SCALE, Gaussian
from vaekit.models import Autoencoder, ConditionalVAE, GaussianVAE, PCAModel, build_model
from vaekit.models.base import free_bits_kl, gaussian_kl, reparameterize

# --- the Gaussian VAE's objective ---------------------------------------------------------
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


# --- the model family -------------------------------------------------------------------


def tiny(name: str = "vae", **model) -> dict:
    """The tiny config of conftest as a dict, with model changes."""
    raw = tiny_config().to_dict()
    raw["model"].update(name=name, **model)
    return raw


def train_tiny(raw: dict, path, synth, **train) -> vaekit.Run:
    raw["train"].update(train)
    return vaekit.train(raw, path, progress=False, data=synth)


# --- networks -----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["conv", "resnet"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 20, 12), (2, 5, 7)])
def test_conv_and_resnet_round_trip_any_image_size(arch, shape):
    torch.manual_seed(0)
    config = ModelConfig(arch=arch, hidden=[16], channels=[4, 8], res_blocks=1, latent_dim=3)
    model = GaussianVAE(config, shape)
    x = torch.rand(2, *shape)
    z_mean, z_log_var = model.encode(x)
    assert z_mean.shape == z_log_var.shape == (2, 3)
    assert model.decode(z_mean).shape == (2, *shape)
    terms = model.loss(x)
    terms.loss.backward()
    assert math.isfinite(terms.loss.item())
    first_conv = model.encoder.features[0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_conv_needs_no_dense_layers_but_mlp_does():
    model = GaussianVAE(ModelConfig(arch="conv", hidden=[], channels=[4]), (1, 6, 6))
    assert model.decode(torch.zeros(1, 20)).shape == (1, 1, 6, 6)
    with pytest.raises(ConfigError, match="hidden"):
        RunConfig.from_dict({"model": {"arch": "mlp", "hidden": []}})


def test_resnet_blocks_start_as_identities():
    """Zero-initialised residual branches: a new resnet computes what the conv net does."""
    torch.manual_seed(0)
    config = {"hidden": [8], "channels": [4, 8], "latent_dim": 3}
    conv = GaussianVAE(ModelConfig(arch="conv", **config), (1, 12, 12))
    resnet = GaussianVAE(ModelConfig(arch="resnet", res_blocks=2, **config), (1, 12, 12))
    shared = [key for key in resnet.state_dict() if ".branch." not in key]
    assert len(shared) == len(conv.state_dict())  # in the same order of appearance
    resnet.load_state_dict(resnet.state_dict() | dict(zip(shared, conv.state_dict().values())))
    x, z = torch.rand(3, 1, 12, 12), torch.randn(3, 3)
    with torch.no_grad():
        for a, b in zip(conv.encode(x), resnet.encode(x)):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(conv.decode(z), resnet.decode(z))


def test_mlp_weight_names_are_unchanged():
    """Runs trained before conv/resnet existed still load: the MLP keeps its key names."""
    model = GaussianVAE(ModelConfig(hidden=[8], latent_dim=2), (1, 4, 4))
    assert set(model.state_dict()) == {
        "encoder.body.0.weight",
        "encoder.body.0.bias",
        "encoder.head.weight",
        "encoder.head.bias",
        "decoder.body.0.weight",
        "decoder.body.0.bias",
        "decoder.out.weight",
        "decoder.out.bias",
    }


# --- free bits ----------------------------------------------------------------------------
def test_free_bits_floor_each_dimension_of_the_batch_mean_kl():
    kl = torch.tensor([[0.1, 2.0, 0.0], [0.3, 1.0, 0.0]], requires_grad=True)  # (B=2, D=3)
    value = free_bits_kl(kl, floor=0.5)
    assert value.item() == pytest.approx(0.5 + 1.5 + 0.5)  # means 0.2, 1.5, 0 -> floored
    value.backward()
    # dimensions under the floor get no gradient: nothing pulls them towards the prior
    assert torch.equal(kl.grad, torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.5, 0.0]]))


def test_loss_with_free_bits_matches_a_hand_computation():
    torch.manual_seed(0)
    model = GaussianVAE(ModelConfig(hidden=[6], latent_dim=3), (1, 3, 3))
    x = torch.rand(5, 1, 3, 3)
    torch.manual_seed(1)
    plain = model.loss(x, 2.0)
    torch.manual_seed(1)  # the same posterior draw
    floored = model.loss(x, 2.0, free_bits=0.4)
    with torch.no_grad():
        kl_per_dim = vaekit.models.gaussian_kl(*model.encode(x)).mean(0)
    assert floored.recon.item() == pytest.approx(plain.recon.item())
    assert floored.kl.item() == pytest.approx(plain.kl.item())  # reported KL: the true one
    expected = plain.recon + 2.0 * kl_per_dim.clamp(min=0.4).sum()
    assert floored.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert (kl_per_dim < 0.4).any()  # the floor is active in this example


# --- IWAE objective -----------------------------------------------------------------------
def chunk_means(fn, chunks: int = 20) -> torch.Tensor:
    return torch.tensor([fn().item() for _ in range(chunks)], dtype=torch.float64)


def test_iwae_objective_with_one_sample_is_the_elbo_in_expectation():
    torch.manual_seed(0)
    model = GaussianVAE(ModelConfig(hidden=[4], latent_dim=2), (1, 2, 2))
    x = torch.rand(3, 1, 2, 2).repeat(1000, 1, 1, 1)
    with torch.no_grad():
        elbo = chunk_means(lambda: model.loss(x).loss)
        iwae_1 = chunk_means(lambda: model.iwae_loss(x, 1.0, 1).loss)
        iwae_8 = chunk_means(lambda: model.iwae_loss(x, 1.0, 8).loss)
    se = math.sqrt((elbo.var() / len(elbo) + iwae_1.var() / len(iwae_1)).item())
    assert abs(elbo.mean() - iwae_1.mean()).item() < 5 * se
    assert se < 0.01  # sharp enough to see a missing term
    assert iwae_8.mean() < iwae_1.mean() - 10 * se  # more samples: a tighter bound
    assert model.loss(x[:3], iw_k=8).loss.requires_grad  # the trainer's path, differentiable


def test_iwae_training_runs_and_reports_elbo_terms(synth, tmp_path):
    run = train_tiny(tiny(), tmp_path / "iwae", synth, iw_k=4)
    assert run.config.train.iw_k == 4
    row = run.final
    assert row["train_neg_elbo"] == pytest.approx(row["train_recon"] + row["train_kl"])
    assert row["train_loss"] <= row["train_neg_elbo"] + 1.0  # the bound is at least as tight


def test_objective_options_are_validated(synth, tmp_path):
    with pytest.raises(ConfigError, match="iw_k"):
        RunConfig.from_dict({"train": {"iw_k": 3, "free_bits": 0.5}})
    with pytest.raises(ConfigError, match="ae trains on its own objective"):
        train_tiny(tiny("ae"), tmp_path / "ae", synth, free_bits=0.5)


# --- conditional VAE ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cvae_run(synth, tmp_path_factory):
    raw = tiny("cvae")
    raw["train"]["epochs"] = 30  # 240 steps: conditioning learned for every seed tried (0-7)
    path = tmp_path_factory.mktemp("cvae") / "run"
    return vaekit.train(raw, path, progress=False, outputs=False, data=synth)


def test_cvae_records_classes_and_conditions_on_the_label(cvae_run):
    model = vaekit.load(cvae_run.path)
    assert isinstance(model, ConditionalVAE) and model.n_classes == 4
    assert cvae_run.config.model.n_classes == 4
    z = torch.zeros(2, model.latent_dim)
    assert not torch.allclose(
        model.decode(z, torch.tensor([0, 0])), model.decode(z, torch.tensor([1, 1]))
    )
    x = torch.rand(2, 1, 8, 8)
    assert not torch.allclose(
        model.encode(x, torch.tensor([0, 0]))[0], model.encode(x, torch.tensor([3, 3]))[0]
    )
    with pytest.raises(ConfigError, match="needs class labels"):
        model.encode(x)
    with pytest.raises(ConfigError, match="0..3"):
        model.sample(2, y=torch.tensor([4, 0]))


def test_cvae_samples_look_like_their_label(cvae_run, synth):
    """Nearest class prototype of samples drawn for label k is k (chance: 25%)."""
    prototypes = torch.stack([synth.train.x[synth.train.y == k].mean(0) for k in range(4)])
    images, labels = cvae_run.model.class_grid(25, torch.Generator().manual_seed(0))
    assert images.shape == (100, 1, 8, 8) and torch.equal(
        labels, torch.arange(4).repeat_interleave(25)
    )
    distances = (images[:, None] - prototypes[None]).square().flatten(2).sum(2)
    accuracy = (distances.argmin(1) == labels).float().mean().item()
    assert accuracy >= 0.75


def test_cvae_resume_matches_an_uninterrupted_run(synth, tmp_path):
    straight = train_tiny(tiny("cvae"), tmp_path / "a", synth)
    raw = tiny("cvae")
    raw["train"]["epochs"] = 1
    vaekit.train(raw, tmp_path / "b", progress=False, outputs=False, data=synth)
    config = vaekit.RunConfig.load(tmp_path / "b" / "config.json")
    config.train.epochs = 2
    resumed = vaekit.train(config, resume=tmp_path / "b", progress=False, outputs=False, data=synth)
    strip = [{k: v for k, v in row.items() if k != "train_seconds"} for row in straight.history]
    assert [
        {k: v for k, v in row.items() if k != "train_seconds"} for row in resumed.history
    ] == strip


def test_sample_command_by_label(cvae_run, tiny_run, tmp_path, capsys):
    out = tmp_path / "sevens.png"
    assert main(["sample", str(cvae_run.path), "--label", "2", "-n", "6", "-o", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["sample", str(cvae_run.path), "--label", "all", "-n", "3"]) == 0
    assert (cvae_run.path / "samples-by-class-3.png").is_file()
    capsys.readouterr()
    assert main(["sample", str(tiny_run.path), "--label", "1"]) == 2
    assert "needs a conditional model" in capsys.readouterr().err
    assert main(["sample", str(cvae_run.path), "--label", "9"]) == 2
    assert "labels must be in 0..3" in capsys.readouterr().err


# --- autoencoder and PCA ------------------------------------------------------------------
@pytest.fixture(scope="module")
def ae_run(synth, tmp_path_factory):
    return train_tiny(tiny("ae", latent_dim=3), tmp_path_factory.mktemp("ae") / "run", synth)


def test_autoencoder_run_reports_reconstruction_not_elbo(ae_run):
    for name in ("samples.png", "reconstructions.png", "latent.png", "loss_curves.png"):
        assert (ae_run.path / name).is_file()
    row = ae_run.final
    assert "test_neg_elbo" not in row and "train_kl" not in row
    assert 0 < row["test_mse"] < 0.2 and row["train_recon"] > 0


def test_autoencoder_samples_from_the_gaussian_of_its_codes(ae_run, synth):
    model = ae_run.model
    assert isinstance(model, Autoencoder)
    codes, log_var = model.encode(synth.train.x)
    assert log_var is None and codes.shape == (256, 3)
    assert torch.allclose(model.code_mean, codes.mean(0), atol=1e-5)
    cov = model.code_scale @ model.code_scale.T
    assert torch.allclose(cov, torch.cov(codes.T), atol=1e-4)
    assert model.sample(5).shape == (5, 1, 8, 8)


@pytest.mark.parametrize("run_fixture", ["ae_run", "pca_run"])
def test_baselines_load_with_identical_outputs(run_fixture, request, synth):
    run = request.getfixturevalue(run_fixture)
    loaded = vaekit.load(run.path)
    x = synth.test.x[:10]
    assert torch.equal(run.model.reconstruct(x), loaded.reconstruct(x))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(run.model.sample(4, g1), loaded.sample(4, g2))


@pytest.fixture(scope="module")
def pca_run(synth, tmp_path_factory):
    return train_tiny(tiny("pca", latent_dim=4), tmp_path_factory.mktemp("pca") / "run", synth)


def test_pca_matches_scikit_learn(pca_run, synth):
    from sklearn.decomposition import PCA

    model = pca_run.model
    assert isinstance(model, PCAModel)
    flat = synth.train.x.flatten(1).numpy()
    reference = PCA(n_components=4, random_state=0).fit(flat)
    x = synth.test.x[:7]
    expected = reference.inverse_transform(reference.transform(x.flatten(1).numpy()))
    np.testing.assert_allclose(model.reconstruct(x).flatten(1).numpy(), expected, atol=1e-4)
    gram = model.components @ model.components.T
    assert torch.allclose(gram, torch.eye(4), atol=1e-5)  # orthonormal directions
    np.testing.assert_allclose(model.variances.numpy(), reference.explained_variance_, rtol=1e-4)
    draws = model.encode(model.sample(4000, torch.Generator().manual_seed(0)))[0]
    assert torch.allclose(draws.var(0), model.variances, rtol=0.1)  # samples: N(0, variances)


def test_pca_run_folder_has_no_loop_and_no_pickle(pca_run):
    from safetensors.torch import load_file

    assert not (pca_run.path / "checkpoint.safetensors").exists()
    assert set(load_file(str(pca_run.path / "model.safetensors"))) == {
        "components",
        "mean",
        "variances",
    }
    (row,) = pca_run.history
    assert row["test_mse"] > 0 and 0 < row["explained_variance_ratio"] <= 1
    for name in ("samples.png", "reconstructions.png", "latent.png"):
        assert (pca_run.path / name).is_file()


def test_pca_rejects_more_components_than_dimensions():
    with pytest.raises(ConfigError, match="exceeds"):
        build_model(ModelConfig(name="pca", latent_dim=65), (1, 8, 8))


# --- Gaussian likelihood ------------------------------------------------------------------
@pytest.mark.parametrize("per_dim", [False, True])
def test_gaussian_nll_matches_a_hand_computation(per_dim):
    torch.manual_seed(0)
    likelihood = Gaussian((1, 2, 3), per_dim=per_dim)
    with torch.no_grad():
        likelihood.log_scale.copy_(torch.randn(likelihood.log_scale.shape) * 0.5)
    mean, x = torch.randn(4, 1, 2, 3), torch.rand(4, 1, 2, 3)
    sigma = np.exp(likelihood.log_scale.detach().double().numpy())
    mu, xs = mean.double().numpy(), x.double().numpy()
    per_pixel = 0.5 * ((xs - mu) / sigma) ** 2 + np.log(sigma) + 0.5 * np.log(2 * np.pi)
    expected = per_pixel.reshape(4, -1).sum(1)
    np.testing.assert_allclose(
        likelihood.nll(mean, x).detach().double().numpy(), expected, rtol=1e-5
    )
    assert likelihood.nll_sum(mean, x).item() == pytest.approx(expected.sum(), rel=1e-5)
    scale = torch.as_tensor(sigma).expand(4, 1, 2, 3)
    reference = torch.distributions.Normal(mean.double(), scale).log_prob(x.double())
    torch.testing.assert_close(-reference.flatten(1).sum(1), torch.from_numpy(expected))


def test_gaussian_scale_has_a_floor():
    likelihood = Gaussian((1, 1, 1))
    with torch.no_grad():
        likelihood.log_scale.fill_(-50.0)
    nll = likelihood.nll(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))
    assert nll.item() == pytest.approx(MIN_LOG_SCALE + 0.5 * math.log(2 * math.pi))


@pytest.mark.parametrize("name", ["gaussian", "gaussian-perdim"])
def test_learned_variance_is_trained_saved_and_loaded(name, synth, tmp_path):
    run = train_tiny(tiny(likelihood=name), tmp_path / name, synth)
    scale = run.model.likelihood.log_scale
    assert scale.shape == (() if name == "gaussian" else (1, 8, 8))
    assert (scale.detach() < -0.01).all()  # sigma shrinks from its start at 1 (Adam: <= lr/step)
    assert json.loads((tmp_path / name / "config.json").read_text())["model"]["likelihood"] == name
    loaded = vaekit.load(run.path)
    assert torch.equal(loaded.likelihood.log_scale, scale.detach())
    x = synth.test.x[:5]
    torch.testing.assert_close(
        loaded.elbo_terms(x, torch.Generator().manual_seed(0))["recon"],
        run.model.elbo_terms(x, torch.Generator().manual_seed(0))["recon"],
    )


def test_bernoulli_models_store_no_likelihood_weights():
    model = build_model(ModelConfig(hidden=[4], latent_dim=2), (1, 2, 2))
    assert not any(key.startswith("likelihood") for key in model.state_dict())
    with pytest.raises(ConfigError, match="bernoulli"):
        RunConfig.from_dict({"data": {"binarize": "dynamic"}, "model": {"likelihood": "gaussian"}})


# --- compare ------------------------------------------------------------------------------
def test_compare_writes_the_table_json_and_figure(synth, tmp_path, monkeypatch):
    from vaekit.apps.compare import compare

    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    base = tiny_config()
    report = compare(
        ["pca", "ae", "vae"], tmp_path / "cmp", base, data=synth, iwae_k=4, progress=False
    )
    for name in ("comparison.json", "comparison.md", "comparison.png"):
        assert (tmp_path / "cmp" / name).is_file()
    rows = {
        row["name"]: row
        for row in json.loads((tmp_path / "cmp" / "comparison.json").read_text())["models"]
    }
    assert list(rows) == ["pca", "ae", "vae"]
    assert rows["pca"]["neg_elbo"] is None and rows["ae"]["iwae_nll"] is None
    assert rows["vae"]["iwae_nll"] <= rows["vae"]["neg_elbo"] + 1.0
    for row in rows.values():
        assert row["reconstruction_mse"] > 0 and row["parameters"] > 0
        assert "128 real and 128 generated" in row["sample_quality"]["skipped"]  # too few
        assert 0 <= row["linear_probe"] <= 1
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| pca |" in table and "| vae |" in table and "Best reconstructions" in table
    assert report["models"][2]["epochs"] == 2 and report["models"][0]["epochs"] == 0
    again = compare(
        ["vae"], tmp_path / "cmp", base, data=synth, iwae_k=0, quality=False, progress=False
    )
    assert (
        again["models"][0]["train_seconds"] == rows["vae"]["train_seconds"]
    )  # reused, not retrained


def test_compare_command_rejects_unknown_models(capsys, tmp_path):
    assert main(["compare", "--models", "vae,gan", "--out", str(tmp_path / "c")]) == 2
    assert "unknown model 'gan'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


# --- presets and real data ----------------------------------------------------------------
def test_conv_preset_builds_the_keras_design():
    config = vaekit.preset("conv")
    assert (config.model.arch, config.model.channels) == ("conv", [32, 64])
    model = build_model(config.model, (1, 28, 28))
    assert model.decode(torch.zeros(2, config.model.latent_dim)).shape == (2, 1, 28, 28)


@pytest.mark.slow
def test_ae_reconstructs_better_than_pca_and_vae_on_mnist(mnist, tmp_path):
    """Same latent size (8), 3 epochs on 5,000 MNIST images: the unregularised AE has the
    lowest reconstruction error; the VAE pays for its KL term, PCA for being linear."""
    from vaekit.apps.compare import compare

    data = vaekit.data.DataSplits(mnist.train.head(5000), mnist.test.head(1000), "mnist", "test")
    base = RunConfig.from_dict(
        {"model": {"hidden": [256], "latent_dim": 8}, "train": {"epochs": 3, "lr": 2e-3}}
    )
    report = compare(
        ["pca", "ae", "vae"],
        tmp_path,
        base,
        data=data,
        iwae_k=0,
        quality=False,
        probes=False,
        progress=False,
    )
    mse = {row["name"]: row["reconstruction_mse"] for row in report["models"]}
    assert mse["ae"] < mse["vae"] and mse["ae"] < mse["pca"], mse
