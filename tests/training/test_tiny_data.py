"""Tiny data: any dataset of 2 or more examples trains and leaves every picture `vaekit
train` promises (one test example is enough); 0 or 1 example is one error line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import assert_one_line_error, run_cli

KINDS = ("csv", "folder", "npy")
SMALL = ["--epochs", "1", "--hidden", "8", "--latent-dim", "3", "--n-samples", "4", "--quiet"]


def write_data(tmp_path: Path, kind: str, n: int) -> Path:
    """n random examples as CSV rows (3 columns), 8x8 PNGs in a folder, or a (n, 8, 8) .npy."""
    rng = np.random.default_rng(n)
    if kind == "csv":
        path = tmp_path / "rows.csv"
        rows = "".join(",".join(map(str, row)) + "\n" for row in rng.normal(size=(n, 3)))
        path.write_text("a,b,c\n" + rows)
    elif kind == "npy":
        path = tmp_path / "x.npy"
        np.save(path, rng.random((n, 8, 8)).astype(np.float32))
    else:
        path = tmp_path / "images"
        path.mkdir()
        for i in range(n):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(path / f"{i:02d}.png")
    return path


@pytest.mark.parametrize("n", range(2, 17))
@pytest.mark.parametrize("kind", KINDS)
def test_two_or_more_examples_train_and_draw_every_promised_picture(tmp_path, capsys, kind, n):
    data, out = write_data(tmp_path, kind, n), tmp_path / "run"
    code, stdout, err = run_cli(["train", "--data", data, "--out", out, *SMALL], capsys)
    assert code == 0, err
    assert (out / "model.safetensors").is_file()
    promised = re.search(r"run folder: .*\((.*)\)", stdout).group(1).split(", ")
    assert "latent.png" in promised and "loss_curves.png" in promised
    for name in promised:
        assert (out / name).is_file(), name
    if n <= 14:  # test_fraction 0.1: one test example, whose latent spread is not measured
        assert "active units not measured: they need at least 2 test examples" in stdout


@pytest.mark.parametrize("n", [0, 1])
@pytest.mark.parametrize("kind", KINDS)
def test_fewer_than_two_examples_is_one_error_line_naming_the_source(tmp_path, capsys, kind, n):
    data = write_data(tmp_path, kind, n)  # n = 0: a header only, an empty folder, (0, 8, 8)
    code, _, err = run_cli(["train", "--data", data, "--out", tmp_path / "run", *SMALL], capsys)
    assert_one_line_error(code, err)
    assert str(data) in err
    assert not (tmp_path / "run" / "model.safetensors").exists()
