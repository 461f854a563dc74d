"""The command line: one-line errors with exit code 2, help texts, and a tiny real session."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import RUN_FILES
from helpers import assert_one_line_error, run_cli
from vaekit.cli import main, make_parser


def command_names() -> list[str]:
    """Every registered sub-command (so commands added later are checked too)."""
    parser = make_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """A tiny run trained through `vaekit train` on a slice of the built-in MNIST."""
    out = tmp_path_factory.mktemp("cli") / "run"
    args = ["train", "--limit-train", "512", "--limit-test", "256", "--epochs", "1"]
    args += ["--hidden", "64", "--latent-dim", "4", "--quiet", "--out", str(out)]
    code = main(args)
    assert code == 0
    return out


# --- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--lr", "-1"], "--lr"),
        (["train", "--lr", "fast"], "--lr"),
        (["train", "--hidden", "400,0"], "--hidden"),
        (["train", "--preset", "no-such-preset"], "--preset"),
        (["train", "--resume", "somewhere", "--lr", "0.1"], "--resume"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_arguments_give_one_line(capsys, args, mentions):
    code, out, err = run_cli(args, capsys)
    assert_one_line_error(code, err)
    assert mentions in err


def test_unknown_dataset_gives_one_line_and_no_folder(capsys, tmp_path):
    code, _, err = run_cli(["train", "--dataset", "nope", "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err)
    assert "unknown dataset 'nope'" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["sample", "info", "reconstruct"])
def test_missing_run_folder(capsys, tmp_path, command):
    code, _, err = run_cli([command, tmp_path / "absent"], capsys)
    assert_one_line_error(code, err)
    assert f"{tmp_path / 'absent'}: run folder not found" in err


def test_resume_of_a_missing_run(capsys, tmp_path):
    code, _, err = run_cli(["train", "--resume", tmp_path / "absent"], capsys)
    assert_one_line_error(code, err)
    assert "run folder not found" in err


def test_config_file_with_unknown_key(capsys, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"train": {"epochz": 1}}))
    code, _, err = run_cli(["train", "--config", path, "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err)
    assert str(path) in err and "epochz" in err


def test_non_png_output_is_refused(capsys, tiny_run, tmp_path):
    code, _, err = run_cli(["sample", tiny_run.path, "-o", tmp_path / "x.jpg"], capsys)
    assert_one_line_error(code, err)
    assert "x.jpg" in err and ".png" in err
    assert not (tmp_path / "x.jpg").exists()


def test_errors_from_a_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vaekit", "info", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(result.returncode, result.stderr)
    assert result.stderr.startswith("vaekit: error:") and result.stdout == ""


@pytest.mark.parametrize("command", [None, *command_names()])
def test_help(capsys, command):
    code, out, err = run_cli(["--help"] if command is None else [command, "--help"], capsys)
    assert code == 0 and err == ""
    assert out.startswith("usage: vaekit")


def test_version(capsys):
    import vaekit

    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"vaekit {vaekit.__version__}"


# --- a successful session ---------------------------------------------------------------------
def test_train_writes_a_run_folder(cli_run):
    names = {p.name for p in cli_run.iterdir()}
    assert {"config.json", "model.safetensors", "checkpoint.safetensors", "metrics.jsonl"} <= names
    assert set(RUN_FILES) <= names
    config = json.loads((cli_run / "config.json").read_text())
    assert config["data"]["limit_train"] == 512 and config["model"]["hidden"] == [64]
    assert config["data"]["shape"] == [1, 28, 28]


def test_sample_writes_a_png(capsys, cli_run, tmp_path):
    output = tmp_path / "x.png"
    code, out, err = run_cli(["sample", cli_run, "-n", "8", "-o", output], capsys)
    assert code == 0, err
    assert str(output) in out
    with Image.open(output) as image:
        image.verify()
    with Image.open(output) as image:
        width, height = image.size
    # 8 images -> a 3x3 grid of 28-pixel tiles (with padding), enlarged 2x
    assert width == height and 3 * 28 * 2 <= width < 3 * 36 * 2


def test_info_json(capsys, cli_run):
    code, out, err = run_cli(["info", cli_run, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["epochs_done"] == 1 and summary["dataset"] == "mnist"
    # 784-64-(2x4) encoder + 4-64-784 decoder
    assert summary["parameters"] == (784 * 64 + 64) + (64 * 8 + 8) + (4 * 64 + 64) + (
        64 * 784 + 784
    )
    assert summary["final"]["test_neg_elbo"] > 0
    assert "model.safetensors" in summary["files"]


def test_info_and_reconstruct_text(capsys, cli_run, tmp_path):
    code, out, err = run_cli(["info", cli_run], capsys)
    assert code == 0, err
    assert "test -ELBO" in out and "nats" in out
    output = tmp_path / "rec.png"
    code, out, err = run_cli(["reconstruct", cli_run, "-n", "8", "-o", output], capsys)
    assert code == 0, err
    assert "MSE" in out and "256 test images" in out
    with Image.open(output) as image:
        image.verify()
