"""Evaluation: IWAE against a closed-form likelihood, ELBO agreement, probes, sample-quality
metrics, the cached feature classifier, binarised MNIST, and the `evaluate` command."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import vaekit
from conftest import synthetic_splits
from vaekit.cli import main
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.config.runs import RunFolder, save_weights
from vaekit.core.errors import DataError
from vaekit.data import Dataset, DataSplits, load_data
from vaekit.data import binarized_mnist as bm
from vaekit.data.binarize import evaluation_set
from vaekit.evaluation.metrics import (
    evaluate_elbo,
    iwae_bounds,
    iwae_log_likelihoods,
    probe_accuracy,
)
from vaekit.evaluation.quality import feature_classifier, frechet_distance, precision_recall
from vaekit.evaluation.run import evaluate_run, format_report
from vaekit.models import GaussianVAE

# --- a linear-Gaussian model with a closed-form likelihood ----------------------------------
# z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D)  =>  p(x) = N(b, W W^T + s^2 I). The posterior
# p(z|x) = N(S W^T (x - b) / s^2, S) with S = (I + W^T W / s^2)^-1. The encoder below is
# deliberately imperfect (shrunk mean, diagonal and inflated variance), so the ELBO is loose
# and only importance sampling closes the gap.
D, LATENT, SIGMA = 6, 2, 0.5


class GaussianLikelihood:
    """Fixed-variance Gaussian p(x|z): the decoder outputs the mean."""

    def nll(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (((x - mean) / SIGMA) ** 2 + math.log(2 * math.pi * SIGMA**2)).flatten(1).sum(
            1
        )

    def mean(self, mean: torch.Tensor) -> torch.Tensor:
        return mean


class Affine(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.weight, self.bias, self.shape = nn.Parameter(weight), nn.Parameter(bias), shape

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return (v.flatten(1) @ self.weight.T + self.bias).view(-1, *self.shape)


class LinearEncoder(Affine):
    def __init__(self, weight, bias, log_var) -> None:
        super().__init__(weight, bias, (LATENT,))
        self.log_var = log_var

    def forward(self, x):
        z_mean = super().forward(x)
        return z_mean, self.log_var.expand_as(z_mean)


def linear_gaussian(shrink: float, inflate: float, n: int = 100):
    """(model, data, exact log p(x), exact ELBO) for n examples drawn from the model, with an
    encoder whose mean is `shrink` times the posterior's and variance `inflate` times it."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, LATENT, generator=gen))
    W, b = q * torch.tensor([2.0, 1.0]), torch.randn(D, generator=gen)  # W^T W is diagonal,
    S = torch.linalg.inv(torch.eye(LATENT) + W.T @ W / SIGMA**2)  # so is the posterior's S
    A_exact = S @ W.T / SIGMA**2
    A, c = shrink * A_exact, -shrink * A_exact @ b
    log_var = torch.log(inflate * S.diagonal())
    model = GaussianVAE(ModelConfig(hidden=[4], latent_dim=LATENT), (1, 1, D))
    model.encoder = LinearEncoder(A, c, log_var)
    model.decoder = Affine(W, b, (1, 1, D))
    model.likelihood = GaussianLikelihood()
    model.eval()
    z = torch.randn(n, LATENT, generator=gen)
    x = z @ W.T + b + SIGMA * torch.randn(n, D, generator=gen)
    marginal = torch.distributions.MultivariateNormal(b, W @ W.T + SIGMA**2 * torch.eye(D))
    log_px = marginal.log_prob(x).double()
    # ELBO = log p(x) - KL(q(z|x) || p(z|x)), a KL between two Gaussians
    diff = (x - b) @ A_exact.T - (x @ A.T + c)
    S_inv, q_cov = torch.linalg.inv(S), torch.diag(log_var.exp())
    kl = 0.5 * (
        torch.trace(S_inv @ q_cov)
        + ((diff @ S_inv) * diff).sum(1)
        - LATENT
        + torch.logdet(S)
        - torch.logdet(q_cov)
    )
    return model, Dataset(x.view(-1, 1, 1, D), None, "linear-gaussian"), log_px, log_px - kl


