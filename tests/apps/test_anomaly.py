"""Applications: anomaly scores and thresholds, denoising, latent export, the scikit-learn
estimator, and their commands on own data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit
from conftest import tiny_config
from helpers import assert_one_line_error, run_cli, write_bars_and_noise, write_pngs
from vaekit.apps.anomaly import (
    CALIBRATION_FILE,
    anomaly_scores,
    detection_metrics,
    ground_truth,
    log_weights,
)
from vaekit.apps.denoise import psnr
from vaekit.apps.estimator import VAETransformer
from vaekit.core.errors import ConfigError
from vaekit.core.files import load_tensors
from vaekit.core.noise import corrupt, parse_noise
from vaekit.training.denoising import add_denoising


@pytest.fixture(scope="module")
def apps(synth, tmp_path_factory) -> Path:
    """A folder with data.npz (the synthetic bars, own split), mix.npz (its test images plus
    32 uniform-noise images labelled "noise") and run/ (a tiny VAE trained on data.npz)."""
    root = tmp_path_factory.mktemp("apps")
    write_bars_and_noise(root, synth)
    config = tiny_config(epochs=6)
    config.data.name, config.data.path = "array", str(root / "data.npz")
    vaekit.train(config, root / "run", progress=False, outputs=False)
    return root


# --- scores -------------------------------------------------------------------------------
def test_log_weights_are_the_models_importance_weights(tiny_run, synth):
    """One example with the same draws: exactly GaussianVAE.log_importance_weights."""
    model, x, k = tiny_run.model, synth.test.x[:1], 7
    eps = torch.randn(k, model.latent_dim, generator=torch.Generator().manual_seed(3))
    expected = model.log_importance_weights(x, k, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(log_weights(model, x, eps), expected, atol=1e-4)


def test_scores_are_per_example_and_ordered(tiny_run, synth):
    model, x = tiny_run.model, synth.test.x[:40]
    full = anomaly_scores(model, x, ("elbo", "iwae", "recon"), samples=5)
    part = anomaly_scores(model, x[10:14], ("elbo", "iwae", "recon"), samples=5)
    for score in full:  # an example's score does not depend on its batch
        assert torch.allclose(full[score][10:14], part[score], atol=1e-5)
    assert (full["iwae"] <= full["elbo"] + 1e-6).all()  # the IWAE bound is tighter
    one = anomaly_scores(model, x, ("iwae",), samples=1)["iwae"]
    assert torch.allclose(one, anomaly_scores(model, x, ("elbo",), samples=1)["elbo"])
    with pytest.raises(ConfigError, match="unknown score"):
        anomaly_scores(model, x, ("likelihood",))


def test_detection_metrics_and_ground_truth():
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0])
    perfect = detection_metrics(scores, torch.tensor([False, False, True, True]))
    assert perfect["auroc"] == 1.0 and perfect["auprc"] == 1.0 and perfect["base_rate"] == 0.5
    assert detection_metrics(-scores, torch.tensor([False, False, True, True]))["auroc"] == 0.0
    assert "skipped" in detection_metrics(scores, torch.zeros(4, dtype=torch.bool))
    truth, anomalous, _ = ground_truth(["a", "b", "c"], None, ["a", "b"])
    assert truth.tolist() == [False, False, True] and anomalous == ["c"]
    truth, _, note = ground_truth(["a", "b"], None, ["a", "b"])
    assert truth is None and "give the anomalous labels" in note
    assert ground_truth(["a", "b"], ["a"], ["a", "b"])[0].tolist() == [True, False]


# --- the anomaly command ------------------------------------------------------------------
def read_scores(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_anomaly_command_scores_flags_and_auroc(apps, capsys, tmp_path):
    run = apps / "run"
    args = ["anomaly", run, "--data", apps / "mix.npz", "--quiet", "-o", tmp_path / "a"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["anomalous_labels"] == ["noise"]  # the one label absent from training
    assert summary["metrics"]["auroc"] > 0.95 and f"AUROC {summary['metrics']['auroc']:.4f}" in out
    rows = read_scores(tmp_path / "a" / "scores.csv")
    assert list(rows[0]) == ["id", "score", "flag", "label"] and len(rows) == 128 + 32
    threshold = summary["threshold"]["threshold"]
    assert all(int(r["flag"]) == (float(r["score"]) > threshold) for r in rows)
    highest = sorted(rows, key=lambda r: -float(r["score"]))[:10]
    assert [r["id"] for r in summary["most_anomalous"]] == [r["id"] for r in highest]
    # the threshold is the 0.99 quantile of the training scores stored in the run
    stored, meta = load_tensors(run / CALIBRATION_FILE)
    assert meta["n"] == 256 and meta["labels"] == ["0", "1", "2", "3"]
    assert threshold == pytest.approx(torch.quantile(stored["elbo"], 0.99).item())
    record = json.loads((run / "anomaly.json").read_text())
    assert record["thresholds"]["elbo"]["threshold"] == threshold
    assert (tmp_path / "a" / "scores.png").stat().st_size > 1000
    # another quantile reuses the stored training scores, on the run's own training split
    before = (run / CALIBRATION_FILE).stat().st_mtime_ns
    args = ["anomaly", run, "--split", "train", "--threshold-quantile", "0.9", "--quiet"]
    code, _, err = run_cli([*args, "-o", tmp_path / "b"], capsys)
    assert code == 0, err
    assert (run / CALIBRATION_FILE).stat().st_mtime_ns == before
    flagged = json.loads((tmp_path / "b" / "summary.json").read_text())["flagged_fraction"]
    assert 0.05 <= flagged <= 0.11  # about 1 - 0.9 of the training examples


def test_anomaly_errors(apps, capsys, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((4, 5, 5), dtype=np.float32))
    for args, mentions in [
        (["--data", tmp_path / "wrong.npy"], "the run's model takes (1, 8, 8)"),
        (["--threshold-quantile", "1.5"], "--threshold-quantile"),
        (["--data", tmp_path / "missing.csv"], "missing.csv: not found"),
    ]:
        code, _, err = run_cli(["anomaly", apps / "run", *args, "-o", tmp_path / "o"], capsys)
        assert_one_line_error(code, err)
        assert mentions in err
    assert not (tmp_path / "o").exists()


# --- encode -------------------------------------------------------------------------------
def test_encode_writes_means_log_variances_ids_labels(apps, capsys, tmp_path):
    for name in ("z.npy", "z.csv"):
        code, out, err = run_cli(["encode", apps / "run", "-o", tmp_path / name], capsys)
        assert code == 0, err
        assert "encoded 128 examples" in out
    table = np.load(tmp_path / "z.npy")
    assert table.dtype.names == ("id", "label", "z_mean", "z_log_var")
    assert table["z_mean"].shape == (128, 2) and table["id"][0] == "test/0"
    model = vaekit.load(apps / "run")
    x = torch.from_numpy(np.load(apps / "data.npz")["x_test"])
    with torch.no_grad():
        mean, log_var = model.encode(x)
    assert np.allclose(table["z_mean"], mean.numpy(), atol=1e-6)
    assert np.allclose(table["z_log_var"], log_var.numpy(), atol=1e-6)
    rows = read_scores(tmp_path / "z.csv")
    assert list(rows[0])[:4] == ["id", "label", "z_mean_0", "z_mean_1"]
    assert float(rows[5]["z_log_var_1"]) == pytest.approx(float(table["z_log_var"][5, 1]), abs=1e-5)
    code, _, err = run_cli(["encode", apps / "run", "-o", tmp_path / "z.txt"], capsys)
    assert_one_line_error(code, err)


# --- denoising ----------------------------------------------------------------------------
def test_noise_and_psnr():
    x = torch.full((200, 1, 10, 10), 0.5)
    g = torch.Generator().manual_seed(0)
    gaussian = corrupt(x, parse_noise("gaussian:0.1"), g)
    assert (gaussian - x).std().item() == pytest.approx(0.1, rel=0.05)
    salted = corrupt(x, parse_noise("saltpepper:0.2"), g)
    changed = salted != x
    assert changed.double().mean().item() == pytest.approx(0.2, abs=0.01)
    assert set(salted[changed].tolist()) == {0.0, 1.0}
    assert psnr(x, x + 0.1)[0].item() == pytest.approx(20.0)  # MSE 0.01 -> 20 dB
    clipped = corrupt(torch.zeros(10, 1, 4, 4), parse_noise("gaussian:1"), g)
    assert clipped.min() >= 0 and clipped.max() <= 1
    for bad in ("gaussian", "poisson:0.1", "saltpepper:2", "gaussian:-1"):
        with pytest.raises(ConfigError, match="noise"):
            parse_noise(bad)


def test_denoising_training_corrupts_encoder_input_in_training_mode_only(tiny_run, synth):
    model = vaekit.load(tiny_run.path)
    x = synth.test.x[:8]
    with torch.no_grad():
        clean = model.encode(x)[0]
        add_denoising(model, "gaussian:0.5", synth.train.x)
        assert torch.equal(model.encode(x)[0], clean)  # eval mode: untouched
        model.train()
        assert not torch.allclose(model.encode(x)[0], clean)


def test_denoise_command_and_denoising_training(apps, synth, capsys, tmp_path):
    config = tiny_config(epochs=6, denoise="gaussian:0.3")
    run = vaekit.train(config, tmp_path / "dae", progress=False, outputs=False, data=synth)
    assert vaekit.RunConfig.load(run.path / "config.json").train.denoise == "gaussian:0.3"
    args = ["denoise", apps / "run", "--data", apps / "data.npz", "--noise", "saltpepper:0.1"]
    code, out, err = run_cli([*args, "--png", "-o", tmp_path / "d"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "d" / "denoise.json").read_text())
    assert report["n_examples"] == 384 and "PSNR noisy" in out
    assert report["gain_db"] == pytest.approx(report["psnr"]["denoised"] - report["psnr"]["noisy"])
    saved = np.load(tmp_path / "d" / "denoised.npz")
    assert saved["denoised"].shape == (384, 1, 8, 8) and saved["ids"][0] == "train/0"
    assert (tmp_path / "d" / "denoised" / "train" / "0.png").exists()
    assert (tmp_path / "d" / "denoise.png").exists()
    code, _, err = run_cli(["denoise", apps / "run", "--noise", "blur:1"], capsys)
    assert_one_line_error(code, err)


# --- a folder of images through the command line ------------------------------------------
def test_image_folder_round_trip_through_the_cli(tmp_path, capsys):
    write_pngs(tmp_path / "imgs" / "a", 12)
    write_pngs(tmp_path / "imgs" / "b", 12, seed=50)
    train = ["train", "--data", tmp_path / "imgs", "--epochs", "1", "--hidden", "8"]
    code, _, err = run_cli(
        [*train, "--latent-dim", "2", "--quiet", "--out", tmp_path / "r"], capsys
    )
    assert code == 0, err
    code, _, err = run_cli(
        ["encode", tmp_path / "r", "--data", tmp_path / "imgs", "-o", tmp_path / "z.csv"], capsys
    )
    assert code == 0, err
    assert read_scores(tmp_path / "z.csv")[12]["id"] == "b/img00.png"
    code, out, err = run_cli(
        ["anomaly", tmp_path / "r", "--data", tmp_path / "imgs", "--quiet"], capsys
    )
    assert code == 0, err
    assert "scored 24 examples" in out and "every label occurs in the training data" in out
    assert len(read_scores(tmp_path / "r" / "anomaly" / "scores.csv")) == 24


# --- scikit-learn -------------------------------------------------------------------------
def test_estimator_in_a_pipeline_and_its_units():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    X = rng.normal(size=(200, 5)) + 3.0 * y[:, None]
    vae = VAETransformer(latent_dim=2, epochs=10, random_state=0)
    pipe = make_pipeline(vae, LogisticRegression()).fit(X, y)
    assert pipe.score(X, y) > 0.9
    Z = vae.transform(X)
    assert Z.shape == (200, 2) and Z.dtype == np.float64
    assert vae.inverse_transform(Z).shape == (200, 5)
    # score_samples is a density of X: rescaling X by 10 shifts it by -5 log 10 exactly
    scores = vae.score_samples(X)
    rescaled = VAETransformer(latent_dim=2, epochs=10, random_state=0).fit(10 * X)
    assert np.allclose(rescaled.score_samples(10 * X), scores - 5 * np.log(10), atol=1e-4)
    assert vae.get_params()["latent_dim"] == 2 and vae.set_params(epochs=3).epochs == 3


@pytest.mark.slow
def test_estimator_passes_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(VAETransformer(epochs=1, random_state=0), on_fail=None)
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    assert not failed
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert skipped <= {"check_array_api_input"}  # needs SCIPY_ARRAY_API; torch, not array API
