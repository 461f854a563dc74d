"""Token sequences: reading, tokenising, the recorded vocabulary, bad input, MOSES."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from helpers import grammar_lines, write_lines
from vaekit.config.schema import DataConfig, RunConfig
from vaekit.core.errors import ConfigError, DataError
from vaekit.data import BatchIterator, Dataset, load_data
from vaekit.data import sequences as seq
from vaekit.data.arrays import items_for_path

has_selfies = importlib.util.find_spec("selfies") is not None
has_moses = importlib.util.find_spec("moses") is not None


def sequence_config(path, **options) -> DataConfig:
    return DataConfig(name="sequences", path=str(path), **options)


def test_characters_round_trip_through_ids(tmp_path):
    lines = ["CC(=O)O", "héllo wörld", "a", "  spaces  kept", "c1ccccc1"]
    config = sequence_config(write_lines(tmp_path / "a.txt", lines))
    items = seq.read_sequences(config)
    vocabulary = seq.vocabulary_of(config)
    assert vocabulary.tokens[:4] == seq.SPECIALS
    assert vocabulary.decode(items.storage) == lines
    assert items.storage.dtype == torch.int8 and items.kind == "sequence"
    longest = max(map(len, lines))
    assert items.storage.shape == (len(lines), longest + 1)  # tokens + <eos>
    counts = seq.token_counts(items.storage)
    assert counts.tolist() == [len(line) + 1 for line in lines]
    assert (items.storage[torch.arange(len(lines)), counts - 1] == seq.EOS).all()


def test_smi_files_keep_the_first_field_and_skip_blank_lines(tmp_path):
    path = tmp_path / "m.smi"
    path.write_text("CCO ethanol\n\nc1ccccc1\tbenzene\r\n   \nCCN\n")
    config = sequence_config(path)
    items = seq.read_sequences(config)
    assert seq.vocabulary_of(config).decode(items.storage) == ["CCO", "c1ccccc1", "CCN"]
    assert items.ids == ["1", "3", "5"]  # file lines, for messages and scores
    assert seq.is_molecules(config)


def test_csv_column_of_sequences(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,smiles\n1,CCO\n2,CCCl\n3,O=C=O\n")
    config = sequence_config(path, sequence_column="smiles")
    items = seq.read_sequences(config)
    assert seq.vocabulary_of(config).decode(items.storage) == ["CCO", "CCCl", "O=C=O"]
    with pytest.raises(DataError, match="no column 'smile'"):
        seq.read_sequences(sequence_config(path, sequence_column="smile"))
    with pytest.raises(ConfigError, match="--column"):
        seq.read_sequences(sequence_config(path))


def test_vocabulary_recorded_saved_and_reloaded_identically(tmp_path):
    path = write_lines(tmp_path / "g.txt", grammar_lines(200))
    config = RunConfig.from_dict({"data": {"name": "sequences", "path": str(path)}})
    splits = load_data(config.data)
    assert splits.kind == "sequence" and config.data.kind == "sequence"
    assert splits.vocabulary == config.data.vocabulary == [*seq.SPECIALS, *"abcd"]
    config.data.shape = list(splits.shape)
    config.save(tmp_path / "config.json")
    reloaded = RunConfig.load(tmp_path / "config.json")
    assert reloaded.data.vocabulary == config.data.vocabulary
    again = load_data(reloaded.data)
    assert torch.equal(again.train.storage, splits.train.storage)
    assert torch.equal(again.test.storage, splits.test.storage)
    assert json.loads((tmp_path / "config.json").read_text())["data"]["vocabulary"][4] == "a"


def test_a_recorded_vocabulary_is_kept_for_new_files(tmp_path):
    """New data read for a run keeps the run's ids and width: 'b' has the same id."""
    config = sequence_config(write_lines(tmp_path / "g.txt", ["ab", "abcd"]))
    seq.read_sequences(config)
    config.shape = [7]
    items = items_for_path(write_lines(tmp_path / "new.txt", ["b", "dcba"]), config)
    assert items.storage.shape == (2, 7)
    assert items.storage[0, 0] == config.vocabulary.index("b")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"abc\n\x00\x01\x02", "line 2: a NUL byte"),
        (b"abc\n\xff\xfe\n", "line 2: not UTF-8"),
        (b"", "no sequences"),
        (b"\n  \n\n", "no sequences"),
        (b"ab\n" + b"x" * 121 + b"\n", "line 2: 121 tokens, more than data.max_length 120"),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_line(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        seq.read_sequences(sequence_config(path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_unknown_characters_and_longer_lines_for_a_recorded_run(tmp_path):
    config = sequence_config(write_lines(tmp_path / "g.txt", ["abc", "cab"]))
    seq.read_sequences(config)
    config.shape = [4]
    with pytest.raises(DataError, match=r"new.txt: line 3: token 'z' is not in the vocabulary"):
        items_for_path(write_lines(tmp_path / "new.txt", ["ab", "", "azb"]), config)
    with pytest.raises(DataError, match="line 1: 4 tokens, more than this run's longest"):
        items_for_path(write_lines(tmp_path / "long.txt", ["abca"]), config)


def test_max_length_raised_by_option(tmp_path):
    path = write_lines(tmp_path / "g.txt", ["a" * 150, "b"])
    assert seq.read_sequences(sequence_config(path, max_length=150)).storage.shape == (2, 151)


def test_large_vocabularies_use_wider_ids(tmp_path):
    lines = ["".join(chr(0x4E00 + 7 * i + k) for k in range(7)) for i in range(30)]
    config = sequence_config(write_lines(tmp_path / "cjk.txt", lines))
    items = seq.read_sequences(config)
    assert len(config.vocabulary) == 4 + 210 and items.storage.dtype == torch.int16
    assert seq.vocabulary_of(config).decode(items.storage) == lines


def test_batches_of_token_ids_are_int64(tmp_path):
    config = sequence_config(write_lines(tmp_path / "g.txt", grammar_lines(50)))
    data = Dataset(seq.read_sequences(config).storage)
    assert data.kind == "sequence"
    (x, y), *_ = list(BatchIterator(data.storage, None, 16, shuffle=False))
    assert x.dtype == torch.int64 and y is None
    assert torch.equal(x, data.storage[:16].long())
    with pytest.raises(DataError, match="integer token ids"):
        Dataset(torch.zeros(3, 5), kind="sequence")


def test_missing_molsets_names_the_install_command(monkeypatch):
    monkeypatch.setattr(seq.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps molsets"):
        load_data(DataConfig(name="moses"))


@pytest.mark.skipif(
    not has_moses, reason="needs the molsets package (pip install --no-deps molsets)"
)
def test_moses_test_split_reads_from_the_package():
    texts = seq.read_moses("test")
    assert len(texts.texts) == 176_074
    assert texts.texts[0] == "CC1C2CCC(C2)C1CN(CCO)C(=O)c1ccc(Cl)cc1"
    assert texts.where(0).endswith("test.csv.gz: line 2")  # the header is line 1


@pytest.mark.skipif(not has_selfies, reason="needs selfies (the molecules extra)")
def test_selfies_tokens_decode_to_the_same_molecules(tmp_path):
    import selfies

    smiles = ["CCO", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "C#N"]
    config = sequence_config(write_lines(tmp_path / "m.smi", smiles), tokens="selfies")
    items = seq.read_sequences(config)
    assert all(token.startswith("[") for token in config.vocabulary[4:])
    expected = [selfies.decoder(selfies.encoder(s)) for s in smiles]
    assert seq.vocabulary_of(config).decode(items.storage) == expected
    assert seq.token_counts(items.storage)[0] == 4  # [C][C][O] and <eos>
