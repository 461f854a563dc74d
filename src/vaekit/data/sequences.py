"""Token sequences: SMILES strings and lines of text, one sequence per line.

Sources: `--data FILE.txt` (each line a sequence), `--data FILE.smi` (each line's first
whitespace-separated field: the SMILES convention "SMILES name"), `--data FILE.csv
--column NAME` (the column's cells), and `--dataset moses` (the MOSES benchmark's
train.csv.gz and test.csv.gz, read from the installed `molsets` package). Blank lines and
empty cells are left out; nothing else is: a line that cannot be read is an error naming it.

Tokens: characters (`data.tokens = "char"`, the default) or SELFIES symbols (`"selfies"`,
the `selfies` package: every decoded symbol string is a valid molecule). The vocabulary is
the special tokens <pad> <bos> <eos> <unk> (ids 0-3) followed by the training data's
tokens in sorted order; it is built from the training file when a run starts (for MOSES,
train.csv.gz) and recorded in the run's config.json as `data.vocabulary`, so every later
command tokenises and decodes the same way. A token outside the recorded vocabulary is an
error naming the line. <unk> never comes from data: it is what word dropout feeds the
decoder in place of a dropped token.

Storage: one padded (N, L) tensor of token ids, each sequence followed by <eos> and then
<pad> (id 0), so a sequence's length (with its <eos>) is its count of non-zero ids and no
lengths tensor is stored. L is the longest sequence plus one, recorded as `data.shape`
[L]. Ids are int8 for vocabularies of up to 128 tokens (1 byte per token: MOSES's 1.58M
molecules take 92 MB), else int16 or int32. Signed integers, never uint8: the storage's
dtype alone tells token ids (integers, converted to int64 per batch) from 8-bit pixels
(uint8, converted to [0, 1] floats), wherever a batch is sliced.

Limits: a sequence may hold at most `data.max_length` tokens (default 120, without <eos>);
a longer one is an error naming its line (raise --max-length, or shorten the line): a
dropped line would silently change the data. Tokenising is vectorised for characters (a
code-point lookup table over chunks of lines: the 1.58M MOSES SMILES take 2-7 s on 2
shared cores); SELFIES encoding runs the `selfies` package once per molecule (about 0.15 ms each).
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaekit.config.schema import DataConfig
from vaekit.core.errors import ConfigError, DataError
from vaekit.data.arrays import Items, own_data
from vaekit.data.datasets import Dataset, DataSplits
from vaekit.data.limits import check_fits_memory
from vaekit.data.registry import register_dataset
from vaekit.data.tables import parse_table

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(len(SPECIALS))
TOKENIZERS = ("char", "selfies")
SEQUENCE_DATASETS = ("sequences", "moses")  # the datasets whose examples are token sequences
CHUNK_LINES = 100_000  # lines per vectorised tokenising step (bounds the temporary arrays)
MOLECULES_EXTRA = 'pip install "vaekit[molecules]"'
MOSES_HINT = (
    "dataset moses reads its files from the molsets package: pip install --no-deps molsets "
    "(its declared dependencies are not needed)"
)
MOSES_FILES = {"train": "train.csv.gz", "test": "test.csv.gz"}
UNKNOWN_TEXT = "\ufffd"  # how a decoded <unk> reads


@dataclass
class Texts:
    """Sequences read from a file: their text and the file line each came from."""

    texts: list[str]
    lines: np.ndarray  # (N,) int64 file line numbers (1-based)
    source: str

    def where(self, index: int) -> str:
        """'FILE: line N' of sequence `index`."""
        return f"{self.source}: line {int(self.lines[index])}"


@dataclass(frozen=True)
class Vocabulary:
    """Token strings by id (the specials first) and how text splits into them."""

    tokens: tuple[str, ...]
    tokenizer: str = "char"  # char | selfies

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def dtype(self) -> np.dtype:
        """The smallest signed integer type holding every id (int8 up to 128 tokens)."""
        for dtype in (np.int8, np.int16, np.int32):
            if len(self) <= np.iinfo(dtype).max + 1:
                return np.dtype(dtype)
        raise DataError(f"a vocabulary of {len(self)} tokens is too large")

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Token ids (N, L) -> one string per row, up to its first <eos> (<pad> and <bos>
        are left out, <unk> reads as U+FFFD); SELFIES become SMILES."""
        rows = ids.to(torch.int64).cpu().tolist()
        text = [self.tokens[i] if i != UNK else UNKNOWN_TEXT for i in range(len(self))]
        decoded = []
        for row in rows:
            end = row.index(EOS) if EOS in row else len(row)
            decoded.append("".join(text[i] for i in row[:end] if i > EOS))
        if self.tokenizer == "selfies":
            return [selfies_to_smiles(s) for s in decoded]
        return decoded


