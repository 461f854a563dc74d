"""A table run (rows of features, not pictures) gets per-feature plots from every command
that draws: sample, reconstruct, latent, manifold, interpolate, traverse and the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import assert_one_line_error, run_cli

FEATURES = ["height", "weight", "age", "score", "noise"]


@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> Path:
    """A VAE trained for one epoch on 150 rows of 5 correlated features, through the CLI."""
    root = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(150, 2))
    x = z @ rng.normal(size=(2, 5)) + 0.1 * rng.normal(size=(150, 5))
    lines = [",".join([*FEATURES, "label"])]
    lines += [",".join([*(f"{v:.4f}" for v in r), "ab"[int(r[0] > 0)]]) for r in x]
    (root / "rows.csv").write_text("\n".join(lines) + "\n")
    from vaekit.cli import main

    args = ["train", "--data", root / "rows.csv", "--label-column", "label", "--epochs", "1"]
    args += ["--hidden", "8", "--latent-dim", "3", "--quiet", "--out", root / "run"]
    assert main([str(a) for a in args]) == 0
    return root / "run"


COMMANDS = {
    "sample": ["sample", "{run}", "-n", "50"],
    "reconstruct": ["reconstruct", "{run}", "-n", "20"],
    "latent": ["latent", "{run}", "--method", "pca"],
    "manifold": ["manifold", "{run}", "--grid", "5"],
    "interpolate": ["interpolate", "{run}", "--from", "0", "--to", "3", "--steps", "6"],
    "traverse": ["traverse", "{run}", "--steps", "5"],
    "report": ["report", "{run}"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_table_commands_draw_per_feature_plots(table_run, command, capsys, monkeypatch):
    monkeypatch.setattr(
        "vaekit.plots.image_grid", lambda *a, **k: pytest.fail("an image grid of a table")
    )
    argv = [a.format(run=table_run) for a in COMMANDS[command]]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    written = [Path(p) for p in out.split("wrote ")[-1].strip().replace(" and ", ", ").split(", ")]
    for path in written:
        assert path.is_file() and path.stat().st_size > 1000, path
        if path.suffix == ".png":
            with Image.open(path) as image:
                assert min(image.size) > 100
    if command in ("sample", "reconstruct", "interpolate", "traverse", "manifold"):
        assert written[0].suffix == ".png"


def test_a_table_interpolates_between_rows_not_files(table_run, tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"")
    argv = ["interpolate", table_run, "--from", tmp_path / "x.png", "--to", "1"]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err)
    assert "row" in err


def test_every_number_printed_for_a_table_states_a_table_unit(table_run, capsys):
    code, out, err = run_cli(["info", table_run], capsys)
    assert code == 0, err
    assert "nats/example" in out and "nats/image" not in out and "bits/dim" not in out
    code, out, err = run_cli(["reconstruct", table_run, "-n", "10"], capsys)
    assert code == 0, err
    assert "per feature" in out and "pixel" not in out and "images" not in out
