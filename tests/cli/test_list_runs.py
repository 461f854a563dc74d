"""`vaekit runs`: the table of run folders, --json, damaged folders, a missing DIR."""

from __future__ import annotations

import json

import pytest

import vaekit
from conftest import tiny_config
from helpers import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def runs_dir(synth, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    for name, epochs in (("one", 1), ("two", 2), ("three", 1)):
        config = tiny_config(epochs=epochs)
        vaekit.train(config, base / name, progress=False, outputs=False, data=synth)
    (base / "not-a-run").mkdir()  # no config.json: skipped
    (base / "notes.txt").write_text("not a folder")
    return base


def test_runs_lists_the_run_folders(runs_dir, capsys):
    code, out, err = run_cli(["runs", runs_dir], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["run", "model", "data", "epochs"]
    assert len(lines) == 4
    assert "not-a-run" not in out
    assert "2/2" in out and "1/1" in out and "nats (-ELBO)" in out


def test_runs_json_parses(runs_dir, capsys):
    code, out, err = run_cli(["runs", runs_dir, "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [row["run"].rsplit("/", 1)[-1] for row in rows] == ["one", "three", "two"]
    assert all(row["model"] == "vae" and row["test"] > 0 and row["note"] is None for row in rows)
    assert [row["epochs"] for row in rows] == ["1/1", "1/1", "2/2"]


def test_runs_notes_a_damaged_folder(runs_dir, tmp_path, capsys):
    import shutil

    shutil.copytree(runs_dir / "one", tmp_path / "one")
    shutil.copytree(runs_dir / "two", tmp_path / "two")
    (tmp_path / "one" / "metrics.jsonl").write_text("{not json\n")
    (tmp_path / "two" / "config.json").write_text("[]")
    code, out, err = run_cli(["runs", tmp_path, "--json"], capsys)
    assert code == 0, err
    one, two = json.loads(out)
    assert "metrics" in one["note"] and one["model"] == "vae"
    assert "config" in two["note"] and two["test"] > 0


def test_runs_of_a_missing_dir_is_one_line(tmp_path, capsys):
    assert_one_line_error(*run_cli(["runs", tmp_path / "missing"], capsys)[::2])