def vocabulary_of(config: DataConfig) -> Vocabulary:
    """The vocabulary recorded in `config` (DataError if none is)."""
    if not config.vocabulary:
        raise DataError("the run records no vocabulary (data.vocabulary): not a sequence run")
    return Vocabulary(tuple(config.vocabulary), config.tokens)


def token_counts(storage: torch.Tensor) -> torch.Tensor:
    """Tokens of each stored sequence, its <eos> included: (N,) int64."""
    return (storage != PAD).sum(1)


def is_molecules(config: DataConfig) -> bool:
    """Whether the sequences are SMILES (MOSES, SELFIES, a .smi file, a SMILES column)."""
    column = (config.sequence_column or "").lower()
    suffix = Path(config.path).suffix.lower() if config.path else ""
    return (
        config.name == "moses"
        or config.tokens == "selfies"
        or suffix == ".smi"
        or column == "smiles"
    )


# --- optional packages -------------------------------------------------------------------
def selfies_module():
    """The `selfies` package, or the one-line error naming the molecules extra (an optional
    dependency, so imported here rather than at the top)."""
    try:
        import selfies
    except ImportError:
        raise ConfigError(f"tokens selfies need the molecules extra: {MOLECULES_EXTRA}") from None
    return selfies


def selfies_to_smiles(text: str) -> str:
    """A SELFIES string as SMILES ('' where the symbols decode to nothing)."""
    selfies = selfies_module()
    try:
        return selfies.decoder(text) or ""
    except selfies.DecoderError:
        return ""


def moses_folder() -> Path:
    """The folder of the MOSES data files inside the installed molsets package (found
    without importing it: its __init__ needs packages vaekit does not)."""
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(MOSES_HINT)
    return Path(next(iter(spec.submodule_search_locations))) / "dataset" / "data"


# --- reading ----------------------------------------------------------------------------
def decode_text(raw: bytes, source: str) -> str:
    """The bytes of a text file as str; a binary or non-UTF-8 file is a DataError."""
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise DataError(f"{source}: line {line}: a NUL byte (a binary file, not text)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{source}: line {line}: not UTF-8 text ({err.reason})") from None


def texts_of_lines(text: str, source: str, first_field: bool = False, skip: int = 0) -> Texts:
    """The non-blank lines of `text` (after the first `skip`), with their line numbers;
    `first_field`: each line's first whitespace-separated field (.smi files)."""
    lines = text.split("\n")[skip:]
    lines = [line.rstrip("\r") for line in lines]
    if first_field:
        lines = [line.split(None, 1)[0] if line.strip() else "" for line in lines]
    keep = [i for i, line in enumerate(lines) if line.strip()]
    if not keep:
        raise DataError(f"{source}: no sequences (the file is empty or blank)")
    numbers = np.asarray(keep, dtype=np.int64) + 1 + skip
    return Texts([lines[i] for i in keep], numbers, source)


