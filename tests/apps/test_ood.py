"""Out-of-distribution scores (apps/ood.py): likelihood regret, input complexity, typicality
and the likelihood ratio against a background model, through the Python API and
`vaekit anomaly --score ...`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit
from conftest import tiny_config
from helpers import assert_one_line_error, run_cli, write_bars_and_noise
from vaekit.apps import ood
from vaekit.apps.anomaly import anomaly_scores, detection_metrics
from vaekit.core.errors import ConfigError
from vaekit.core.noise import perturb


@pytest.fixture(scope="module")
def ood_runs(synth, tmp_path_factory) -> Path:
    """data.npz (the synthetic bars), mix.npz (its test images, then 32 noise images
    labelled "noise"), run/ (a VAE on the bars) and background/ (the same, --perturb 0.3)."""
    root = tmp_path_factory.mktemp("ood")
    write_bars_and_noise(root, synth)
    for name, rate in (("run", 0.0), ("background", 0.3)):
        config = tiny_config(epochs=8)
        config.data.name, config.data.path = "array", str(root / "data.npz")
        config.train.perturb = rate
        vaekit.train(config, root / name, progress=False, outputs=False)
    return root


def noise_images(n: int, shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


# --- the scores ----------------------------------------------------------------------------
def test_regret_is_small_in_distribution_and_large_out_of_it(ood_runs, synth):
    model = vaekit.load(ood_runs / "run")
    inside = ood.likelihood_regret(model, synth.test.x[:48], draws=4)
    outside = ood.likelihood_regret(model, noise_images(48, synth.test.shape), draws=4)
    assert (inside > -0.5).all() and (outside > -0.5).all()  # optimising only helps
    truth = torch.cat([torch.zeros(48), torch.ones(48)]).bool()
    assert detection_metrics(torch.cat([inside, outside]), truth)["auroc"] > 0.9
    assert all(p.requires_grad for p in model.parameters())  # the decoder is given back


def test_regret_of_an_input_does_not_depend_on_its_batch(ood_runs, synth):
    model = vaekit.load(ood_runs / "run")
    x = synth.test.x[:12]
    whole, part = ood.likelihood_regret(model, x, draws=3), ood.likelihood_regret(model, x[4:7], 3)
    assert torch.allclose(whole[4:7], part, atol=1e-4)


def test_code_length_grows_with_the_images_complexity():
    blank, noise = torch.zeros(3, 1, 16, 16), noise_images(3, (1, 16, 16))
    for likelihood in ("bernoulli", "gaussian"):
        assert (ood.code_length(blank, likelihood) < ood.code_length(noise, likelihood)).all()
    png = ood.code_length(blank, "gaussian")
    assert png[0] > 8 * math.log(2) * 50  # a PNG file is at least its ~60-byte frame
    with pytest.raises(ConfigError, match="images"):
        ood.code_length(torch.zeros(3, 10), "gaussian")


def test_complexity_is_nll_minus_code_length_in_the_same_units():
    x, nll = noise_images(2, (1, 4, 4)), torch.tensor([100.0, 50.0], dtype=torch.float64)
    code = ood.code_length(x, "gaussian")
    expected = nll + 16 * math.log(256) - code  # a density NLL plus 8-bit bins
    assert torch.allclose(ood.complexity(nll, x, "gaussian"), expected)


def test_typicality_per_example_and_per_batch():
    nll = torch.tensor([1.0, 3.0, 10.0, 12.0], dtype=torch.float64)
    assert ood.typicality(nll, 2.0).tolist() == [1.0, 1.0, 8.0, 10.0]
    assert ood.typicality(nll, 2.0, batch=2).tolist() == [0.0, 0.0, 9.0, 9.0]
    assert ood.typicality(nll, 2.0, batch=3).tolist() == [2.666666666666667] * 3 + [10.0]


def test_ratio_and_typicality_through_anomaly_scores(ood_runs, synth):
    model, background = vaekit.load(ood_runs / "run"), vaekit.load(ood_runs / "background")
    x = synth.test.x[:16]
    scores = anomaly_scores(
        model, x, ("iwae", "ratio", "typicality"), 5, typical_nll=7.0, background=background
    )
    background_nll = anomaly_scores(background, x, ("iwae",), 5)["iwae"]
    assert torch.allclose(scores["ratio"], scores["iwae"] - background_nll)
    assert torch.allclose(scores["typicality"], (scores["iwae"] - 7.0).abs())
    with pytest.raises(ConfigError, match="background"):
        anomaly_scores(model, x, ("ratio",))
    with pytest.raises(ConfigError, match="mean"):
        anomaly_scores(model, x, ("typicality",))


def test_perturb_replaces_a_share_of_the_values_by_8_bit_levels():
    x = torch.full((200, 50), 0.5)
    assert torch.equal(perturb(x, 0.0), x)
    torch.manual_seed(0)
    changed = perturb(x, 0.3)
    share = (changed != 0.5).double().mean().item()
    assert 0.25 < share < 0.35
    levels = changed[changed != 0.5] * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.min() >= 0 and levels.max() <= 255


# --- the command ---------------------------------------------------------------------------
@pytest.mark.parametrize("score", ["regret", "complexity", "typicality", "ratio"])
def test_anomaly_command_with_each_ood_score(ood_runs, tmp_path, capsys, score):
    args = ["anomaly", ood_runs / "run", "--data", ood_runs / "mix.npz", "--score", score]
    args += ["--anomalous", "noise", "--samples", "4", "-o", tmp_path / score, "--quiet"]
    if score == "ratio":
        args += ["--background", ood_runs / "background"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / score / "summary.json").read_text())
    assert summary["score"] == score and summary["metrics"]["n_anomalous"] == 32
    if score != "complexity":  # noise is easy to tell apart ...
        assert summary["metrics"]["auroc"] > 0.8, summary["metrics"]
    # ... but not for complexity on 8x8 images: deflate codes random bits at more than their
    # entropy, so the compressor's length outgrows the model's NLL on noise
    thresholds = json.loads((ood_runs / "run" / "anomaly.json").read_text())["thresholds"]
    assert score in thresholds


def test_ratio_without_a_background_and_a_stray_background_are_one_line(ood_runs, capsys):
    base = ["anomaly", ood_runs / "run", "--quiet"]
    code, _, err = run_cli([*base, "--score", "ratio"], capsys)
    assert_one_line_error(code, err)
    assert "background" in err
    code, _, err = run_cli([*base, "--background", ood_runs / "background"], capsys)
    assert_one_line_error(code, err)
    assert "--background goes with --score ratio" in err


def test_perturb_needs_values_in_the_unit_range(tmp_path, capsys):
    rows = np.random.default_rng(0).normal(size=(40, 3)) * 5
    np.save(tmp_path / "rows.npy", rows.astype(np.float32))
    args = ["train", "--data", tmp_path / "rows.npy", "--likelihood", "gaussian"]
    code, _, err = run_cli([*args, "--perturb", "0.2", "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err)
    assert "perturb" in err and not (tmp_path / "r").exists()