def test_iwae_with_the_exact_posterior_is_exact_for_every_sample():
    """q(z|x) = p(z|x): every importance weight is p(x), so any k gives log p(x) exactly."""
    model, data, log_px, elbo = linear_gaussian(shrink=1.0, inflate=1.0)
    assert torch.allclose(elbo, log_px, atol=1e-4)
    estimates = iwae_log_likelihoods(model, data, ks=(1, 7, 300), chunk_rows=100)
    for estimate in estimates.values():
        assert torch.allclose(estimate, log_px, atol=1e-4)


def test_iwae_converges_to_the_closed_form_log_likelihood():
    """Tolerance: at k=10,000 the mean error is < 0.01 nats/example and every example's is
    < 0.05 nats; at k=1 the gap is the KL to the posterior, ~0.3 nats here."""
    model, data, log_px, _ = linear_gaussian(shrink=0.9, inflate=1.5)
    estimates = iwae_log_likelihoods(model, data, ks=(1, 10_000), seed=1, chunk_rows=10_000)
    gap_1, gap_10k = ((log_px - estimates[k]).mean().item() for k in (1, 10_000))
    assert gap_1 > 0.2
    assert abs(gap_10k) < 0.01
    assert (estimates[10_000] - log_px).abs().max().item() < 0.05


def test_iwae_with_one_sample_is_the_elbo_in_expectation():
    """Mean over examples and seeds of (k=1 estimate - exact ELBO) is 0 within 4 std errors."""
    model, data, _, elbo = linear_gaussian(shrink=0.9, inflate=1.5, n=300)
    diffs = torch.cat(
        [iwae_log_likelihoods(model, data, ks=(1,), seed=s)[1] - elbo for s in range(10)]
    )
    assert diffs.mean().abs() < 4 * diffs.std() / math.sqrt(len(diffs))


def test_iwae_chunking_keeps_memory_bounded_and_gives_every_k(monkeypatch):
    model, data, log_px, _ = linear_gaussian(shrink=0.9, inflate=1.5)
    calls = []
    original = type(model).log_importance_weights

    def spy(self, x, k, generator=None):
        calls.append(k * len(x))
        return original(self, x, k, generator)

    monkeypatch.setattr(type(model), "log_importance_weights", spy)
    rows = iwae_bounds(model, data, ks=(3, 1000), chunk_rows=256)
    assert max(calls) <= 256
    assert sum(calls) == len(data) * 1000  # the k=3 estimate reuses the first 3 samples
    assert [r["k"] for r in rows] == [3, 1000]
    assert abs(rows[1]["nll"] + log_px.mean().item()) < 0.02
    assert rows[1]["bits_per_dim"] == pytest.approx(rows[1]["nll"] / (D * math.log(2)))


# --- a small VAE trained on synthetic labelled images ---------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run, data) of a VAE 64-16-4 trained for a few seconds on binary bar images."""
    grey = synthetic_splits(n_train=2000, n_test=2000)
    gen = torch.Generator().manual_seed(0)
    data = DataSplits(  # binary draws: a posterior far enough from Gaussian for k to matter
        *(
            Dataset(torch.bernoulli(d.x, generator=gen), d.y, d.name)
            for d in (grey.train, grey.test)
        ),
        "bars",
        "synthetic",
    )
    config = RunConfig(
        model=ModelConfig(hidden=[16], latent_dim=4),
        train=TrainConfig(epochs=8, batch_size=64, lr=3e-3),
        name="bars",
    )
    run = vaekit.train(
        config, tmp_path_factory.mktemp("runs") / "bars", progress=False, outputs=False, data=data
    )
    return run, data


def test_iwae_bound_tightens_with_k_on_a_trained_model(trained):
    """NLL(k=1) > NLL(k=100) > NLL(k=1000), each step by more than 3 paired standard errors."""
    run, data = trained
    est = iwae_log_likelihoods(run.model, data.test, (1, 100, 1000), chunk_rows=20_000)
    for small, large in ((1, 100), (100, 1000)):
        gain = est[large] - est[small]
        assert gain.mean() > 3 * gain.std() / math.sqrt(len(gain)) > 0


