"""`vaekit optimize`: on a tiny SMILES corpus trained for a few seconds, every molecule it
reports is valid, novel, and carries the value RDKit computes; bad requests are one line."""

from __future__ import annotations

import csv
import importlib.util
import random
import re
import sys
from pathlib import Path

import pytest

from helpers import assert_one_line_error, grammar_lines, run_cli, write_lines
from vaekit.apps.optimize import optimize_run
from vaekit.cli import main
from vaekit.core.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny GRUs, one thread
has_rdkit = importlib.util.find_spec("rdkit") is not None
needs_rdkit = pytest.mark.skipif(not has_rdkit, reason="needs the molecules extra (RDKit)")
ROW = re.compile(r"^\s*(\d+)\s+(-?\d+\.\d{4})\s+(\S+)$")  # rank, value, SMILES


def small_molecules(n: int = 300, seed: int = 0) -> list[str]:
    """n distinct acyclic SMILES that RDKit reads by construction: a backbone of C, N and O,
    at most one branch per non-terminal carbon ((C), (O), (N), (=O), (CC)), (C) on a
    non-terminal nitrogen."""
    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < n:
        atoms = ["C", *rng.choices("CCCNO", k=rng.randint(1, 6))]
        text = ""
        for i, atom in enumerate(atoms):
            branch, last = "", i == len(atoms) - 1
            if atom == "C" and not last:
                branch = rng.choice(["", "", "(C)", "(O)", "(N)", "(=O)", "(CC)"])
            elif atom == "N" and not last:
                branch = rng.choice(["", "(C)"])
            text += atom + branch
        found[text] = None
    return list(found)


def train(data: Path, out: Path) -> Path:
    args = ["train", "--data", data, "--hidden", "32,64", "--latent-dim", "8"]
    args += ["--embedding-dim", "8", "--epochs", "15", "--batch-size", "32", "--lr", "0.005"]
    args += ["--free-bits", "0.5", "--word-dropout", "0.25", "--out", out, "--quiet"]
    assert main([str(a) for a in args]) == 0
    return out


@pytest.fixture(scope="module")
def molecule_run(tmp_path_factory) -> Path:
    """A seqvae on 300 small molecules, 15 epochs (about 4 s on one thread)."""
    root = tmp_path_factory.mktemp("optimize")
    return train(write_lines(root / "m.smi", small_molecules()), root / "run")


def training_molecules(run: Path) -> set[str]:
    """The canonical SMILES of the run's training split (its seeded split of m.smi)."""
    from rdkit import Chem

    from vaekit.data import load_data
    from vaekit.data.sequences import vocabulary_of
    from vaekit.models.loading import open_run

    config = open_run(run).config.data
    strings = vocabulary_of(config).decode(load_data(config).train.storage)
    return {Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in strings}


def rdkit_value(prop: str, smiles: str) -> float:
    from rdkit import Chem
    from rdkit.Chem import QED

    molecule = Chem.MolFromSmiles(smiles)
    if prop == "qed":
        return QED.qed(molecule)
    from rdkit.Contrib.SA_Score import sascorer

    return sascorer.calculateScore(molecule)


@needs_rdkit
@pytest.mark.parametrize("prop", ["qed", "sa"])
def test_reported_molecules_are_valid_novel_and_truly_scored(molecule_run, tmp_path, capsys, prop):
    from rdkit import Chem

    output = tmp_path / f"{prop}.csv"
    args = ["optimize", molecule_run, "--property", prop, "--starts", "20", "--steps", "40"]
    code, stdout, err = run_cli([*args, "--top", "5", "-o", output, "--quiet"], capsys)
    assert code == 0, err
    rows = [m.groups() for line in stdout.splitlines() if (m := ROW.match(line))]
    assert [int(rank) for rank, _, _ in rows] == [1, 2, 3, 4, 5]
    known = training_molecules(molecule_run)
    higher = prop == "qed"
    for _, printed, smiles in rows:
        molecule = Chem.MolFromSmiles(smiles)
        assert molecule is not None  # valid
        assert Chem.MolToSmiles(molecule) not in known  # novel
        assert float(printed) == round(rdkit_value(prop, smiles), 4)  # its true value
    values = [float(v) for _, v, _ in rows]
    assert values == sorted(values, reverse=higher)  # best first: lower is better for sa

    table = list(csv.DictReader(output.open()))
    assert list(table[0]) == ["smiles", prop, "is_novel"]
    for row in table:
        assert row["is_novel"] == str(int(row["smiles"] not in known))
        assert float(row[prop]) == pytest.approx(rdkit_value(prop, row["smiles"]), abs=1e-9)
    novel = [row["smiles"] for row in table if row["is_novel"] == "1"]
    assert novel[:5] == [smiles for _, _, smiles in rows]  # the table is the CSV's novel head
    assert len({row["smiles"] for row in table}) == len(table)  # distinct molecules

    line = next(x for x in stdout.splitlines() if x.startswith("training molecules scored"))
    best = float(line.rsplit("best ", 1)[1])
    truth = [rdkit_value(prop, s) for s in known]
    assert best == round(max(truth) if higher else min(truth), 4)
    beat = int(re.search(r"; (\d+) beat its best", stdout).group(1))
    assert beat == sum(v > best if higher else v < best for v in values)


@needs_rdkit
def test_optimize_is_reproducible_and_checks_its_counts(molecule_run, tmp_path):
    kwargs = {"steps": 10, "starts": 5, "top": 3, "progress": False}
    first = optimize_run(molecule_run, "logp", output=tmp_path / "a.csv", **kwargs)
    again = optimize_run(molecule_run, "logp", output=tmp_path / "b.csv", **kwargs)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert first.fit.r2 == again.fit.r2 and first.fit.n_held_out == 27  # 10% of 270
    with pytest.raises(ConfigError, match="--starts must be at least 1"):
        optimize_run(molecule_run, "logp", output=tmp_path / "c.csv", **{**kwargs, "starts": 0})
    assert not (tmp_path / "c.csv").exists()


def test_unknown_property_is_one_line(molecule_run, tmp_path, capsys):
    args = ["optimize", molecule_run, "--property", "mass", "-o", tmp_path / "x.csv"]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err)
    assert "invalid choice: 'mass'" in err
    with pytest.raises(ConfigError, match=r"unknown property 'mass' \(known: qed, logp, sa\)"):
        optimize_run(molecule_run, "mass")
    assert not (tmp_path / "x.csv").exists()


def test_text_run_is_refused_in_one_line(tmp_path, capsys):
    data = write_lines(tmp_path / "g.txt", grammar_lines(40))
    args = ["train", "--data", data, "--hidden", "8", "--latent-dim", "2", "--epochs", "1"]
    assert main([str(a) for a in [*args, "--out", tmp_path / "run", "--quiet"]]) == 0
    output = tmp_path / "run" / "optimize-qed.csv"
    code, _, err = run_cli(["optimize", tmp_path / "run", "--property", "qed"], capsys)
    assert_one_line_error(code, err)
    assert "optimize needs a molecule run" in err and "this is a text run" in err
    assert not output.exists()


def test_without_rdkit_names_the_extra(molecule_run, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rdkit", None)  # `import rdkit` fails as if not installed
    code, _, err = run_cli(["optimize", molecule_run, "--property", "qed"], capsys)
    assert_one_line_error(code, err)
    assert "optimize --property qed needs RDKit" in err and "vaekit[molecules]" in err
    assert not (molecule_run / "optimize-qed.csv").exists()
