"""Run configuration: dataclasses that round-trip to JSON, and one clear error per bad value or file."""

from __future__ import annotations

import json

import pytest

import vaekit
from conftest import tiny_config
from vaekit.config import RunConfig
from vaekit.config.schema import CONFIG_VERSION
from vaekit.core.errors import ConfigError, RunError


def test_config_round_trips_through_dict_and_file(tmp_path):
    config = tiny_config(kl_warmup_epochs=2, beta=0.5)
    config.data.limit_train = 100
    config.data.shape = [1, 8, 8]
    assert RunConfig.from_dict(config.to_dict()) == config
    config.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == config
    assert RunConfig.from_dict(json.loads(json.dumps(RunConfig().to_dict()))) == RunConfig()


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"train": {"epochz": 3}}, "epochz"),
        ({"model": {"hidden": "400"}}, "model.hidden"),
        ({"model": {"hidden": [400, "x"]}}, "model.hidden[1]"),
        ({"train": {"epochs": 2.5}}, "train.epochs"),
        ({"train": {"epochs": True}}, "train.epochs"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"data": {"limit_train": "all"}}, "data.limit_train"),
        ({"train": "fast"}, "train"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"lr": -1.0}}, "train.lr"),
        ({"train": {"beta": -0.1}}, "train.beta"),
        ({"model": {"latent_dim": 0}}, "model.latent_dim"),
        ({"model": {"hidden": []}}, "model.hidden"),
        ({"data": {"binarize": "static"}}, "data.binarize"),
        ({"data": {"limit_test": 0}}, "data.limit_test"),
        ({"train": {"precision": "fp8"}}, "train.precision"),
        ({"train": {"device": "tpu"}}, "train.device"),
        ({"n_samples": 0}, "n_samples"),
    ],
)
def test_bad_config_values_name_the_key(patch, key):
    raw = RunConfig().to_dict()
    for section, value in patch.items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict):
            raw[section].update(value)
        else:
            raw[section] = value
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(raw)
    assert key in str(info.value)


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train": {"epochz": 3}}))
    with pytest.raises(ConfigError, match=f"{path}.*epochz"):
        RunConfig.load(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=f"{path}: not valid JSON"):
        RunConfig.load(path)
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.load(tmp_path / "absent.json")


def test_newer_config_version_is_refused(tmp_path):
    raw = RunConfig().to_dict() | {"version": CONFIG_VERSION + 1}
    with pytest.raises(ConfigError, match="newer"):
        RunConfig.from_dict(raw)
    run = tmp_path / "future"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(raw))
    with pytest.raises(RunError, match="newer"):
        vaekit.load(run)
