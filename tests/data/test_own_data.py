"""Own data: image folders, .npy/.npz arrays and CSV tables as datasets; `--data PATH`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from helpers import assert_one_line_error, run_cli, save_png, write_pngs
from vaekit.config import DataConfig
from vaekit.config.runs import load_weights_into
from vaekit.core.errors import ConfigError, DataError, RunError
from vaekit.data import load_data
from vaekit.data.arrays import read_items, split_indices
from vaekit.data.registry import dataset_for_path
from vaekit.data.tables import read_table
from vaekit.likelihoods import Gaussian


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TABLE = "id,a,b,label\n" + "".join(
    f"r{i},{i},{10 * (i % 3)},{'odd' if i % 2 else 'even'}\n" for i in range(20)
)


# --- image folders ------------------------------------------------------------------------
def test_folder_classes_become_labels_and_ids_are_paths(tmp_path):
    write_pngs(tmp_path / "cats", 5)
    write_pngs(tmp_path / "dogs", 7, seed=1)
    (tmp_path / "notes.txt").write_text("not an image")  # not an image suffix: left out
    items = read_items(DataConfig(name="folder", path=str(tmp_path)))
    assert items.x.shape == (12, 1, 8, 8) and items.x.dtype == torch.float32
    assert items.classes == ["cats", "dogs"]
    assert items.label_names() == ["cats"] * 5 + ["dogs"] * 7
    assert items.ids[0] == "cats/img00.png"
    pixels = np.asarray(Image.open(tmp_path / "cats" / "img00.png"), dtype=np.float32) / 255
    assert torch.equal(items.x[0, 0], torch.from_numpy(pixels))


def test_folder_split_is_seeded_and_recorded(tmp_path):
    write_pngs(tmp_path, 20)
    config = DataConfig(name="folder", path=str(tmp_path), test_fraction=0.25, split_seed=3)
    first, again = load_data(config), load_data(config)
    assert len(first.test) == 5 and len(first.train) == 15
    assert torch.equal(first.test.x, again.test.x)
    other = load_data(
        DataConfig(name="folder", path=str(tmp_path), split_seed=4, test_fraction=0.25)
    )
    assert not torch.equal(first.test.x, other.test.x)
    assert first.train.y is None


def test_folder_with_train_and_test_keeps_its_split(tmp_path):
    write_pngs(tmp_path / "train" / "a", 4)
    write_pngs(tmp_path / "train" / "b", 4, seed=1)
    write_pngs(tmp_path / "test" / "b", 3, seed=2)
    splits = load_data(DataConfig(name="folder", path=str(tmp_path)))
    assert (len(splits.train), len(splits.test)) == (8, 3)
    assert splits.classes == ["a", "b"] and splits.test.y.tolist() == [1, 1, 1]


def test_folder_colour_and_resize(tmp_path):
    write_pngs(tmp_path, 2)
    save_png(tmp_path / "rgb.png", mode="RGB")
    auto = read_items(DataConfig(name="folder", path=str(tmp_path)))
    assert auto.x.shape == (3, 3, 8, 8)  # one colour image makes them all RGB
    assert torch.equal(auto.x[0, 0], auto.x[0, 2])  # a greyscale one has equal channels
    grey = read_items(
        DataConfig(name="folder", path=str(tmp_path), color="grayscale", resize=[4, 6])
    )
    assert grey.x.shape == (3, 1, 4, 6)


@pytest.mark.parametrize(
    ("make", "mentions"),
    [
        (lambda d: save_png(d / "odd.png", size=(9, 8)), "odd.png: image is 8x9 pixels"),
        (lambda d: (d / "broken.png").write_bytes(b"not a png"), "broken.png: not a readable"),
        (lambda d: write_pngs(d / "cls", 2), "sub-folders"),
    ],
    ids=["size differs", "does not decode", "mixed layout"],
)
def test_folder_errors_name_the_file(tmp_path, make, mentions):
    write_pngs(tmp_path, 2)
    make(tmp_path)
    with pytest.raises(DataError, match=mentions):
        read_items(DataConfig(name="folder", path=str(tmp_path)))


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no image files"):
        read_items(DataConfig(name="folder", path=str(tmp_path)))


# --- arrays -------------------------------------------------------------------------------
def test_npy_vectors_and_images(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(12, dtype=np.float32).reshape(4, 3) / 12)
    np.save(tmp_path / "img.npy", np.full((5, 6, 6, 3), 255, dtype=np.uint8))  # NHWC
    vectors = read_items(DataConfig(name="array", path=str(tmp_path / "v.npy")))
    assert vectors.x.shape == (4, 3) and vectors.ids == ["0", "1", "2", "3"]
    assert vectors.kind == "table"
    images = read_items(DataConfig(name="array", path=str(tmp_path / "img.npy")))
    assert images.x.shape == (5, 3, 6, 6) and images.x.max() == 1.0  # uint8 / 255
    assert images.kind == "image" and images.storage.dtype == torch.uint8


def test_npz_labels_ids_and_own_split(tmp_path):
    x = np.random.default_rng(0).random((10, 4, 4)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x[:7], y_train=np.arange(7) % 2, x_test=x[7:], y_test=[1, 1, 1])
    splits = load_data(DataConfig(name="array", path=str(path)))
    assert (len(splits.train), len(splits.test)) == (7, 3)
    assert torch.allclose(splits.test.x[:, 0], torch.from_numpy(x[7:]))
    np.savez(path, images=x, labels=np.array(["a", "b"] * 5), ids=[f"s{i}" for i in range(10)])
    items = read_items(DataConfig(name="array", path=str(path)))
    assert items.classes == ["a", "b"] and items.ids[9] == "s9"


def test_array_errors(tmp_path):
    bad = np.zeros((3, 4), dtype=np.float32)
    bad[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match=r"nan.npy.*index \[2, 1\]"):
        read_items(DataConfig(name="array", path=str(tmp_path / "nan.npy")))
    np.savez(tmp_path / "keys.npz", a=bad, b=bad)
    with pytest.raises(DataError, match="no array named x"):
        read_items(DataConfig(name="array", path=str(tmp_path / "keys.npz")))
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.npy"):
        read_items(DataConfig(name="array", path=str(tmp_path / "junk.npy")))


def test_bernoulli_rejects_data_outside_unit_range(tmp_path, capsys):
    np.save(tmp_path / "big.npy", np.full((20, 3), 5.0, dtype=np.float32))
    code, _, err = run_cli(
        ["train", "--data", tmp_path / "big.npy", "--out", tmp_path / "r"], capsys
    )
    assert_one_line_error(code, err)
    assert "bernoulli" in err and "[0, 1]" in err and not (tmp_path / "r").exists()


# --- tables -------------------------------------------------------------------------------
def test_csv_standardised_with_training_statistics_recorded_and_reused(tmp_path):
    path = write_csv(tmp_path / "t.csv", TABLE)
    config = DataConfig(name="csv", path=str(path), label_column="label", id_column="id")
    splits = load_data(config)
    assert config.columns == ["a", "b"]  # label and id are not features
    train_rows = split_indices(read_items_raw(path), config)["train"]
    raw = torch.tensor([[i, 10 * (i % 3)] for i in range(20)], dtype=torch.float64)[train_rows]
    assert np.allclose(config.center, raw.mean(0)) and np.allclose(
        config.scale, raw.std(0, correction=0)
    )
    assert torch.allclose(splits.train.x.flatten(1).mean(0), torch.zeros(2), atol=1e-6)
    assert splits.classes == ["even", "odd"]
    # a new file (other rows, no label column, columns reordered) uses the recorded numbers
    new = write_csv(tmp_path / "new.csv", "b,a,id\n10,1,x\n0,0,y\n")
    items = read_table(DataConfig(**{**config.__dict__, "path": str(new)}))
    expected = (
        torch.tensor([[1.0, 10.0], [0.0, 0.0]]) - torch.tensor(config.center)
    ) / torch.tensor(config.scale)
    assert torch.allclose(items.x.flatten(1), expected.float()) and items.ids == ["x", "y"]
    assert items.y is None


def read_items_raw(path: Path):
    from vaekit.data.tables import read_raw

    return read_raw(DataConfig(name="csv", path=str(path), label_column="label", id_column="id"))[0]


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("a,b\n1,2\n3,nan\n", ("row 2", "line 3", "column 'b'", "NaN")),
        ("a,b\n1,2\n3,abc\n", ("row 2", "column 'b'", "'abc' is not a number")),
        ("a,b\n1,2\n3\n", ("row 2", "column 'b'", "missing")),
        ("a,b\n1,2\n3,4,5\n", ("row 2", "too many")),
        ("a,b\n1,\n", ("row 1", "column 'b'", "empty cell")),
        ("", ("empty file",)),
        ("a,b\n", ("no data rows",)),
    ],
    ids=["nan", "text", "short row", "long row", "empty cell", "empty file", "header only"],
)
def test_bad_csv_fails_with_one_line_naming_file_row_column(tmp_path, capsys, text, mentions):
    path = write_csv(tmp_path / "bad.csv", text)
    code, _, err = run_cli(["train", "--data", path, "--out", tmp_path / "run"], capsys)
    assert_one_line_error(code, err)
    for word in (str(path), *mentions):
        assert word in err
    assert not (tmp_path / "run").exists()


def test_csv_cli_defaults_to_gaussian_and_bernoulli_is_refused(tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", TABLE)
    code, _, err = run_cli(["train", "--data", path, "--likelihood", "bernoulli"], capsys)
    assert_one_line_error(code, err)
    assert "Gaussian likelihood" in err
    code, _, err = run_cli(
        ["train", "--data", path, "--label-column", "nope", "--out", tmp_path / "r"], capsys
    )
    assert_one_line_error(code, err)
    assert "no column 'nope'" in err


def test_train_on_csv_records_statistics_in_the_run(tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", TABLE)
    args = [
        "train",
        "--data",
        path,
        "--label-column",
        "label",
        "--id-column",
        "id",
        "--epochs",
        "1",
    ]
    code, _, err = run_cli(
        [*args, "--hidden", "8", "--latent-dim", "2", "--quiet", "--out", tmp_path / "run"], capsys
    )
    assert code == 0, err
    data = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert data["name"] == "csv" and data["path"] == str(path.resolve())
    assert data["columns"] == ["a", "b"] and len(data["center"]) == len(data["scale"]) == 2
    config = vaekit.RunConfig.load(tmp_path / "run" / "config.json")
    assert config.model.likelihood == "gaussian-perdim"


def test_table_run_plots_features_not_image_grids_and_reports_per_example(tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", TABLE)
    args = ["train", "--data", path, "--label-column", "label", "--id-column", "id"]
    args += ["--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--quiet"]
    code, out, err = run_cli([*args, "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    run = tmp_path / "run"
    assert not (run / "samples.png").exists() and not (run / "reconstructions.png").exists()
    assert (run / "feature_reconstructions.png").stat().st_size > 0
    assert "nats per example" in out and "per image" not in out and "bits/dim" not in out
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["kind"] == "table" and data["shape"] == [2]


def test_conv_on_a_table_is_a_one_line_config_error(tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", TABLE)
    args = ["train", "--data", path, "--label-column", "label", "--id-column", "id"]
    code, _, err = run_cli([*args, "--arch", "conv", "--out", tmp_path / "run"], capsys)
    assert_one_line_error(code, err)
    assert "arch 'conv' needs images" in err and "table of 2 features" in err


def test_runs_recording_tables_as_1x1xD_images_still_load():
    raw = {"data": {"name": "csv", "shape": [1, 1, 4]}, "model": {"likelihood": "gaussian-perdim"}}
    config = vaekit.RunConfig.from_dict(raw)
    assert config.data.shape == [4] and config.data.kind == "table"
    old = Gaussian((1, 1, 4), per_dim=True)
    old.log_scale.data = torch.arange(4.0).view(1, 1, 4)
    new = Gaussian((4,), per_dim=True)
    load_weights_into(new, old.state_dict(), Path("old-run/model.safetensors"))
    assert torch.equal(new.log_scale.data, torch.arange(4.0))
    with pytest.raises(RunError, match="log_scale: file has"):  # other shapes still refused
        load_weights_into(new, Gaussian((2, 2), per_dim=True).state_dict(), Path("x"))


# --- --data PATH --------------------------------------------------------------------------
def test_data_path_picks_the_loader(tmp_path):
    names = ("a.csv", "a.tsv", "a.npy", "a.npz", "a.txt", "a.smi", "a.docx")
    for name in names:
        (tmp_path / name).write_text("")
    assert [dataset_for_path(tmp_path / n) for n in names[:-1]] == [
        "csv",
        "csv",
        "array",
        "array",
        "sequences",
        "sequences",
    ]
    assert dataset_for_path(tmp_path) == "folder"
    with pytest.raises(DataError, match="unknown data format '.docx'"):
        dataset_for_path(tmp_path / "a.docx")
    with pytest.raises(DataError, match="not found"):
        dataset_for_path(tmp_path / "missing.csv")


def test_config_checks_own_data_options():
    with pytest.raises(ConfigError, match="test_fraction"):
        vaekit.RunConfig.from_dict({"data": {"test_fraction": 1.0}})
    with pytest.raises(ConfigError, match="data.color"):
        read_items(DataConfig(name="folder", path=".", color="sepia"))
