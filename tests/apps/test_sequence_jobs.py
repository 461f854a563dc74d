"""The jobs on sequence runs beyond sample/reconstruct/evaluate: interpolate between two
strings, the HTML report (text, or molecule drawings with RDKit), encode and anomaly with
and without --data, and train --report."""

from __future__ import annotations

import csv
import html
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from helpers import assert_one_line_error, grammar_lines, run_cli, write_lines
from vaekit.apps.explore import latent_path, pick_test_image, traversal_codes
from vaekit.apps.explore import open_run as open_explore
from vaekit.cli import main
from vaekit.data.sequences import vocabulary_of
from vaekit.evaluation.sequences import sample_strings, tokenize_strings
from vaekit.models.loading import open_run

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny GRUs, one thread
has_rdkit = importlib.util.find_spec("rdkit") is not None
needs_rdkit = pytest.mark.skipif(not has_rdkit, reason="needs the molecules extra (RDKit)")
SMILES = ["CCO", "CCCO", "CC(=O)O", "CCN", "CCCl", "CC(C)O", "CCOC", "CN", "CCCC", "OCCO"] * 6
TINY = ["--hidden", "16", "--latent-dim", "2", "--embedding-dim", "4", "--batch-size", "16"]
TINY += ["--lr", "0.01", "--quiet"]


def train(args: list) -> None:
    assert main([str(a) for a in ["train", *args, *TINY]]) == 0


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("textjobs")
    data = write_lines(root / "g.txt", grammar_lines(200))
    train(["--data", data, "--epochs", "2", "--out", root / "run"])
    return root / "run"


@pytest.fixture(scope="module")
def molecule_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("moljobs")
    data = write_lines(root / "m.smi", SMILES)
    train(["--data", data, "--epochs", "8", "--out", root / "run"])
    return root / "run"


def expected_path(run_dir: Path, source: str, target: str, steps: int, method: str) -> list[str]:
    """The greedy decodings along the path, computed here from the model's own pieces."""
    run = open_run(run_dir)
    tokens = tokenize_strings([source, target], run.config.data, "test")
    means, _ = run.model.encode(tokens.long())
    z = latent_path(means[0].detach(), means[1].detach(), steps, method)
    return vocabulary_of(run.config.data).decode(run.model.generate(z))


# --- interpolate --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolate_writes_the_decoded_path_one_string_per_line(text_run, capsys, method):
    output = text_run / f"path-{method}.txt"
    args = ["interpolate", text_run, "--from", "abc", "--to", "dcba", "--steps", "6"]
    code, stdout, err = run_cli([*args, "--method", method, "-o", output], capsys)
    assert code == 0, err
    strings = output.read_text().splitlines()
    assert strings == expected_path(text_run, "abc", "dcba", 6, method)
    printed = [line for line in stdout.splitlines() if line.startswith("t=")]
    assert [line.split()[0] for line in printed] == [f"t={t:.2f}" for t in torch.linspace(0, 1, 6)]
    assert [line[8:].strip() for line in printed] == [s.strip() for s in strings]
    assert "valid" not in stdout  # a text run: no SMILES validity


def test_interpolate_default_file_sits_beside_training_outputs(text_run, capsys):
    before = (text_run / "samples.txt").read_bytes()
    code, stdout, err = run_cli(["interpolate", text_run, "--from", "ab", "--to", "cd"], capsys)
    assert code == 0, err
    assert f"wrote {text_run / 'interpolation.txt'}" in stdout
    assert len((text_run / "interpolation.txt").read_text().splitlines()) == 10
    args = ["interpolate", text_run, "--from", "ab", "--to", "cd", "-o", text_run / "samples.txt"]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err)
    assert "a file training wrote" in err
    assert (text_run / "samples.txt").read_bytes() == before


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("abz", "--from 'abz': token 'z' is not in the vocabulary"),
        ("", "--from: an empty string"),
        ("abcdabcd", "--from 'abcdabcd': 8 tokens, more than this run's longest sequences"),
    ],
)
def test_interpolate_bad_strings_are_one_line(text_run, tmp_path, capsys, source, message):
    output = tmp_path / "path.txt"
    args = ["interpolate", text_run, "--from", source, "--to", "ab", "-o", output]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err)
    assert message in err
    assert not output.exists()