def test_elbo_and_iwae_k1_agree_on_a_trained_model(trained):
    run, data = trained
    neg_elbo = torch.tensor(
        [evaluate_elbo(run.model, data.test, seed=s)["neg_elbo"] for s in range(5)]
    )
    iwae = torch.tensor(
        [iwae_bounds(run.model, data.test, ks=(1,), seed=s)[0]["nll"] for s in range(5)]
    )
    # both are unbiased estimates of the same -ELBO; the k=1 one has no closed-form KL
    assert abs(neg_elbo.mean() - iwae.mean()) < 0.02 * neg_elbo.mean()


def test_linear_and_knn_probes_beat_random_latents(trained):
    run, data = trained
    from vaekit.evaluation.metrics import latent_means

    z_train, z_test = latent_means(run.model, data.train), latent_means(run.model, data.test)
    learned = probe_accuracy(z_train, data.train.y, z_test, data.test.y)
    gen = torch.Generator().manual_seed(0)
    random = probe_accuracy(
        torch.randn(z_train.shape, generator=gen),
        data.train.y,
        torch.randn(z_test.shape, generator=gen),
        data.test.y,
    )
    assert learned["linear_accuracy"] > random["linear_accuracy"] + 0.3
    assert learned["knn_accuracy"] > random["knn_accuracy"] + 0.3
    assert random["linear_accuracy"] < random["chance_accuracy"] + 0.1


def test_evaluate_run_writes_a_complete_report(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    run, data = trained
    report = evaluate_run(run.path, data=data, k=(1, 50), n_samples=300, progress=False)
    saved = json.loads((run.path / "evaluation.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert [row["k"] for row in report["iwae"]] == [1, 50]
    assert report["iwae"][1]["nll"] < report["iwae"][0]["nll"]
    assert report["elbo"]["neg_elbo"] == pytest.approx(
        report["elbo"]["recon"] + report["elbo"]["kl"]
    )
    assert report["n_examples"] == len(data.test) and report["data_dims"] == 64
    assert report["probes"]["linear_accuracy"] > 0.6
    quality = report["sample_quality"]
    assert quality["n_generated"] == 300 and quality["n_real"] == len(data.test)
    assert quality["classifier"]["test_accuracy"] > 0.9
    assert 0 <= quality["precision"] <= 1 and 0 <= quality["recall"] <= 1
    table = format_report(report)
    for needle in ("nats/example", "bits/dim", "2000 test images x 50 importance samples"):
        assert needle in table


# --- sample-quality metrics ------------------------------------------------------------------
def test_frechet_distance_matches_the_gaussian_formula():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(20000, 3, generator=gen, dtype=torch.float64) * 2 + 1
    # N(0, I) vs N(1, 4 I): |mu|^2 + sum (sqrt(1) - sqrt(4))^2 = 3 + 3
    assert frechet_distance(a, b) == pytest.approx(6.0, abs=0.15)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_precision_recall_separate_fidelity_from_coverage():
    gen = torch.Generator().manual_seed(0)
    real = torch.cat([torch.randn(500, 2, generator=gen) + 10, torch.randn(500, 2, generator=gen)])
    same = torch.cat([torch.randn(500, 2, generator=gen) + 10, torch.randn(500, 2, generator=gen)])
    one_mode = torch.randn(1000, 2, generator=gen)
    far = torch.randn(1000, 2, generator=gen) + 100
    precision, recall = precision_recall(real, same)
    assert precision > 0.9 and recall > 0.9
    precision, recall = precision_recall(real, one_mode)  # mode dropping: faithful, half covered
    assert precision > 0.9 and 0.4 < recall < 0.6
    assert precision_recall(real, far) == (0.0, 0.0)


def test_feature_classifier_is_trained_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path))
    data = synthetic_splits(n_train=1000, n_test=200)
    first = feature_classifier(data, progress=False)
    assert first.info["test_accuracy"] > 0.9
    path = Path(first.info["path"])
    assert path.parent == tmp_path / "classifiers" and path.exists()
    monkeypatch.setattr("vaekit.evaluation.quality.train_classifier", pytest.fail)
    again = feature_classifier(data, progress=False)
    assert torch.equal(again.features(data.test.x), first.features(data.test.x))
    monkeypatch.undo()
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path))
    path.write_bytes(b"not a safetensors file")  # a damaged cache entry is replaced
    assert feature_classifier(data, progress=False).info["test_accuracy"] > 0.9
    other = synthetic_splits(n_train=1000, n_test=200, seed=1)  # other data, other entry
    assert feature_classifier(other, progress=False).info["path"] != str(path)