def read_file_bytes(path: Path) -> bytes:
    """The bytes of `path`, gunzipped for .gz; a missing or unreadable file is a DataError."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a text file of sequences") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None


def read_texts(config: DataConfig) -> Texts:
    """The sequences of `config.path`: lines of a .txt/.smi file, or a CSV column."""
    path = Path(config.path)
    suffix = path.suffix.lower()
    if config.sequence_column and suffix not in (".csv", ".tsv"):
        raise ConfigError(f"{path}: data.sequence_column (--column) applies to .csv/.tsv files")
    if suffix in (".csv", ".tsv"):
        if not config.sequence_column:
            raise ConfigError(f"{path}: name the column of sequences (--column NAME)")
        table = parse_table(path)
        column = table.column(config.sequence_column, True)
        cells = [row[column].strip() for row in table.rows]
        keep = [i for i, cell in enumerate(cells) if cell]
        if not keep:
            raise DataError(f"{path}: column {config.sequence_column!r} holds no sequences")
        lines = np.asarray([table.lines[i] for i in keep], dtype=np.int64)
        return Texts([cells[i] for i in keep], lines, str(path))
    check_fits_memory(path.stat().st_size if path.is_file() else 0, str(path), "its size")
    text = decode_text(read_file_bytes(path), str(path))
    return texts_of_lines(text, str(path), first_field=suffix == ".smi")


def read_moses(split: str) -> Texts:
    """MOSES's `split` (train or test) SMILES, from the molsets package's gzipped CSV."""
    path = moses_folder() / MOSES_FILES[split]
    if not path.is_file():
        raise DataError(f"{path}: not found ({MOSES_HINT})")
    text = decode_text(read_file_bytes(path), str(path))
    header = text[: text.find("\n")].strip()
    if header != "SMILES":
        raise DataError(f"{path}: expected a header line SMILES, got {header[:40]!r}")
    return texts_of_lines(text, str(path), skip=1)


# --- tokenising -------------------------------------------------------------------------
@dataclass
class Split:
    """Sequences split into tokens: for characters the strings themselves (a str is its
    sequence of characters), for SELFIES lists of symbols; with each one's token count."""

    texts: Texts
    tokens: list[str] | list[list[str]]
    lengths: np.ndarray  # (N,) int64 tokens per sequence, <eos> not counted


def split_tokens(texts: Texts, tokenizer: str) -> Split:
    """`texts` split into tokens of kind `tokenizer` (char | selfies)."""
    if tokenizer not in TOKENIZERS:
        raise ConfigError(f"unknown data.tokens {tokenizer!r} (known: {', '.join(TOKENIZERS)})")
    tokens = selfies_symbols(texts) if tokenizer == "selfies" else texts.texts
    return Split(texts, tokens, np.fromiter(map(len, tokens), np.int64, len(tokens)))


