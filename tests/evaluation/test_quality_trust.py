"""Sample quality that can be trusted: withheld (one line of why) when the feature
classifier is weak or the images are too few, a fixed second feature space (pixel PCA),
and tables, which have no images, evaluated with their own units."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import synthetic_splits
from vaekit.config import ModelConfig
from vaekit.data import Dataset, DataSplits
from vaekit.evaluation import quality as sample_quality
from vaekit.evaluation.run import evaluate_run, format_report
from vaekit.models import GaussianVAE, build_model


def untrained_vae(shape=(1, 8, 8)) -> GaussianVAE:
    torch.manual_seed(0)
    return GaussianVAE(ModelConfig(hidden=[16], latent_dim=2), shape).eval()


def quality_row(table: str) -> str:
    (row,) = [line for line in table.splitlines() if line.startswith("sample quality")]
    return row


def test_quality_is_withheld_when_the_classifier_is_no_better_than_the_majority(
    tmp_path, monkeypatch
):
    """Labels drawn at random: the classifier cannot beat the majority class, so its
    features say nothing about the images and no Frechet distance or precision is given."""
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path))
    data = synthetic_splits(n_train=600, n_test=400)
    gen = torch.Generator().manual_seed(3)
    for part in (data.train, data.test):
        part.y = torch.randint(0, 4, (len(part),), generator=gen)
    report = evaluate_run(untrained_vae(), data=data, k=1, probes=False, progress=False)
    quality = report["sample_quality"]
    assert set(quality) >= {"skipped"} and "frechet_distance" not in quality
    assert "classifier" in quality["skipped"] and "majority" in quality["skipped"]
    assert quality["classifier"]["test_accuracy"] < 0.5  # recorded, so the reader can check
    row = quality_row(format_report(report))
    assert "withheld" in row and "majority" in row


def test_quality_is_withheld_for_too_few_images(tmp_path, monkeypatch):
    """20 test images (a 200-image folder's test split): no covariance of 128 features, no
    meaningful k-NN radii; withheld before any classifier is trained."""
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path))

    def no_training(*args, **kwargs):
        raise AssertionError("a classifier was trained for images too few to use it")

    monkeypatch.setattr("vaekit.evaluation.quality.train_classifier", no_training)
    data = synthetic_splits(n_train=180, n_test=20)
    report = evaluate_run(untrained_vae(), data=data, k=1, probes=False, progress=False)
    reason = report["sample_quality"]["skipped"]
    assert f"at least {sample_quality.MIN_QUALITY_SAMPLES}" in reason and "20 real" in reason
    assert "\n" not in reason
    assert "withheld" in quality_row(format_report(report))


def test_a_good_classifier_gives_both_feature_spaces(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path))
    data = synthetic_splits(n_train=800, n_test=300)
    report = evaluate_run(untrained_vae(), data=data, k=1, probes=False, progress=False)
    quality = report["sample_quality"]
    assert quality["classifier"]["test_accuracy"] > quality["classifier"]["majority_rate"]
    pca = quality["pixel_pca"]
    assert 0 <= pca["precision"] <= 1 and 0 <= pca["recall"] <= 1 and pca["frechet_distance"] > 0
    table = format_report(report)
    assert "pixel PCA" in table and "withheld" not in table


def test_pixel_pca_is_the_principal_subspace_of_the_training_pixels():
    """Same projection as scikit-learn's PCA (up to the sign of each component)."""
    from sklearn.decomposition import PCA

    data = synthetic_splits(n_train=500, n_test=50)
    space = sample_quality.pixel_pca(data.train, components=5)
    mine = space.features(data.test.x)
    theirs = PCA(5).fit(data.train.x.flatten(1).double().numpy())
    expected = torch.from_numpy(theirs.transform(data.test.x.flatten(1).double().numpy()))
    signs = torch.sign((mine * expected).sum(0))
    assert torch.allclose(mine * signs, expected, atol=1e-4)
    assert space.info["components"] == 5


@pytest.fixture(scope="module")
def table_splits() -> DataSplits:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = torch.from_numpy(rng.normal(size=(400, 5)) + y[:, None]).float()
    labels = torch.from_numpy(y)
    return DataSplits(
        Dataset(x[:300], labels[:300], "rows/train", "table"),
        Dataset(x[300:], labels[300:], "rows/test", "table"),
        "rows",
        "generated in the test",
        ["no", "yes"],
    )


def test_a_table_is_evaluated_in_its_own_units(table_splits):
    config = ModelConfig(hidden=[8], latent_dim=2, likelihood="gaussian-perdim")
    torch.manual_seed(0)
    model = build_model(config, table_splits.shape).eval()
    report = evaluate_run(model, data=table_splits, k=2, progress=False)
    assert "images" in report["sample_quality"]["skipped"]
    table = format_report(report)
    assert "per pixel" not in table and "of images" not in table and "bits/dim" not in table
    assert "per feature" in table and "of examples" in table
    for line in table.splitlines()[2:]:  # every row that shows a number names its unit
        cells = line.split("  ")
        cells = [c.strip() for c in cells if c.strip()]
        if len(cells) >= 3 and any(ch.isdigit() for ch in cells[1]):
            assert cells[2] and not cells[2][0].isdigit(), line
