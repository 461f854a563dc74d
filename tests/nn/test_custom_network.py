"""Your own networks: a registered encoder/decoder pair trains, saves, reloads with identical
outputs, runs the CLI's jobs through --plugin, and a wrong shape is one line."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

import vaekit
from conftest import tiny_config
from helpers import assert_one_line_error, run_cli
from vaekit.core.errors import ConfigError
from vaekit.nn import ARCHS

PLUGIN = '''
"""A small conv network pair, registered as "tinyconv" (the docs' example)."""
import math
from torch import nn
import vaekit

def encoder(shape, latent_dim):
    channels = shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
    )

def decoder(shape, latent_dim):
    c, h, w = shape
    return nn.Sequential(
        nn.Linear(latent_dim, 16 * h * w), nn.ReLU(),
        nn.Unflatten(1, (16, h, w)),
        nn.Conv2d(16, c, 3, padding=1),
    )

vaekit.register_network("tinyconv", encoder, decoder)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_nets", raising=False)  # imported afresh, as a new process
    yield "my_nets"
    ARCHS.pop("tinyconv", None)
    sys.modules.pop("my_nets", None)


def test_a_registered_network_trains_saves_and_reloads_identically(plugin, synth, tmp_path):
    __import__(plugin)
    config = tiny_config(epochs=3)
    config.model.arch = "tinyconv"
    run = vaekit.train(config, tmp_path / "r", progress=False, data=synth)
    rows = run.history
    assert rows[-1]["test_neg_elbo"] < rows[0]["test_neg_elbo"]
    assert any(isinstance(m, nn.Conv2d) for m in run.model.modules())
    x = synth.test.x[:16]
    loaded = vaekit.load(run.path)
    for a, b in zip(run.model.encode(x), loaded.encode(x)):
        assert torch.equal(a, b)
    z = torch.randn(4, 2)
    assert torch.equal(run.model.decode_mean(z), loaded.decode_mean(z))


def test_cli_jobs_run_a_custom_network_through_plugin(plugin, tmp_path, capsys):
    data = tmp_path / "x.npy"
    import numpy as np

    np.save(data, np.random.default_rng(0).integers(0, 256, (80, 8, 8), dtype=np.uint8))
    run = tmp_path / "run"
    train = ["--plugin", plugin, "train", "--data", data, "--arch", "tinyconv", "--epochs", "1"]
    code, _, err = run_cli([*train, "--latent-dim", "2", "--out", run, "--quiet"], capsys)
    assert code == 0, err
    code, _, err = run_cli(
        ["--plugin", plugin, "reconstruct", run, "-o", tmp_path / "r.png"], capsys
    )
    assert code == 0, err
    assert (tmp_path / "r.png").exists()
    ARCHS.pop("tinyconv")  # a new process that did not load the plugin
    code, _, err = run_cli(["reconstruct", run, "-o", tmp_path / "r2.png"], capsys)
    assert_one_line_error(code, err)
    assert "unknown arch 'tinyconv'" in err and "--plugin" in err


def test_a_missing_plugin_is_one_line(capsys):
    code, _, err = run_cli(["--plugin", "no_such_module_xyz", "info", "x"], capsys)
    assert_one_line_error(code, err)
    assert "no_such_module_xyz" in err


def test_wrong_shapes_are_named_when_the_model_is_built():
    vaekit.register_network(
        "badnet",
        lambda shape, latent: nn.Flatten(),
        lambda shape, latent: nn.Linear(latent, 10),  # not (B, 1, 8, 8)
    )
    try:
        config = tiny_config()
        config.model.arch = "badnet"
        with pytest.raises(ConfigError, match=r"'badnet': the decoder returns \(2, 10\)"):
            vaekit.train(config, progress=False, outputs=False, data=(torch.rand(20, 8, 8)))
    finally:
        ARCHS.pop("badnet")
    with pytest.raises(ConfigError, match="built in"):
        vaekit.register_network("mlp", nn.Flatten, nn.Flatten)
