"""Property-based tests (hypothesis) of the image-folder and CSV loaders: what goes in comes
out exactly, and any file at all gives either data or a DataError, never another exception.
(The IDX reader's properties are in test_data.py.)"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from vaekit.config import DataConfig
from vaekit.core.errors import DataError
from vaekit.data.folder import read_folder
from vaekit.data.tables import read_raw, read_table

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def image_stacks(draw, channels: int) -> np.ndarray:
    """1-5 uint8 images of one random size (up to 9x9), greyscale or RGB."""
    n, h, w = draw(st.integers(1, 5)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    shape = (n, h, w) if channels == 1 else (n, h, w, 3)
    return draw(arrays(np.uint8, shape))


def save_images(folder: Path, images: np.ndarray, classes: list[str] | None = None) -> None:
    for i, image in enumerate(images):
        where = folder / classes[i] if classes else folder
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(where / f"{i:02d}.png")


# --- image folders --------------------------------------------------------------------------
@SETTINGS
@given(images=image_stacks(1))
def test_grey_images_come_back_exactly(images: np.ndarray):
    with tempfile.TemporaryDirectory() as tmp:
        save_images(Path(tmp), images)
        items = read_folder(DataConfig(name="folder", path=tmp))
    assert tuple(items.x.shape) == (len(images), 1, *images.shape[1:])
    np.testing.assert_array_equal((items.x[:, 0] * 255).round().numpy(), images)
    assert items.y is None and items.ids == [f"{i:02d}.png" for i in range(len(images))]


@SETTINGS
@given(images=image_stacks(3), data=st.data())
def test_rgb_images_and_class_folders_come_back_exactly(images: np.ndarray, data):
    names = data.draw(
        st.lists(st.sampled_from(["ant", "bee", "cat"]), min_size=len(images), max_size=len(images))
    )
    with tempfile.TemporaryDirectory() as tmp:
        save_images(Path(tmp), images, names)
        items = read_folder(DataConfig(name="folder", path=tmp))
    order = sorted(range(len(images)), key=lambda i: (names[i], i))  # class folders, then files
    expected = images[order].transpose(0, 3, 1, 2)
    np.testing.assert_array_equal((items.x * 255).round().numpy(), expected)
    assert items.classes == sorted(set(names))
    assert [items.classes[k] for k in items.y.tolist()] == [names[i] for i in order]


@SETTINGS
@given(junk=st.binary(max_size=200), suffix=st.sampled_from([".png", ".jpg", ".gif", ".bmp"]))
def test_any_bytes_in_an_image_file_load_or_name_the_file(junk: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"odd{suffix}"
        path.write_bytes(junk)
        try:
            items = read_folder(DataConfig(name="folder", path=tmp))
        except DataError as err:
            assert str(path) in str(err) and "\n" not in str(err)
        else:
            assert items.x.isfinite().all() and 0 <= items.x.min() <= items.x.max() <= 1


# --- CSV tables -----------------------------------------------------------------------------
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


def read_csv(text: str, **options) -> tuple:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_text(text, encoding="utf-8")
        return read_raw(DataConfig(name="csv", path=str(path), **options)), str(path)


@SETTINGS
@given(values=arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 5)), elements=finite))
def test_numbers_come_back_exactly(values: np.ndarray):
    header = ",".join(f"c{j}" for j in range(values.shape[1]))
    text = header + "\n" + "".join(",".join(map(repr, row)) + "\n" for row in values.tolist())
    (items, names), _ = read_csv(text)
    assert names == header.split(",")
    np.testing.assert_array_equal(items.x.numpy(), values)  # rows (N, D) of kind "table"
    assert items.ids == [str(i) for i in range(1, len(values) + 1)]


# magnitudes a table holds: 0, or 1e-6 to 1e6 (a column barely varying: the test after this)
MAGNITUDES = st.one_of(st.just(0.0), st.floats(1e-6, 1e6), st.floats(-1e6, -1e-6))


@SETTINGS
@given(
    values=arrays(
        np.float64, st.tuples(st.integers(2, 30), st.integers(1, 4)), elements=MAGNITUDES
    ),
)
def test_standardised_with_the_training_statistics(values: np.ndarray):
    header = ",".join(f"c{j}" for j in range(values.shape[1]))
    text = header + "\n" + "".join(",".join(map(repr, row)) + "\n" for row in values.tolist())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_text(text)
        from vaekit.data.tables import load_table

        config = DataConfig(name="csv", path=str(path), test_fraction=0.25)
        splits = load_table(config)
        again = read_table(config)  # a later read uses the recorded statistics
    train = splits.train.x.double()  # (N, D)
    assert train.mean(0).abs().max() < 1e-4
    spread = train.std(0, correction=0).numpy()  # 1, or 0 for a column constant in training
    assert np.all((np.abs(spread - 1) < 1e-3) | (spread < 1e-6))
    assert again.x.isfinite().all() and len(again.x) == len(values)


def test_a_column_barely_varying_in_training_is_an_error_not_inf(tmp_path):
    from vaekit.data.tables import load_table

    train = tmp_path / "train.csv"
    train.write_text("a\n" + "0.0\n1e-143\n" * 5)  # std 5e-144
    config = DataConfig(name="csv", path=str(train))
    load_table(config)  # records the statistics
    new = tmp_path / "new.csv"
    new.write_text("a\n0.0\n1.0\n")  # 1.0 is 2e143 standard deviations away: not float32
    with pytest.raises(DataError, match=r"new.csv: row 2, column 'a': too far from the training"):
        read_table(
            DataConfig(
                name="csv",
                path=str(new),
                columns=config.columns,
                center=config.center,
                scale=config.scale,
            )
        )


BAD_CELLS = st.sampled_from(["nan", "inf", "-inf", "NaN", "", "abc", "1;5", "--1"])


@SETTINGS
@given(
    rows=st.integers(1, 8),
    cols=st.integers(1, 4),
    bad=BAD_CELLS,
    data=st.data(),
)
def test_a_bad_cell_is_named_by_row_and_column(rows: int, cols: int, bad: str, data):
    assume(cols > 1 or bad != "")  # a one-column row with an empty cell is a blank line
    i, j = data.draw(st.integers(0, rows - 1)), data.draw(st.integers(0, cols - 1))
    cells = [["1.5"] * cols for _ in range(rows)]
    cells[i][j] = bad
    text = (
        ",".join(f"c{k}" for k in range(cols)) + "\n" + "".join(",".join(r) + "\n" for r in cells)
    )
    with pytest.raises(DataError) as info:
        read_csv(text)
    message = str(info.value)
    assert f"row {i + 1} (line {i + 2}), column 'c{j}'" in message and "\n" not in message


@SETTINGS
@given(text=st.text(alphabet=st.sampled_from(list('ab1.-,;\t\n"e ')), max_size=80))
def test_any_text_gives_a_table_or_a_data_error(text: str):
    try:
        (items, names), path = read_csv(text)
    except DataError as err:
        assert "t.csv" in str(err) and "\n" not in str(err)
    else:
        assert items.x.isfinite().all() and len(names) == items.x.shape[-1]
