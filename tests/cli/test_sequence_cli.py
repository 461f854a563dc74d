"""Sequence runs on the command line: train -> sample -> reconstruct -> evaluate, and bad
input as one line with exit status 2."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from helpers import assert_one_line_error, grammar_lines, run_cli, write_lines
from vaekit.config.runs import RunFolder

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny GRUs, one thread
has_rdkit = importlib.util.find_spec("rdkit") is not None
has_selfies = importlib.util.find_spec("selfies") is not None
SMILES = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "CCCl", "O=C=O", "CC(C)O", "C#N", "CCOC", "CN"] * 4
TINY = ["--hidden", "16", "--latent-dim", "2", "--embedding-dim", "4", "--epochs", "2"]
TINY += ["--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    """A tiny seqvae trained through `vaekit train --data FILE.txt`."""
    root = tmp_path_factory.mktemp("seqcli")
    data = write_lines(root / "g.txt", grammar_lines(200))
    out = root / "run"
    code = run_cli_quietly(["train", "--data", data, *TINY, "--out", out])
    assert code == 0
    return out


def run_cli_quietly(args: list) -> int:
    from vaekit.cli import main

    return main([str(a) for a in args])


def test_train_defaults_to_seqvae_and_writes_text_outputs(text_run):
    config = RunFolder(text_run).load_config()
    assert config.model.name == "seqvae" and config.model.likelihood == "categorical"
    assert config.data.kind == "sequence" and config.model.vocab_size == 8
    assert config.data.vocabulary[4:] == list("abcd") and config.data.shape == [5]
    samples = (text_run / "samples.txt").read_text().splitlines()
    assert len(samples) == config.n_samples
    header, *pairs = (text_run / "reconstructions.txt").read_text().splitlines()
    assert header.startswith("# exact match of greedy decoding:") and " -> " in pairs[0]
    assert (text_run / "loss_curves.png").is_file() and not (text_run / "samples.png").exists()


def test_sample_reconstruct_evaluate_round_trip(text_run, tmp_path, capsys):
    out = tmp_path / "x.smi"
    code, stdout, err = run_cli(["sample", text_run, "-n", "7", "-o", out, "--seed", "3"], capsys)
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert len(lines) == 7 and all(set(line) <= set("abcd\ufffd") for line in lines)
    run_cli(["sample", text_run, "-n", "7", "-o", tmp_path / "y.txt", "--seed", "3"], capsys)
    assert (tmp_path / "y.txt").read_text() == out.read_text()  # same seed, same strings
    code, _, err = run_cli(["sample", text_run, "-n", "7", "-o", out, "--temperature", "0"], capsys)
    assert code == 0, err

    code, stdout, err = run_cli(["reconstruct", text_run, "-n", "5"], capsys)
    assert code == 0, err
    assert "exact match of greedy decoding:" in stdout and "of 20 test sequences" in stdout
    assert len((text_run / "reconstructions-5.txt").read_text().splitlines()) == 6

    args = ["evaluate", text_run, "--k", "1,10", "--quiet", "--no-probes"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "nats/token" in stdout and "exact match" in stdout and "20 test sequences" in stdout
    report = json.loads((text_run / "evaluation.json").read_text())
    assert report["kind"] == "sequence" and report["reconstruction_mse"] is None
    assert 0 <= report["reconstruction"]["exact_match"] <= 1
    assert report["elbo"]["nats_per_token"] == pytest.approx(
        report["elbo"]["neg_elbo"] / report["data_dims"]
    )
    assert [row["k"] for row in report["iwae"]] == [1, 10]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"ab\x00cd\n", "line 1: a NUL byte"),
        (b"", "no sequences"),
        (b"abc\n" * 3 + b"a" * 200 + b"\n", "line 4: 200 tokens, more than data.max_length 120"),
    ],
)
def test_bad_text_files_are_one_line_and_leave_no_run(tmp_path, capsys, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    code, _, err = run_cli(["train", "--data", path, *TINY, "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err)
    assert message in err and str(path) in err
    assert not (tmp_path / "r").exists()


def test_new_data_with_unknown_characters_names_the_line(text_run, tmp_path, capsys):
    new = write_lines(tmp_path / "new.txt", ["ab", "abz"])
    args = ["encode", text_run, "--data", new, "-o", tmp_path / "codes.csv"]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err)
    assert f"{new}: line 2: token 'z' is not in the vocabulary" in err
    assert not (tmp_path / "codes.csv").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["manifold"],
        ["serve"],
        ["export", "-o", "exported"],
        ["sample", "--label", "1"],
        ["sample", "-n", "2", "--top-k", "-1"],
    ],
)
def test_what_sequence_runs_cannot_do_yet_is_one_line(text_run, capsys, args):
    code, _, err = run_cli([args[0], text_run, *args[1:]], capsys)
    assert_one_line_error(code, err)


def test_image_runs_refuse_sequence_options(tiny_run, capsys):
    code, _, err = run_cli(["sample", tiny_run.path, "--temperature", "0.5"], capsys)
    assert_one_line_error(code, err)
    assert "sequence runs only" in err


def test_csv_column_of_smiles(tmp_path, capsys):
    path = tmp_path / "mols.csv"
    path.write_text("name,smiles\n" + "".join(f"m{i},{s}\n" for i, s in enumerate(SMILES)))
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        ["train", "--data", path, "--column", "smiles", *TINY, "--out", out], capsys
    )
    assert code == 0, err
    assert "nats per sequence" in stdout and "samples.smi" in stdout
    config = RunFolder(out).load_config()
    assert config.data.name == "sequences" and config.data.sequence_column == "smiles"
    assert (out / "samples.smi").is_file()


@pytest.mark.skipif(not (has_selfies and has_rdkit), reason="needs the molecules extra")
def test_selfies_run_samples_valid_molecules(tmp_path, capsys):
    from rdkit import Chem

    data = write_lines(tmp_path / "m.smi", SMILES)
    out = tmp_path / "run"
    args = ["train", "--data", data, "--tokens", "selfies", *TINY, "--out", out]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    code, stdout, err = run_cli(["sample", out, "-n", "20", "-o", tmp_path / "s.smi"], capsys)
    assert code == 0, err
    assert "valid SMILES (RDKit)" in stdout
    samples = [s for s in (tmp_path / "s.smi").read_text().splitlines() if s]
    assert samples and all(Chem.MolFromSmiles(s) is not None for s in samples)