@needs_rdkit
def test_interpolate_molecules_marks_valid_smiles(molecule_run, capsys):
    from rdkit import Chem

    args = ["interpolate", molecule_run, "--from", "CCO", "--to", "CC(=O)O", "--steps", "5"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    strings = (molecule_run / "interpolation.smi").read_text().splitlines()
    marks = [line.split()[-1] for line in stdout.splitlines() if line.startswith("t=")]
    truth = ["valid" if s and Chem.MolFromSmiles(s) is not None else "invalid" for s in strings]
    assert marks == truth
    assert f"valid SMILES (RDKit): {truth.count('valid')} of 5" in stdout


@pytest.mark.skipif(
    not (has_rdkit and importlib.util.find_spec("selfies")), reason="needs the molecules extra"
)
def test_interpolate_selfies_run_takes_smiles_and_decodes_valid_molecules(tmp_path, capsys):
    data = write_lines(tmp_path / "m.smi", SMILES)
    train(["--data", data, "--tokens", "selfies", "--epochs", "2", "--out", tmp_path / "run"])
    args = ["interpolate", tmp_path / "run", "--from", "CCO", "--to", "CC(=O)O", "--steps", "4"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "valid SMILES (RDKit): 4 of 4" in stdout  # SELFIES decode to molecules only


def test_interpolate_molecules_without_rdkit_says_why(molecule_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rdkit", None)  # `import rdkit` fails as if not installed
    args = ["interpolate", molecule_run, "--from", "CCO", "--to", "CCN", "--steps", "3"]
    code, stdout, err = run_cli([*args, "-o", tmp_path / "p.smi"], capsys)
    assert code == 0, err
    assert "validity not marked:" in stdout and "vaekit[molecules]" in stdout
    assert len((tmp_path / "p.smi").read_text().splitlines()) == 3


# --- report --------------------------------------------------------------------------------
def sections(page: str) -> dict[str, str]:
    """The report's sections by their heading."""
    parts = re.findall(r"<section><h2>(.*?)</h2>(.*?)</section>", page, flags=re.S)
    return dict(parts)


def molecule_cells(section: str) -> list[tuple[str, str, str]]:
    """(class, picture, label) of each cell of a section's molecule grid ("mol empty": a gap)."""
    cells = []
    for cell in section.split('<div class="mol')[2:]:  # after the grid's own div
        kind, rest = cell.split('">', 1)
        label = re.search(r"<div>([^<]*)</div></div>", rest)
        cells.append((f"mol{kind}", rest, html.unescape(label.group(1)) if label else ""))
    return cells


def test_report_of_a_text_run_shows_strings(text_run, tmp_path, capsys):
    output = tmp_path / "report.html"
    code, _, err = run_cli(["report", text_run, "-o", output], capsys)
    assert code == 0, err
    page = output.read_text()
    parts = sections(page)
    assert {"Samples", "Reconstructions", "Interpolation", "Loss curves"} <= set(parts)
    run = open_run(text_run)
    samples = sample_strings(run.model, vocabulary_of(run.config.data), 32, seed=0)
    shown = re.findall(r"<td><code>(.*?)</code></td>", parts["Samples"])
    assert shown == [html.escape(text) or "&nbsp;" for text in samples]
    assert parts["Reconstructions"].count("<tr>") == 1 + 16  # header + the shown pairs
    assert parts["Interpolation"].count("<td>t=") == 10
    assert "nats per sequence" in page and "<svg" not in page
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing outside the file


@needs_rdkit
def test_report_of_a_molecule_run_draws_structures(molecule_run, tmp_path, capsys):
    from rdkit import Chem

    output = tmp_path / "report.html"
    code, _, err = run_cli(["report", molecule_run, "-o", output], capsys)
    assert code == 0, err
    parts = sections(output.read_text())
    cells = molecule_cells(parts["Samples"])
    assert len(cells) == 32
    for kind, picture, label in cells:
        smiles = label.removeprefix("INVALID ")
        valid = bool(smiles) and Chem.MolFromSmiles(smiles) is not None
        assert (kind == "mol") == valid and picture.startswith("<svg") == valid, label
        assert label.startswith("INVALID") != valid
    n_valid = sum(kind == "mol" for kind, _, _ in cells)
    assert f"{n_valid} of 32 decoded strings are valid SMILES (RDKit)" in parts["Samples"]
    test = (molecule_run.parent / "m.smi").read_text().splitlines()  # the split is seeded
    cells = molecule_cells(parts["Reconstructions"])  # 6 test molecules, 2 gaps, 6 decodings, 2
    assert [kind for kind, _, _ in cells[6:8] + cells[14:]] == ["mol empty"] * 4
    assert all(label in test and kind == "mol" for kind, _, label in cells[:6])
    assert [label[:2] for _, _, label in cells[8:14]] == [
        "= " if a[2] == b[2][2:] else "x " for a, b in zip(cells[:6], cells[8:14])
    ]
    assert "<svg" in parts["Interpolation"]


def test_report_of_a_molecule_run_without_rdkit_is_text(
    molecule_run, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "rdkit", None)
    output = tmp_path / "report.html"
    code, _, err = run_cli(["report", molecule_run, "-o", output], capsys)
    assert code == 0, err
    page = output.read_text()
    assert "<svg" not in page
    assert page.count("Drawings of the molecules need the molecules extra") == 1
    run = open_run(molecule_run)
    samples = sample_strings(run.model, vocabulary_of(run.config.data), 32, seed=0)
    shown = re.findall(r"<td><code>(.*?)</code></td>", sections(page)["Samples"])
    assert shown == [html.escape(text) or "&nbsp;" for text in samples]
    assert "valid SMILES" not in page  # not measured: no claim


def test_train_report_flag_works_for_sequences(tmp_path, capsys):
    data = write_lines(tmp_path / "g.txt", grammar_lines(60))
    args = ["train", "--data", data, *TINY, "--epochs", "1", "--out", tmp_path / "r", "--report"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert f"report: {tmp_path / 'r' / 'report.html'}" in stdout
    assert "Interpolation" in (tmp_path / "r" / "report.html").read_text()


# --- traverse ----------------------------------------------------------------------------
def test_traverse_decodes_each_dimension_around_a_test_molecule(molecule_run, capsys):
    args = ["traverse", molecule_run, "--index", "2", "--steps", "5", "--range", "2"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    lines = (molecule_run / "traversal.txt").read_text().splitlines()
    run = open_run(molecule_run)
    blocks = [i for i, line in enumerate(lines) if line.startswith("# z[")]
    assert len(blocks) == 2  # both latent dimensions, highest KL first
    # each row: the greedy decoding of the test code with one dimension set to the value
    explore = open_explore(molecule_run)
    x, _ = pick_test_image(explore.test, 2)
    means, _ = run.model.encode(x[None].long())
    dims = [int(lines[b].split("[")[1].split("]")[0]) for b in blocks]
    z = traversal_codes(means.detach()[0], dims, 2.0, 5)
    expected = vocabulary_of(run.config.data).decode(run.model.generate(z))
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    assert [r[1] for r in rows] == expected
    assert [float(r[0]) for r in rows[:5]] == [-2.0, -1.0, 0.0, 1.0, 2.0]
    if has_rdkit:
        assert all(r[2] in ("valid", "invalid") for r in rows)
    assert "traversed 2 dims" in stdout and expected[0] in stdout


def test_traverse_of_a_text_run_has_no_validity_marks(text_run, capsys, tmp_path):
    args = ["traverse", text_run, "--dims", "1", "--steps", "3", "-o", tmp_path / "t.txt"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    rows = [ln.split("\t") for ln in (tmp_path / "t.txt").read_text().splitlines() if ln[0] != "#"]
    assert len(rows) == 3 and all(len(r) == 2 for r in rows)
    code, _, err = run_cli(["traverse", text_run, "--dims", "9"], capsys)
    assert_one_line_error(code, err)
    assert "--dims 9: no such latent dimension" in err


# --- encode and anomaly --------------------------------------------------------------------
def test_encode_test_split_and_own_file(molecule_run, tmp_path, capsys):
    code, stdout, err = run_cli(["encode", molecule_run, "-o", tmp_path / "test.csv"], capsys)
    assert code == 0, err
    assert len(list(csv.DictReader((tmp_path / "test.csv").open()))) == 6  # 10% of 60
    new = tmp_path / "new.smi"
    new.write_text("CCO first\n\nCCCC second\n")  # a .smi line: SMILES then a name
    code, stdout, err = run_cli(
        ["encode", molecule_run, "--data", new, "-o", tmp_path / "n.csv"], capsys
    )
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "n.csv").open()))
    assert [row["id"] for row in rows] == ["1", "3"]  # file lines; the blank one left out
    assert [row["smiles"] for row in rows] == ["CCO", "CCCC"]  # the molecule beside its id
    run = open_run(molecule_run)
    means, _ = run.model.encode(tokenize_strings(["CCO", "CCCC"], run.config.data, "t").long())
    got = torch.tensor([[float(row[f"z_mean_{d}"]) for d in range(2)] for row in rows])
    torch.testing.assert_close(got, means.detach(), atol=1e-5, rtol=1e-4)


def test_anomaly_scores_unusual_molecules_higher(molecule_run, tmp_path, capsys):
    code, stdout, err = run_cli(["anomaly", molecule_run, "--quiet", "-o", tmp_path / "a"], capsys)
    assert code == 0, err
    assert "scored 6 examples" in stdout
    new = write_lines(tmp_path / "new.smi", ["CCO", "CCCO", "((((((", "=O(=C("])
    args = ["anomaly", molecule_run, "--data", new, "--quiet", "-o", tmp_path / "b"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "b" / "scores.csv").open()))
    scores = [float(row["score"]) for row in rows]
    assert len(scores) == 4 and max(scores[:2]) < min(scores[2:])  # nats: training-like first
    assert [row["smiles"] for row in rows] == ["CCO", "CCCO", "((((((", "=O(=C("]
    top = json.loads((tmp_path / "b" / "summary.json").read_text())["most_anomalous"]
    assert {row["smiles"] for row in top[:2]} == {"((((((", "=O(=C("}
    assert [row["score"] for row in top] == sorted(scores, reverse=True)
    assert "highest scores: " + top[0]["smiles"] in stdout
