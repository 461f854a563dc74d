"""The discretised logistic likelihood (8-bit data, true bits/dim) and colour images of any
size through the `color` preset's convolutional networks."""

from __future__ import annotations

import math

import torch

import vaekit
from vaekit.data import Dataset, DataSplits
from vaekit.likelihoods import DiscretizedLogistic, build_likelihood

LEVELS = torch.arange(256, dtype=torch.float32) / 255  # every 8-bit value, in [0, 1]


def logistic(log_scale: float, shape=(1,)) -> DiscretizedLogistic:
    likelihood = build_likelihood("discretized-logistic", shape)
    with torch.no_grad():
        likelihood.log_scale.fill_(log_scale)
    return likelihood


def test_probabilities_of_the_256_levels_sum_to_one():
    for log_scale in (math.log(0.3), math.log(0.02), math.log(1e-4)):
        likelihood = logistic(log_scale)
        for logit in (-9.0, -1.0, 0.0, 0.4, 3.0, 12.0):  # the decoder outputs the mean's logits
            nll = likelihood.nll(torch.full((256, 1), logit), LEVELS[:, None])
            assert math.isclose(torch.exp(-nll.double()).sum().item(), 1.0, rel_tol=1e-5)


def test_matches_the_logistic_cdf_differences_in_float64():
    scale, mean = 0.05, torch.tensor([[0.2, 0.4, 0.9]])
    x = torch.tensor([[0.0, 100 / 255, 1.0]])  # lowest bin, an inner bin, the highest bin

    def cdf(v):
        return torch.sigmoid((v - mean.double()) / scale)

    half = 0.5 / 255
    mass = cdf(x.double() + half) - cdf(x.double() - half)
    mass[0, 0], mass[0, 2] = cdf(x.double() + half)[0, 0], 1 - cdf(x.double() - half)[0, 2]
    nll = logistic(math.log(scale), (3,)).nll(torch.logit(mean), x)
    assert math.isclose(nll.item(), -torch.log(mass).sum().item(), rel_tol=1e-5)


def test_far_off_means_and_tiny_scales_stay_finite_with_finite_gradients():
    likelihood = logistic(math.log(1e-6), (4,))  # below the floor: clamped
    mean = torch.tensor([[-50.0, 0.0, 50.0, 0.0]], requires_grad=True)  # logits
    x = torch.tensor([[1.0, 0.0, 0.0, 128 / 255]])
    nll = likelihood.nll(mean, x)
    nll.sum().backward()
    assert torch.isfinite(nll).all() and nll.item() > 1000
    assert torch.isfinite(mean.grad).all() and torch.isfinite(likelihood.log_scale.grad).all()
    torch.testing.assert_close(likelihood.mean(mean.detach()), torch.tensor([[0.0, 0.5, 1.0, 0.5]]))


def colour_splits(shape: tuple[int, ...], n: int = 24) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    return DataSplits(Dataset(pixels[:16]), Dataset(pixels[16:]), "random", "tests")


def test_color_preset_trains_any_image_size_and_reports_true_bits_per_dim(tmp_path):
    for shape in ((3, 37, 53), (1, 64, 64)):
        config = vaekit.preset("color")
        config.train.epochs, config.train.batch_size = 1, 8
        config.model.channels, config.model.hidden, config.model.latent_dim = [4, 8], [16], 4
        run = vaekit.train(
            config, tmp_path / str(shape[0]), progress=False, data=colour_splits(shape)
        )
        x = torch.rand(2, *shape)
        assert run.model.reconstruct(x).shape == (2, *shape)
        assert run.model.sample(3).shape == (3, *shape)
        loaded = vaekit.load(run.path)  # the learned scales are weights of the model
        assert torch.equal(loaded.likelihood.log_scale, run.model.likelihood.log_scale)
        assert torch.equal(loaded.reconstruct(x), run.model.reconstruct(x))
        bits, nats = run.final["test_bits_per_dim"], run.final["test_neg_elbo"]
        assert math.isclose(bits, nats / (math.prod(shape) * math.log(2)), rel_tol=1e-6)
        # uniform random bytes: no probability of 8-bit data does better than 8 bits/dim
        # (a Gaussian density would, by any amount: it is not a probability)
        assert bits > 8.0
    assert (tmp_path / "3" / "samples.png").exists()
