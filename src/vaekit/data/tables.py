"""Your own data, part 3: CSV tables (`.csv`, `.tsv`; first line the column names).

Every column is a numeric feature except the ones named as `label_column` and
`id_column`. Features are standardised with the training split's means and standard
deviations (population, as scikit-learn's StandardScaler; a constant column keeps scale 1).
Those statistics and the feature columns are recorded in the run's config.json when
training starts, and every later read (scoring new rows) uses the recorded ones, so a row
gets the same numbers whichever file it comes in. Examples are rows (D,) of kind "table".

Nothing is skipped: a ragged row, an empty cell, a NaN or infinite value or text in a
feature column is an error naming the file, the row (data rows count from 1 after the
header; the file line is given too) and the column.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaekit.config.schema import DataConfig
from vaekit.core.errors import DataError
from vaekit.data.arrays import READERS, Items, split_indices, split_items
from vaekit.data.datasets import DataSplits
from vaekit.data.registry import register_dataset

DELIMITERS = (",", ";", "\t")


@dataclass
class Table:
    """A parsed CSV: column names, rows of text cells and the file line of each row."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def where(self, row: int, column: int) -> str:
        """'FILE: row R (line L), column NAME' for row index `row` (0-based)."""
        return (
            f"{self.path}: row {row + 1} (line {self.lines[row]}), column {self.header[column]!r}"
        )

    def column(self, name: str, required: bool) -> int | None:
        if name in self.header:
            return self.header.index(name)
        if required:
            raise DataError(f"{self.path}: no column {name!r} (columns: {', '.join(self.header)})")
        return None


def parse_table(path: Path) -> Table:
    """Read a CSV file: header, rows (blank lines left out), ragged rows rejected."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read as UTF-8 text ({err})") from None
    first = text.split("\n", 1)[0]
    delimiter = "\t" if path.suffix.lower() == ".tsv" else max(DELIMITERS, key=first.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty file (expected a header line of column names)")
        if len(set(header)) != len(header):
            twice = next(name for name in header if header.count(name) > 1)
            raise DataError(f"{path}: column {twice!r} appears twice in the header")
        rows, lines = [], []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}: row {len(rows) + 1} (line {reader.line_num}), {ragged(row, header)}"
                )
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as err:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({err})") from None
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    return Table(path, header, rows, lines)


def ragged(row: list[str], header: list[str]) -> str:
    """Where a row with the wrong number of cells goes wrong, in words."""
    if len(row) < len(header):
        return f"column {header[len(row)]!r}: missing ({len(row)} cells, the header has {len(header)} columns)"
    return f"after column {header[-1]!r}: {len(row) - len(header)} cells too many (the header has {len(header)} columns)"


def numeric(table: Table, columns: list[int]) -> np.ndarray:
    """The cells of `columns` as float64 (rows, len(columns)); the first bad cell is an error."""
    cells = np.array([[row[j] for j in columns] for row in table.rows], dtype=str)
    try:
        values = cells.astype(np.float64)
    except ValueError:
        for i, j in np.ndindex(cells.shape):
            text = str(cells[i, j])
            try:
                float(text)
            except ValueError:
                problem = "empty cell" if not text.strip() else f"{text!r} is not a number"
                raise DataError(f"{table.where(i, columns[j])}: {problem}") from None
        raise
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise DataError(f"{table.where(i, columns[j])}: {str(cells[i, j])!r} (NaN or infinite)")
    return values


def labels(table: Table, column: int) -> tuple[torch.Tensor, list[str]]:
    """Class indices and sorted class names (numerically sorted when all are numbers)."""
    names = [row[column].strip() for row in table.rows]
    if "" in names:
        raise DataError(f"{table.where(names.index(''), column)}: empty label")
    try:
        classes = sorted(set(names), key=float)
    except ValueError:
        classes = sorted(set(names))
    lookup = {name: k for k, name in enumerate(classes)}
    return torch.tensor([lookup[n] for n in names], dtype=torch.int64), classes


def read_raw(config: DataConfig, strict: bool = True) -> tuple[Items, list[str]]:
    """Items with unstandardised features, and the feature column names.

    `strict`: the label and id columns named in the config must exist (training); scoring
    new rows (not strict) accepts a file without them."""
    table = parse_table(Path(config.path))
    label = config.label_column and table.column(config.label_column, strict)
    ident = config.id_column and table.column(config.id_column, strict)
    if config.columns is not None:
        features = [table.column(name, True) for name in config.columns]
    else:
        features = [j for j in range(len(table.header)) if j not in (label, ident)]
    if not features:
        raise DataError(f"{table.path}: no feature columns left after the label and id columns")
    values = numeric(table, features)
    y = classes = None
    if label is not None:
        y, classes = labels(table, label)
    ids = [row[ident] for row in table.rows] if ident is not None else None
    ids = ids or [str(i) for i in range(1, len(table.rows) + 1)]
    x = torch.from_numpy(values)  # (N, D) float64 until standardised
    names = [table.header[j] for j in features]
    return Items(x, y, ids, classes, str(table.path)), names


def record_statistics(items: Items, names: list[str], config: DataConfig) -> None:
    """Store the training split's feature means and standard deviations in `config`."""
    train = items.x[split_indices(items, config)["train"]].flatten(1)
    scale = train.std(dim=0, correction=0)
    scale[scale <= 1e-12 * train.abs().amax(0)] = 1.0  # constant, up to the mean's rounding
    config.columns, config.center, config.scale = names, train.mean(0).tolist(), scale.tolist()


def standardize(items: Items, config: DataConfig) -> Items:
    """(x - center) / scale with the recorded statistics, as float32."""
    if config.center is None or config.scale is None:
        raise DataError(f"{items.source}: no recorded column statistics to standardise with")
    center = torch.tensor(config.center, dtype=torch.float64)
    scale = torch.tensor(config.scale, dtype=torch.float64)
    items.x = ((items.x - center) / scale).float()
    overflow = ~items.x.isfinite().flatten(1)
    if overflow.any():  # beyond float32 after scaling (a column nearly constant in training)
        i, j = (int(k) for k in overflow.nonzero()[0])
        raise DataError(
            f"{items.source}: row {i + 1}, column {config.columns[j]!r}: too far from "
            "the training values to standardise (the column barely varies in training)"
        )
    return items


def unstandardize(x: torch.Tensor, config: DataConfig) -> torch.Tensor:
    """Standardised rows (N, D) back to the table's units, float64."""
    center = torch.tensor(config.center, dtype=torch.float64)
    scale = torch.tensor(config.scale, dtype=torch.float64)
    return x.double() * scale + center


def read_table(config: DataConfig) -> Items:
    """Every row of a CSV, standardised with the statistics recorded in `config`."""
    items, _ = read_raw(config, strict=False)
    return standardize(items, config)


@register_dataset("csv", (".csv", ".tsv"))
def load_table(config: DataConfig) -> DataSplits:
    """Train/test splits of a CSV; records columns and statistics in `config` the first time."""
    items, names = read_raw(config)
    if config.center is None:
        record_statistics(items, names, config)
    return split_items(standardize(items, config), config, "csv")


READERS["csv"] = read_table
