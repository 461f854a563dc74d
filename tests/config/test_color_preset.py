"""The `color` preset and the hint printed when colour images train with the defaults."""

from __future__ import annotations

import pytest

import vaekit
from helpers import run_cli, save_png
from vaekit.config.presets import underfit_hint


def recorded(config: vaekit.RunConfig, shape: list[int], kind: str = "image") -> vaekit.RunConfig:
    config.data.shape, config.data.kind = shape, kind  # as training records them
    return config


def test_hint_only_for_colour_images_with_the_mlp_bernoulli_defaults():
    hint = underfit_hint(recorded(vaekit.RunConfig(), [3, 32, 32]))
    assert hint.startswith("hint: ") and "\n" not in hint and "--preset color" in hint
    assert underfit_hint(recorded(vaekit.RunConfig(), [1, 28, 28])) is None  # greyscale
    assert underfit_hint(recorded(vaekit.RunConfig(), [3], "table")) is None
    assert underfit_hint(recorded(vaekit.preset("color"), [3, 32, 32])) is None
    gaussian = vaekit.RunConfig()
    gaussian.model.likelihood = "gaussian"
    assert underfit_hint(recorded(gaussian, [3, 32, 32])) is None
    assert underfit_hint(vaekit.RunConfig()) is None  # shape not recorded yet


def test_color_preset_is_a_conv_net_with_a_discrete_likelihood():
    config = vaekit.preset("color")
    assert (config.model.arch, config.model.likelihood) == ("conv", "discretized-logistic")
    assert config.name == "vae-color" and config.validate() is config


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_cli_prints_the_hint_for_colour_folders_trained_with_defaults(tmp_path, capsys, mode):
    for i in range(12):
        save_png(tmp_path / "data" / f"{i}.png", size=(8, 8), mode=mode, seed=i)
    small = ["--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--quiet"]
    code, out, err = run_cli(
        ["train", "--data", tmp_path / "data", *small, "--out", tmp_path / "mlp"], capsys
    )
    assert code == 0, err
    hints = [line for line in err.splitlines() if line.startswith("hint:")]
    assert len(hints) == (1 if mode == "RGB" else 0)
    code, out, err = run_cli(
        ["train", "--data", tmp_path / "data", "--preset", "color", *small]
        + ["--channels", "4", "--out", tmp_path / "color"],
        capsys,
    )
    assert code == 0, err
    assert "hint:" not in err and "bits/dim" in out
