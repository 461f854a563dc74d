"""`compare` names a winner only when it is one: ties are reported as ties, a sample-quality
winner must win in two feature spaces (the classifier's and pixel PCA), every column states
its unit, and tables are compared without image grids."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import vaekit
from conftest import synthetic_splits
from vaekit.apps.compare import compare, format_markdown
from vaekit.config import RunConfig
from vaekit.data import Dataset, DataSplits


def quality(p, r, fd, pca=None, n=1000):
    """A sample-quality record; `pca`: (precision, recall, Frechet distance) in pixel PCA."""
    pp, pr, pfd = pca or (p, r, fd)
    return {
        "frechet_distance": fd,
        "precision": p,
        "recall": r,
        "n_generated": n,
        "n_real": n,
        "neighbours": 3,
        "generated": "means of p(x|z)",
        "classifier": {
            "dataset": "bars",
            "binary": False,
            "test_accuracy": 0.99,
            "majority_rate": 0.25,
            "n_test": n,
            "feature_dim": 128,
            "path": "x",
        },
        "pixel_pca": {"frechet_distance": pfd, "precision": pp, "recall": pr, "components": 64},
    }


def row(name, mse, sample_quality=None, nll=None):
    return {
        "name": name,
        "model": name,
        "changes": {},
        "parameters": 100,
        "train_seconds": 1.0,
        "epochs": 1,
        "reconstruction_mse": mse,
        "neg_elbo": None if nll is None else nll + 2,
        "recon": None,
        "kl": None,
        "iwae_nll": nll,
        "iwae_stderr": None if nll is None else 0.5,
        "linear_probe": None,
        "sample_quality": sample_quality,
    }


def markdown(rows) -> str:
    report = {
        "dataset": "bars",
        "kind": "image",
        "n_train": 1000,
        "n_test": 1000,
        "data_dims": 64,
        "base_config": RunConfig().to_dict(),
        "iwae_k": 100,
        "models": rows,
        "seconds_total": 3.0,
    }
    return format_markdown(report)


def verdict(text: str, starts: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(f"- {starts}")]
    return line


def test_a_three_way_tie_is_a_tie():
    """Three models whose samples all fall inside the real manifold: no 'most realistic'."""
    same = quality(1.0, 0.0, 0.01)
    text = markdown([row("pca", 0.02, same), row("ae", 0.01, same), row("vae", 0.015, same)])
    line = verdict(text, "Most realistic")
    assert "tie" in line and "**" not in line
    assert all(name in line for name in ("pca", "ae", "vae"))


def test_fractions_within_their_noise_are_tied():
    """61% against 60% of 300 samples: 1 point apart, 4 standard errors are 8 points."""
    text = markdown(
        [
            row("ae", 0.01, quality(0.60, 0.5, 10.0, n=300)),
            row("vae", 0.02, quality(0.61, 0.5, 20.0, n=300)),
        ]
    )
    assert "tie" in verdict(text, "Most realistic")
    assert "**ae**" in verdict(text, "Best reconstructions")


def test_a_sample_winner_must_win_in_both_feature_spaces():
    """Recall: the classifier's features favour the VAE, pixel PCA the AE: no winner. Precision:
    both favour the VAE by far more than the noise: the VAE is named."""
    text = markdown(
        [
            row("ae", 0.01, quality(0.40, 0.60, 80.0, pca=(0.30, 0.80, 5.0))),
            row("vae", 0.02, quality(0.70, 0.80, 90.0, pca=(0.60, 0.50, 9.0))),
        ]
    )
    assert "**vae**" in verdict(text, "Most realistic")
    recall = verdict(text, "Samples covering")
    assert "**" not in recall and "no winner" in recall and "pixel PCA" in recall
    assert "**ae**" in verdict(text, "Lowest Fréchet")


def test_every_column_states_its_unit():
    text = markdown([row("vae", 0.02, quality(0.7, 0.8, 9.0), nll=90.0)])
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    cells = [c.strip() for c in header.strip("|").split("|")][1:]
    units = ("nats", "per pixel", "%", "feature units", "count", " s)", "(s")
    for cell in cells:
        assert any(u in cell for u in units), f"no unit in column {cell!r}"


def test_an_iwae_difference_within_its_standard_errors_is_a_tie():
    text = markdown([row("vae", 0.02, nll=90.0), row("iwae", 0.03, nll=90.4)])
    assert "tie" in verdict(text, "Best likelihood")


@pytest.fixture(scope="module")
def table_data() -> DataSplits:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    x = torch.from_numpy(rng.normal(size=(300, 4)) + y[:, None]).float()
    labels = torch.from_numpy(y)
    return DataSplits(
        Dataset(x[:200], labels[:200], "rows/train", "table"),
        Dataset(x[200:], labels[200:], "rows/test", "table"),
        "rows",
        "generated in the test",
        ["no", "yes"],
    )


def small_base(likelihood: str = "bernoulli") -> RunConfig:
    raw = {
        "model": {"hidden": [8], "latent_dim": 2, "likelihood": likelihood},
        "train": {"epochs": 1, "batch_size": 50, "seed": 0},
    }
    return RunConfig.from_dict(raw)


def test_a_table_is_compared_per_feature(table_data, tmp_path, monkeypatch):
    monkeypatch.setattr(
        "vaekit.plots.image_grid", lambda *a, **k: pytest.fail("an image grid of a table")
    )
    report = compare(
        ["pca", "vae"],
        tmp_path,
        small_base("gaussian-perdim"),
        data=table_data,
        iwae_k=2,
        progress=False,
    )
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    assert all("images" in r["sample_quality"]["skipped"] for r in report["models"])
    text = (tmp_path / "comparison.md").read_text()
    assert "per feature" in text and "per pixel" not in text and "images" not in text.split("|")[0]


@pytest.mark.slow
def test_compare_measures_samples_in_both_feature_spaces(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    data = synthetic_splits(n_train=800, n_test=300)
    report = compare(["ae", "vae"], tmp_path / "cmp", small_base(), data=data, progress=False)
    for model in report["models"]:
        assert {"precision", "recall", "frechet_distance"} <= set(model["sample_quality"])
        assert {"precision", "recall"} <= set(model["sample_quality"]["pixel_pca"])
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert "pixel PCA" in json.dumps(saved["units"])
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert re.search(r"\d+\.\d% / \d+\.\d%", text)  # classifier / pixel PCA in one cell
    assert vaekit.load(tmp_path / "cmp" / "vae") is not None