def chunks(texts: list[str]) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, code points (n, W) uint32, 0-padded) of consecutive chunks of `texts`."""
    for start in range(0, len(texts), CHUNK_LINES):
        part = np.array(texts[start : start + CHUNK_LINES], dtype=str)
        yield start, part.view(np.uint32).reshape(len(part), -1)


def selfies_symbols(texts: Texts) -> list[list[str]]:
    """Each SMILES as its list of SELFIES symbols; an unencodable SMILES names its line."""
    selfies = selfies_module()
    symbols = []
    for i, smiles in enumerate(texts.texts):
        try:
            encoded = selfies.encoder(smiles)
        except selfies.EncoderError as err:
            raise DataError(
                f"{texts.where(i)}: cannot encode {smiles[:60]!r} as SELFIES ({err})"
            ) from None
        symbols.append(list(selfies.split_selfies(encoded)))
    return symbols


def build_vocabulary(split: Split, tokenizer: str) -> Vocabulary:
    """The specials and every token of `split`, sorted."""
    if tokenizer == "selfies":
        found = sorted({symbol for row in split.tokens for symbol in row})
        return Vocabulary((*SPECIALS, *found), tokenizer)
    counts = np.zeros(1, dtype=np.int64)
    for _, codes in chunks(split.texts.texts):
        seen = np.bincount(codes.ravel())
        counts = np.pad(counts, (0, max(0, len(seen) - len(counts))))
        counts[: len(seen)] += seen
    found = [chr(c) for c in np.flatnonzero(counts[1:]) + 1]  # code point 0 is padding
    return Vocabulary((*SPECIALS, *found), tokenizer)


def check_lengths(split: Split, limit: int, why: str) -> None:
    """DataError naming the first sequence longer than `limit` tokens."""
    over = np.flatnonzero(split.lengths > limit)
    if len(over):
        i = int(over[0])
        raise DataError(f"{split.texts.where(i)}: {int(split.lengths[i])} tokens, more than {why}")


def storage_width(splits: list[Split], config: DataConfig) -> int:
    """L, the stored width: the recorded one (data.shape), else the longest sequence + 1;
    a sequence over data.max_length, or longer than a recorded width allows, is an error."""
    for split in splits:
        check_lengths(
            split, config.max_length, f"data.max_length {config.max_length} (--max-length)"
        )
        if config.shape:
            longest = config.shape[0] - 1
            check_lengths(split, longest, f"this run's longest sequences ({longest} tokens)")
    if config.shape:
        return config.shape[0]
    return max(int(split.lengths.max()) for split in splits) + 1


def unknown_token(where: str, token: str) -> DataError:
    return DataError(
        f"{where}: token {token!r} is not in the vocabulary (the run's tokens come from "
        "its training data)"
    )


def encode_chars(split: Split, vocabulary: Vocabulary, width: int) -> np.ndarray:
    """Character ids (N, width), 0-padded, without <eos>: a code-point lookup table
    applied to chunks of lines."""
    table = np.full(max(map(ord, vocabulary.tokens[len(SPECIALS) :])) + 1, -1, np.int64)
    for k, token in enumerate(vocabulary.tokens[len(SPECIALS) :], start=len(SPECIALS)):
        table[ord(token)] = k
    table[0] = PAD
    ids = np.zeros((len(split.tokens), width), dtype=vocabulary.dtype)
    for start, codes in chunks(split.texts.texts):
        known = codes < len(table)
        part = np.where(known, table[np.where(known, codes, 0)], -1)
        bad = np.argwhere(part < 0)
        if len(bad):
            row, col = (int(k) for k in bad[0])
            raise unknown_token(split.texts.where(start + row), chr(int(codes[row, col])))
        ids[start : start + len(part), : part.shape[1]] = part
    return ids


def encode_symbols(split: Split, vocabulary: Vocabulary, width: int) -> np.ndarray:
    """Symbol-list ids (N, width), 0-padded, without <eos>."""
    lookup = {token: k for k, token in enumerate(vocabulary.tokens) if k >= len(SPECIALS)}
    ids = np.zeros((len(split.tokens), width), dtype=vocabulary.dtype)
    for i, row in enumerate(split.tokens):
        try:
            ids[i, : len(row)] = [lookup[symbol] for symbol in row]
        except KeyError as err:
            raise unknown_token(split.texts.where(i), err.args[0]) from None
    return ids


def encode(split: Split, vocabulary: Vocabulary, width: int) -> torch.Tensor:
    """`split` as stored token ids (N, width): each sequence, <eos>, then <pad>."""
    if vocabulary.tokenizer == "selfies":
        ids = encode_symbols(split, vocabulary, width)
    else:
        ids = encode_chars(split, vocabulary, width)
    ids[np.arange(len(ids)), split.lengths] = EOS
    return torch.from_numpy(ids)


def recorded_vocabulary(training: Split, config: DataConfig) -> Vocabulary:
    """The run's vocabulary: the recorded one, else built from `training` and recorded."""
    if not config.vocabulary:
        config.vocabulary = list(build_vocabulary(training, config.tokens).tokens)
    return vocabulary_of(config)


# --- the datasets -----------------------------------------------------------------------
@own_data("sequences", (".txt", ".smi"))
def read_sequences(config: DataConfig) -> Items:
    """Every sequence of a text file or CSV column, tokenised with the run's vocabulary
    (built from this file and recorded in `config` the first time)."""
    split = split_tokens(read_texts(config), config.tokens)
    vocabulary = recorded_vocabulary(split, config)
    storage = encode(split, vocabulary, storage_width([split], config))
    ids = [str(n) for n in split.texts.lines.tolist()]  # each sequence's file line
    source = split.texts.source
    return Items(storage, None, ids, None, source, vocabulary=list(vocabulary.tokens))


@register_dataset("moses")
def load_moses(config: DataConfig) -> DataSplits:
    """MOSES's train (1,584,663 SMILES) and test (176,074) splits, as token ids; the
    vocabulary comes from the training split."""
    train, test = (split_tokens(read_moses(name), config.tokens) for name in MOSES_FILES)
    vocabulary = recorded_vocabulary(train, config)
    width = storage_width([train, test], config)
    train_set, test_set = (
        Dataset(encode(split, vocabulary, width), None, f"moses/{name}", "sequence")
        for name, split in zip(MOSES_FILES, (train, test))
    )
    source = str(moses_folder())
    return DataSplits(train_set, test_set, "moses", source, vocabulary=list(vocabulary.tokens))