# --- binarisation ----------------------------------------------------------------------------
def test_dynamic_binarisation_evaluates_on_the_set_training_reports():
    from vaekit.training.trainer import Trainer

    data = synthetic_splits(n_train=100, n_test=50)
    grey = DataSplits(
        data.train, Dataset(data.test.x * 0.5 + 0.25, data.test.y, "grey"), "grey", "synthetic"
    )
    config = RunConfig(data=DataConfig(binarize="dynamic"), model=ModelConfig(hidden=[8]))
    trainer = Trainer(config, GaussianVAE(config.model, (1, 8, 8)), grey, progress=False)
    evaluated = evaluation_set(grey.test, "dynamic")
    assert torch.equal(evaluated.x, trainer.test_set.x)
    assert set(evaluated.x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(evaluation_set(grey.test, "dynamic").x, evaluated.x)  # fixed seed


def amat_bytes(images: torch.Tensor) -> bytes:
    rows = images.view(len(images), -1).to(torch.int64).tolist()
    return "".join(" ".join(map(str, row)) + "\n" for row in rows).encode()


@pytest.fixture
def fake_binarized_mnist(tmp_path, monkeypatch):
    """A folder of tiny .amat files, with the module's checksums pointed at them."""
    gen = torch.Generator().manual_seed(0)
    folder = tmp_path / "bm"
    folder.mkdir()
    sizes = {"train": 30, "valid": 10, "test": 20}
    for split, n in sizes.items():
        raw = amat_bytes(torch.bernoulli(torch.full((n, 784), 0.13), generator=gen))
        monkeypatch.setitem(bm.SHA256, split, hashlib.sha256(raw).hexdigest())
        if split == "test":  # gzipped copies are read too
            (folder / f"{bm.file_name(split)}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / bm.file_name(split)).write_bytes(raw)

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(bm.urllib.request, "urlopen", no_network)
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    return folder, sizes


def test_binarized_mnist_from_a_user_folder_needs_no_network(fake_binarized_mnist):
    folder, sizes = fake_binarized_mnist
    data = load_data(DataConfig(name="binarized-mnist", path=str(folder)))
    assert (len(data.train), len(data.valid), len(data.test)) == tuple(sizes.values())
    assert data.shape == (1, 28, 28) and data.train.y is None
    assert set(data.test.x.unique().tolist()) <= {0.0, 1.0}


def test_binarized_mnist_rejects_corrupt_files(fake_binarized_mnist):
    folder, _ = fake_binarized_mnist
    path = folder / bm.file_name("train")
    path.write_bytes(path.read_bytes().replace(b"1", b"0", 1))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_data(DataConfig(name="binarized-mnist", path=str(folder)))
    with pytest.raises(DataError, match="784-pixel lines"):
        bm.parse_amat(b"0 1\n", "x.amat")
    with pytest.raises(DataError, match="values other than 0 and 1"):
        bm.parse_amat(("2 " * 783 + "0\n").encode(), "x.amat")


def test_binarized_mnist_downloader_verifies_checksums(fake_binarized_mnist, tmp_path, monkeypatch):
    folder, _ = fake_binarized_mnist
    source = tmp_path / "site"
    source.mkdir()
    for split in bm.SPLITS:
        path = bm._find(folder, split)
        raw = path.read_bytes()
        (source / bm.file_name(split)).write_bytes(
            gzip.decompress(raw) if path.suffix == ".gz" else raw
        )
    monkeypatch.setattr(bm.urllib.request, "urlopen", bm.urllib.request.build_opener().open)
    target = bm.download_binarized_mnist(
        tmp_path / "dl", base_url=source.as_uri() + "/", progress=False
    )
    assert bm.load_split(target, "valid").x.shape == (10, 1, 28, 28)
    (source / bm.file_name("test")).write_bytes(b"0 " * 783 + b"1\n")
    (target / bm.file_name("test")).unlink()
    with pytest.raises(DataError, match="SHA-256"):
        bm.download_binarized_mnist(target, base_url=source.as_uri() + "/", progress=False)
    assert not (target / bm.file_name("test")).exists()


@pytest.mark.skipif(not bm.LOCAL_COPIES[0].is_dir(), reason="no offline copy of binarized MNIST")
def test_the_offline_binarized_mnist_copy_is_the_benchmark(monkeypatch, tmp_path):
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path))
    data = load_data(DataConfig(name="binarized-mnist"))
    assert (len(data.train), len(data.valid), len(data.test)) == (50_000, 10_000, 10_000)
    assert data.test.x.mean().item() == pytest.approx(0.1325, abs=5e-5)


