"""Run folders: files are validated before use and carry the run-folder format version."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import vaekit
from helpers import assert_one_line_error, run_cli
from vaekit.config.runs import FORMAT_VERSION, RunFolder
from vaekit.config.schema import RunConfig
from vaekit.core.errors import ConfigError, RunError

WEIGHTS = "model.safetensors"


def copy_run(tiny_run, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run.path, tmp_path / "run"))


def metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["vaekit"])


def rewrite(path: Path, tensors: dict | None = None, meta: dict | None = None) -> None:
    """Write `path` again with other tensors and/or metadata."""
    tensors = load_file(str(path)) if tensors is None else tensors
    meta = metadata(path) if meta is None else meta
    save_file(tensors, str(path), metadata={"vaekit": json.dumps(meta)})


# --- metrics.jsonl ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "row", ["[1, 2]", "{}", '{"epoch": "one"}', '{"epoch": 1, "test_kl": "x"}']
)
def test_info_refuses_a_metrics_row_that_is_not_a_row(tiny_run, tmp_path, capsys, row):
    run = copy_run(tiny_run, tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(row + "\n")
    code, _, err = run_cli(["info", run], capsys)
    assert_one_line_error(code, err)
    assert f"{run / 'metrics.jsonl'}:3: " in err, err


def test_read_metrics_names_the_line(tmp_path):
    folder = RunFolder(tmp_path)
    folder.metrics_path.write_text('{"epoch": 1, "test_mse": 0.5}\n[]\n')
    with pytest.raises(RunError, match=re.escape(f"{folder.metrics_path}:2: ")):
        folder.read_metrics()


# --- weights of another dtype -------------------------------------------------------------
def test_weights_of_another_dtype_are_refused(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    tensors = {k: v.to(torch.int8) for k, v in load_file(str(run / WEIGHTS)).items()}
    rewrite(run / WEIGHTS, tensors)
    with pytest.raises(RunError, match="int8"):
        vaekit.load(run)
    code, _, err = run_cli(["sample", run, "-n", "4"], capsys)
    assert_one_line_error(code, err)
    assert f"{run / WEIGHTS}: " in err and "int8" in err and "float32" in err


# --- config files: deep nesting, size -----------------------------------------------------
def test_a_deeply_nested_config_is_one_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"name": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        RunConfig.load(path)


def test_a_config_nested_within_the_parser_limit_is_refused_too(tmp_path):
    path = tmp_path / "deep.json"
    deep = '{"features_model": ' + '{"a": ' * 500 + "1" + "}" * 500 + "}"
    path.write_text('{"model": ' + deep + "}")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*nested"):
        RunConfig.load(path)


def test_a_huge_config_file_is_refused_unread(tmp_path):
    path = tmp_path / "huge.json"
    path.write_text('{"name": "' + "x" * 2_000_000 + '"}')
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*too large"):
        RunConfig.load(path)


# --- the run-folder format version --------------------------------------------------------
def test_new_runs_record_the_format_version(tiny_run):
    config = json.loads((tiny_run.path / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION and "version" not in config
    for name in (WEIGHTS, "checkpoint.safetensors"):
        assert metadata(tiny_run.path / name)["format_version"] == FORMAT_VERSION


def test_runs_without_a_format_version_still_load(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    raw = json.loads((run / "config.json").read_text())
    del raw["format_version"]
    (run / "config.json").write_text(json.dumps(raw | {"version": 1}))  # today's runs
    for name in (WEIGHTS, "checkpoint.safetensors"):
        meta = metadata(run / name)
        del meta["format_version"]
        rewrite(run / name, meta=meta)
    assert RunFolder(run).load_config().format_version == FORMAT_VERSION  # migrated
    model = vaekit.load(run)
    assert torch.equal(
        model.state_dict()[next(iter(model.state_dict()))].cpu(),
        tiny_run.model.state_dict()[next(iter(model.state_dict()))].cpu(),
    )


NEWER = f"written by a newer vaekit (format {FORMAT_VERSION + 1}; this vaekit reads up to {FORMAT_VERSION})"


def test_a_newer_config_is_refused_by_name(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    raw = json.loads((run / "config.json").read_text())
    raw |= {"format_version": FORMAT_VERSION + 1, "a_future_key": 1}
    (run / "config.json").write_text(json.dumps(raw))
    code, _, err = run_cli(["info", run], capsys)
    assert_one_line_error(code, err)
    assert f"{run / 'config.json'}: {NEWER}" in err, err


@pytest.mark.parametrize("name", [WEIGHTS, "checkpoint.safetensors"])
def test_newer_weights_are_refused_by_name(tiny_run, tmp_path, name):
    run = copy_run(tiny_run, tmp_path)
    if name != WEIGHTS:
        (run / WEIGHTS).unlink()
    rewrite(run / name, meta=metadata(run / name) | {"format_version": FORMAT_VERSION + 1})
    with pytest.raises(RunError, match=re.escape(f"{run / name}: {NEWER}")):
        vaekit.load(run)
