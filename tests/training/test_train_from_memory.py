"""Training on data given from Python: the run records it truthfully and keeps it, so every
later command works on the run; the Keras-style `vaekit.VAE` shortcut."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vaekit
from conftest import tiny_config
from helpers import assert_one_line_error, run_cli
from vaekit.data import memory


def bars(n: int = 320, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n 8x8 uint8 images of a horizontal or vertical bar, with their labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 40, (n, 8, 8)).astype(np.uint8)
    rows = rng.integers(1, 7, n)
    for i in range(n):
        if y[i]:
            x[i, :, rows[i]] = 230
        else:
            x[i, rows[i], :] = 230
    return x, y


@pytest.fixture(scope="module")
def array_run(tmp_path_factory):
    x, y = bars()
    path = tmp_path_factory.mktemp("memory") / "run"
    return vaekit.train(tiny_config(epochs=3), path, progress=False, data=(x, y))


def test_the_run_records_in_memory_data_truthfully(array_run):
    data = json.loads((array_run.path / "config.json").read_text())["data"]
    assert data["name"] == "memory"  # not the default "mnist"
    assert data["shape"] == [1, 8, 8] and data["kind"] == "image"
    assert len(data["fingerprint"]) == 16
    assert data["path"] == str((array_run.path / "data.safetensors").resolve())
    stored = vaekit.load_data(vaekit.RunConfig.load(array_run.path / "config.json").data)
    assert stored.train.storage.dtype == torch.uint8  # kept as 8-bit pixels
    assert len(stored.train) + len(stored.test) == 320
    assert stored.classes == ["0", "1"]


@pytest.mark.parametrize(
    "command",
    [
        ["reconstruct", "{run}", "-o", "{out}/r.png"],
        ["sample", "{run}", "-n", "4", "-o", "{out}/s.png"],
        ["evaluate", "{run}", "--k", "5"],
        ["encode", "{run}", "-o", "{out}/codes.npy"],
        ["anomaly", "{run}", "-o", "{out}/anomaly", "--samples", "2"],
        ["report", "{run}", "-o", "{out}/report.html"],
    ],
)
def test_every_command_works_on_a_run_trained_from_python(array_run, command, tmp_path, capsys):
    args = [a.format(run=array_run.path, out=tmp_path) for a in command]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert list(tmp_path.iterdir()) or command[0] == "evaluate"


def test_changed_kept_data_is_refused(array_run, tmp_path, capsys, monkeypatch):
    config = vaekit.RunConfig.load(array_run.path / "config.json")
    config.data.fingerprint = "0" * 16
    with pytest.raises(vaekit.VaekitError, match="fingerprint differs"):
        vaekit.load_data(config.data)


def test_data_too_large_to_keep_makes_later_commands_ask_for_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(memory, "MAX_STORED_BYTES", 100)
    x, _ = bars(64)
    run = vaekit.train(tiny_config(epochs=1), tmp_path / "r", progress=False, data=x)
    assert not (run.path / "data.safetensors").exists()
    code, _, err = run_cli(["reconstruct", run.path, "-o", tmp_path / "r.png"], capsys)
    assert_one_line_error(code, err)
    assert "trained on data given from Python" in err and "--data PATH" in err


def test_a_failed_start_leaves_no_kept_data(tmp_path):
    x = np.random.default_rng(0).random((40, 3)).astype(np.float32) * 5  # not in [0, 1]
    with pytest.raises(vaekit.VaekitError, match="bernoulli"):
        vaekit.train(tiny_config(), tmp_path / "r", progress=False, data=x)
    assert not (tmp_path / "r").exists()


def test_the_vae_shortcut_fits_encodes_and_reloads(tmp_path):
    x, y = bars()
    vae = vaekit.VAE(latent_dim=2, hidden=(64,), epochs=20, batch_size=32, lr=5e-3, progress=False)
    assert vae.fit(x, y, run_dir=tmp_path / "v") is vae
    assert vae.history[-1]["epoch"] == 20
    assert vae.history[-1]["test_neg_elbo"] < vae.history[0]["test_neg_elbo"]
    codes = vae.encode(x[:50])
    assert codes.shape == (50, 2)
    # the reconstructions beat the best constant guess, the mean image
    images = x[:50, None] / 255.0
    reconstructions = vae.reconstruct(x[:50])
    assert reconstructions.shape == (50, 1, 8, 8)
    mean_guess = ((images - images.mean(0)) ** 2).mean()
    assert ((images - reconstructions) ** 2).mean() < 0.8 * mean_guess
    assert vae.decode(codes[:3]).shape == (3, 1, 8, 8)
    assert vae.sample(5).shape == (5, 1, 8, 8)
    scores = vae.score(x[:10])
    assert scores.shape == (10,) and np.isfinite(scores).all()
    again = vaekit.VAE.load(vae.path)
    assert np.array_equal(again.encode(x[:50]), codes)
    with pytest.raises(vaekit.VaekitError, match="trained on"):
        vae.encode(np.zeros((2, 9, 9), np.uint8))


def test_the_vae_shortcut_picks_a_gaussian_for_tables(tmp_path):
    rows = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32) * 3
    vae = vaekit.VAE(latent_dim=2, hidden=(16,), epochs=2, progress=False)
    vae.fit(rows, run_dir=tmp_path / "t")
    assert vae.config.model.likelihood == "gaussian-perdim"
    assert vae.config.data.kind == "table"
    with pytest.raises(vaekit.VaekitError, match="unknown training option"):
        vaekit.VAE(epoch=3).fit(rows)