# --- the command ------------------------------------------------------------------------------
@pytest.fixture
def run_folder(tmp_path):
    config = RunConfig(model=ModelConfig(hidden=[8], latent_dim=2))
    config.data.shape = [1, 28, 28]
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    run.save_config(config)
    save_weights(run.weights_path, GaussianVAE(config.model, (1, 28, 28)))
    return run


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.unlink(), "weights file not found"),
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "not a readable safetensors file"),
        (lambda p: p.write_bytes(b"\x00" * 64), "not a readable safetensors file"),
    ],
    ids=["missing", "truncated", "garbage"],
)
def test_evaluate_with_missing_or_corrupt_weights_prints_one_line(
    run_folder, damage, message, capsys
):
    damage(run_folder.weights_path)
    assert main(["evaluate", str(run_folder.path), "--quiet"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaekit: error: ") and message in lines[0]
    assert captured.out == ""


def test_evaluate_rejects_an_unknown_split(run_folder, capsys):
    assert main(["evaluate", str(run_folder.path), "--split", "valid", "--quiet"]) == 2
    assert "no split 'valid'" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_command_on_real_mnist(tmp_path, capsys):
    config = RunConfig(
        data=DataConfig(limit_train=3000),
        model=ModelConfig(hidden=[64], latent_dim=8),
        train=TrainConfig(epochs=2),
    )
    vaekit.train(config, tmp_path / "run", progress=False, outputs=False)
    out = tmp_path / "report.json"
    code = main(
        ["evaluate", str(tmp_path / "run"), "--k", "1,100", "--limit", "300", "--json", str(out),
         "--no-quality", "--quiet"]
    )  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["n_examples"] == 300 and report["probes"]["n_train"] == 60_000
    assert report["iwae"][1]["nll"] < report["iwae"][0]["nll"]
    assert report["iwae"][1]["nll"] < report["elbo"]["neg_elbo"]
    assert report["iwae"][1]["nll"] < 784 * math.log(2)  # beats independent fair coins
    assert "binarisation: none" in table and "300 test images x 100 importance samples" in table


def test_a_model_without_an_elbo_gets_the_other_numbers(tmp_path):
    data = synthetic_splits(n_train=256, n_test=64)
    config = RunConfig(model=ModelConfig(name="ae", hidden=[16], latent_dim=2), name="ae")
    config.train.epochs = 1
    run = vaekit.train(config, tmp_path / "ae", progress=False, outputs=False, data=data)
    report = evaluate_run(run.path, data=data, k=10, quality=False, progress=False)
    assert report["elbo"] is None and report["iwae"] is None
    assert report["reconstruction_mse"] > 0 and "linear_accuracy" in report["probes"]
    assert "skipped" in format_report(report)
