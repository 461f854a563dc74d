"""A corpus of bad inputs, each run through the CLI in-process.

Every case must end with exit code 2, exactly one line on stderr naming the file (or the
option) and the problem, no traceback, and no file created, changed or deleted in the
case's folder (which is also the working directory, so stray `runs/` folders count).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import vaekit
from helpers import SIDE, write_data_folder
from vaekit.cli import main, make_parser

# --- the good things the cases break ----------------------------------------------------------


@dataclass
class Good:
    data: Path  # the tiny dataset (outside every case's folder: read, never written)
    run: Path  # a finished 1-epoch run on it (copied into a case's folder before use)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Good:
    root = tmp_path_factory.mktemp("good")
    data = write_data_folder(root / "data")
    raw = {
        "name": "tiny",
        "data": {"path": str(data)},
        "model": {"hidden": [8], "latent_dim": 2},
        "train": {"epochs": 1, "batch_size": 16},
    }
    run = vaekit.train(raw, root / "run", progress=False, outputs=False)
    return Good(data, run.path)


# --- helpers the cases use --------------------------------------------------------------------
def copy_run(tmp: Path, good: Good, name: str = "run") -> Path:
    return Path(shutil.copytree(good.run, tmp / name))


def copy_data(tmp: Path, good: Good) -> Path:
    return Path(shutil.copytree(good.data, tmp / "data"))


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def write(path: Path, content: str | bytes | dict) -> Path:
    """Write `content` (text, bytes, or a dict as JSON) to `path`."""
    if isinstance(content, dict):
        content = json.dumps(content)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def config_file(tmp: Path, content: str | bytes | dict) -> Path:
    """A --config file holding `content`."""
    return write(tmp / "config.json", content)


def train_on(data: Path, tmp: Path, *extra: str) -> list[str]:
    return ["train", "--data-path", data, "--quiet", "--out", tmp / "out", *extra]


def idx_header(type_code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


class Payload:
    """Unpickling this creates a file `pwned` (what a malicious checkpoint would do); the
    snapshot check then fails, so a case also proves the pickle was never executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# --- the corpus: (name, setup(tmp, good) -> argv, substrings of the error line) ---------------
@dataclass
class Case:
    name: str
    setup: Callable[[Path, Good], list]
    expect: tuple[str, ...]  # "{tmp}" stands for the case's folder


def cli(*argv: str) -> Callable[[Path, Good], list]:
    """A case that needs no files: argv as given ("{tmp}" is replaced)."""
    return lambda tmp, good: [a.replace("{tmp}", str(tmp)) for a in argv]


def on_data(*extra: str, **override) -> Callable[[Path, Good], list]:
    """`train` on a tiny data folder whose arrays `override` replaces."""
    return lambda tmp, good: train_on(write_data_folder(tmp / "data", **override), tmp, *extra)


def on_data_file(stem: str, content: bytes) -> Callable[[Path, Good], list]:
    """`train` on a copy of the tiny data folder with file `stem`.gz replaced by `content`."""

    def setup(tmp: Path, good: Good) -> list:
        data = copy_data(tmp, good)
        (data / f"{stem}.gz").write_bytes(content)
        return train_on(data, tmp)

    return setup


def on_config(content: str | bytes | dict) -> Callable[[Path, Good], list]:
    return lambda tmp, good: ["train", "--config", config_file(tmp, content), "--out", tmp / "o"]


def on_run(command: list[str], damage: Callable[[Path], None]) -> Callable[[Path, Good], list]:
    """`command RUN` on a copy of the good run damaged by `damage(run)`."""

    def setup(tmp: Path, good: Good) -> list:
        run = copy_run(tmp, good)
        damage(run)
        return [command[0], run, *command[1:]]

    return setup


def resume(damage: Callable[[Path], None], *extra: str) -> Callable[[Path, Good], list]:
    """`train --resume RUN --epochs 2` (or `extra` for --epochs 2) on a damaged copy."""

    def setup(tmp: Path, good: Good) -> list:
        run = copy_run(tmp, good)
        damage(run)
        return ["train", "--resume", run, "--quiet", *(extra or ("--epochs", "2"))]

    return setup


def good_config(**sections) -> dict:
    raw = vaekit.RunConfig().to_dict()
    for section, change in sections.items():
        if isinstance(change, dict):
            raw[section].update(change)
        else:
            raw[section] = change
    return raw


def truncate(name: str, keep: float = 0.5) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        raw = (run / name).read_bytes()
        (run / name).write_bytes(raw[: int(len(raw) * keep)])

    return damage


def remove(*names: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        for name in names:
            (run / name).unlink()

    return damage


def run_config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda run: edit_json(run / "config.json", change)


def put_pickle(name: str, with_torch: bool = False) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        payload = {"state_dict": Payload(run / "pwned")}
        if with_torch:
            torch.save(payload, run / name)
        else:
            (run / name).write_bytes(pickle.dumps(payload))

    return damage


def drop_tensor(name: str, prefix: str = "") -> Callable[[Path], None]:
    """Rewrite safetensors file `name` without its first tensor whose key starts with prefix."""

    def damage(run: Path) -> None:
        from safetensors import safe_open

        with safe_open(str(run / name), "pt") as f:
            meta = f.metadata()
        tensors = load_file(str(run / name))
        del tensors[next(k for k in sorted(tensors) if k.startswith(prefix))]
        save_file(tensors, str(run / name), metadata=meta)

    return damage


def nan_weights(run: Path) -> None:
    tensors = load_file(str(run / "model.safetensors"))
    key = sorted(tensors)[0]
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(run / "model.safetensors"), metadata={"vaekit": '{"kind": "weights"}'})


def weights_as_checkpoint(run: Path) -> None:
    shutil.copy(run / "model.safetensors", run / "checkpoint.safetensors")


def bad_metrics(run: Path) -> None:
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_loss": \n')


def data_path_to(path: str) -> Callable[[Path], None]:
    return run_config(lambda c: c["data"].update(path=path))


def junk_png(run: Path) -> str:
    """A .png file that starts like one and then holds nothing."""
    return str(write(run / "bad.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20))


def interpolate_from(spec: Callable[[Path], str]) -> Callable[[Path, Good], list]:
    def setup(tmp: Path, good: Good) -> list:
        run = copy_run(tmp, good)
        return ["interpolate", run, "--from", spec(run), "--to", "1"]

    return setup


def grey_png(run: Path, size: int) -> str:
    path = run.parent / f"grey{size}.png"
    Image.new("L", (size, size), 128).save(path)
    return str(path)


def own_file(name: str, content: str | bytes) -> Callable[[Path, Good], list]:
    """`train --data FILE` on a file of your own holding `content`."""

    def setup(tmp: Path, good: Good) -> list:
        return ["train", "--data", write(tmp / name, content), "--quiet", "--out", tmp / "o"]

    return setup


def image_folder(*sizes: int, junk: bool = False, subfolder: bool = False):
    """`train --data FOLDER` on grey PNGs of `sizes` (plus a junk .png, or a sub-folder)."""

    def setup(tmp: Path, good: Good) -> list:
        folder = tmp / "images"
        folder.mkdir()
        for i, size in enumerate(sizes):
            Image.new("L", (size, size), 40 * i).save(folder / f"im{i}.png")
        if junk:
            write(folder / "im9.png", b"not a png at all")
        if subfolder:
            (folder / "cats").mkdir()
        return ["train", "--data", folder, "--quiet", "--out", tmp / "o"]

    return setup


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def apply_to(command: str, *extra: str, data: tuple[str, str | bytes] | None = None):
    """`COMMAND RUN ...` on a copy of the good run, with `--data FILE` holding data[1]."""

    def setup(tmp: Path, good: Good) -> list:
        run = copy_run(tmp, good)
        argv = [command, run, *[a.replace("{tmp}", str(tmp)) for a in extra]]
        if data is not None:
            argv += ["--data", write(tmp / data[0], data[1])]
        return argv

    return setup


CSV = "a,b,c\n1,2,0\n3,4,1\n5,6,0\n"
SAMPLE = np.arange(64 * SIDE * SIDE, dtype=np.uint8).reshape(64, SIDE, SIDE)
IMAGES = "train-images-idx3-ubyte"
LABELS = "train-labels-idx1-ubyte"
IDX_IMAGES = idx_header(8, SAMPLE.shape) + SAMPLE.tobytes()

CASES = [
    # --- command-line values ------------------------------------------------------------------
    Case("unknown dataset", cli("train", "--dataset", "nope", "--out", "{tmp}/o"), ("unknown dataset 'nope'",)),
    Case("unknown model", on_data("--model", "transformer"), ("unknown model 'transformer'",)),
    Case("unknown preset", cli("train", "--preset", "huge"), ("--preset", "huge")),
    Case("unknown arch", cli("train", "--arch", "rnn"), ("unknown arch", "rnn", "--plugin")),
    Case("negative batch size", cli("train", "--batch-size", "-5"), ("--batch-size", "-5")),
    Case("zero latent dim", cli("train", "--latent-dim", "0"), ("--latent-dim", "must be >= 1")),
    Case("zero test limit", cli("train", "--limit-test", "0"), ("--limit-test",)),
    Case("negative checkpoint interval", cli("train", "--checkpoint-every", "-1"), ("--checkpoint-every",)),
    Case("infinite learning rate", cli("train", "--lr", "inf"), ("--lr", "inf")),
    Case("NaN beta", cli("train", "--beta", "nan"), ("--beta", "nan")),
    Case("negative gradient clipping", cli("train", "--grad-clip", "-1"), ("--grad-clip", "-1")),
    Case("negative weight decay", cli("train", "--weight-decay", "-1"), ("--weight-decay", "-1")),
    Case("text as a size", cli("train", "--hidden", "big"), ("--hidden", "'big'")),
    Case("mlp without dense layers", on_data("--hidden", "none"), ("model.hidden", "non-empty for arch mlp")),
    Case("binarised data, Gaussian likelihood", on_data("--binarize", "dynamic", "--likelihood", "gaussian"), ("binarize", "bernoulli")),
    Case("free bits with IWAE", on_data("--free-bits", "1", "--iw-k", "5"), ("free_bits", "iw_k")),
    Case("free bits for an autoencoder", on_data("--model", "ae", "--free-bits", "1"), ("model ae trains on its own objective",)),
    Case("unknown device", cli("train", "--device", "tpu"), ("train.device", "'tpu'")),
    Case("zero time budget", cli("train", "--time-budget=0"), ("--time-budget", "duration")),
    Case("time budget without a number", cli("train", "--time-budget", "soon"), ("--time-budget", "'soon'")),
    Case("unknown learning-rate schedule", cli("train", "--lr-schedule", "linear"), ("--lr-schedule", "linear")),
    Case("final learning rate above the first", on_data("--lr-schedule", "cosine", "--lr-min", "1"), ("train.lr_min",)),
    Case("validation split as large as the data", on_data("--valid-size", "64"), ("data.valid_size 64", "leaves no training examples")),
    Case("fewer labels than classes", on_data("--model", "m2", "--labeled", "2"), ("model.labeled", "number of classes")),
    Case("m1m2 without features", on_data("--model", "m1m2"), ("--features",)),
    Case("m1m2 features from a run that is not a vae", lambda tmp, good: train_on(good.data, tmp, "--model", "m1m2", "--features", str(tmp / "absent")), ("{tmp}/absent", "run folder not found")),
    Case("hvae with one latent layer", on_data("--model", "hvae", "--latent-layers", "4"), ("two or more",)),
    Case("classify with a model without a classifier", on_run(["classify"], lambda run: None), ("no classifier",)),
    Case("config and preset", lambda tmp, good: ["train", "--config", config_file(tmp, {}), "--preset", "reference"], ("--config or --preset",)),
    Case("output folder not empty", lambda tmp, good: ["train", "--data-path", good.data, "--out", copy_run(tmp, good)], ("{tmp}/run", "already exists and is not empty")),
    Case("resume with a new learning rate", lambda tmp, good: ["train", "--resume", copy_run(tmp, good), "--lr", "0.1"], ("--resume", "only --epochs, --time-budget, --steps and --early-stop may change")),
    Case("resume a finished run", resume(lambda run: None, "--epochs", "1"), ("{tmp}/run", "already trained for 1 of 1 epochs")),
    Case("label of an unconditional model", on_run(["sample", "--label", "3"], lambda run: None), ("--label needs a conditional model",)),
    Case("unknown split", on_run(["evaluate", "--split", "holdout", "--quiet"], lambda run: None), ("no split 'holdout'",)),
    Case("zero importance samples", on_run(["evaluate", "--k", "0"], lambda run: None), ("--k",)),
    Case("no such latent dimension", on_run(["traverse", "--dims", "0,7"], lambda run: None), ("--dims 7", "no such latent dimension")),
    Case("no such test image", on_run(["traverse", "--index", "32"], lambda run: None), ("--index 32", "no such test image")),
    Case("image file not found", interpolate_from(lambda run: str(run.parent / "absent.png")), ("{tmp}/absent.png", "not found")),
    Case("image file that does not decode", interpolate_from(junk_png), ("{tmp}/run/bad.png", "not a readable image")),
    Case("image of another size", interpolate_from(lambda run: grey_png(run, 28)), ("{tmp}/grey28.png", "28x28", "8x8")),
    Case("output not a png", on_run(["manifold", "-o", "m.jpg"], lambda run: None), ("m.jpg", ".png")),
    Case("unknown model to compare", cli("compare", "--models", "vae,gan", "--out", "{tmp}/cmp"), ("unknown model 'gan'",)),
    Case("compare: free bits for an autoencoder", lambda tmp, good: ["compare", "--models", "vae,ae", "--free-bits", "1", "--data-path", good.data, "--out", tmp / "cmp"], ("model ae trains on its own objective",)),
    Case("same model twice in compare", cli("compare", "--models", "vae,vae", "--out", "{tmp}/cmp"), ("--models", "distinct")),
    # --- configuration files ------------------------------------------------------------------
    Case("config: unknown key", on_config(good_config(model={"latent": 3})), ("{tmp}/config.json", "unknown key 'latent'")),
    Case("config: wrong type", on_config(good_config(train={"epochs": "ten"})), ("{tmp}/config.json", "train.epochs", "'ten'")),
    Case("config: out of range", on_config(good_config(train={"batch_size": 0})), ("{tmp}/config.json", "train.batch_size must be >= 1")),
    Case("config: infinite learning rate", on_config('{"train": {"lr": Infinity}}'), ("{tmp}/config.json", "train.lr")),
    Case("config: NaN beta", on_config('{"train": {"beta": NaN}}'), ("{tmp}/config.json", "train.beta")),
    Case("config: negative gradient clipping", on_config(good_config(train={"grad_clip": -0.5})), ("{tmp}/config.json", "train.grad_clip must be >= 0")),
    Case("config: negative weight decay", on_config(good_config(train={"weight_decay": -1e-4})), ("{tmp}/config.json", "train.weight_decay must be >= 0")),
    Case("config: bad data shape", on_config(good_config(data={"shape": [1, 0, 28]})), ("{tmp}/config.json", "data.shape")),
    Case("config: invalid JSON", on_config('{"train": {"epochs": 3,}}'), ("{tmp}/config.json", "not valid JSON")),
    Case("config: empty file", on_config(""), ("{tmp}/config.json", "not valid JSON")),
    Case("config: binary file", on_config(b"\xff\xfe\x00garbage"), ("{tmp}/config.json", "not valid JSON")),
    Case("config: a list", on_config("[1, 2]"), ("{tmp}/config.json", "expected a mapping")),
    Case("config: newer version", on_config(good_config(version=99)), ("{tmp}/config.json", "newer")),
    Case("config: a folder", lambda tmp, good: ["train", "--config", tmp, "--out", tmp / "o"], ("{tmp}", "is a folder, expected a config file")),
    Case("config: not found", cli("train", "--config", "{tmp}/absent.json"), ("{tmp}/absent.json", "not found")),
    # --- data files ---------------------------------------------------------------------------
    Case("data: corrupt gzip", on_data_file(IMAGES, b"\x1f\x8b\x08\x00" + b"\xff" * 64), ("{tmp}/data/train-images-idx3-ubyte.gz", "corrupt gzip")),
    Case("data: truncated gzip", on_data_file(IMAGES, gzip.compress(IDX_IMAGES)[:-40]), ("{tmp}/data/train-images-idx3-ubyte.gz", "gzip")),
    Case("data: wrong IDX magic", on_data_file(IMAGES, gzip.compress(b"\x08\x03" + IDX_IMAGES[2:])), ("train-images-idx3-ubyte.gz", "magic")),
    Case("data: truncated IDX", on_data_file(IMAGES, gzip.compress(IDX_IMAGES[:-100])), ("train-images-idx3-ubyte.gz", "truncated")),
    Case("data: empty file", on_data_file(LABELS, b""), ("train-labels-idx1-ubyte.gz", "too short")),
    Case("data: label count mismatch", on_data(**{LABELS: np.zeros(60, np.uint8)}), ("train-labels-idx1-ubyte.gz", "60 labels for 64 images")),
    Case("data: float pixels", on_data_file(IMAGES, idx_header(0x0D, (64, SIDE, SIDE)) + np.ones((64, SIDE, SIDE), ">f4").tobytes()), ("train-images-idx3-ubyte.gz", "uint8")),
    Case("data: train and test sizes differ", on_data(**{"t10k-images-idx3-ubyte": np.zeros((32, 6, 6), np.uint8)}), ("t10k-images-idx3-ubyte.gz", "6x6", "8x8")),
    Case("data: no images", on_data(n_train=0), ("train-images-idx3-ubyte.gz", "no images")),
    Case("data: missing file", lambda tmp, good: train_on(remove("t10k-labels-idx1-ubyte.gz")(copy_data(tmp, good)) or tmp / "data", tmp), ("{tmp}/data", "missing t10k-labels-idx1-ubyte")),
    Case("data: folder not found", cli("train", "--data-path", "{tmp}/nodata", "--out", "{tmp}/o"), ("{tmp}/nodata", "not found")),
    Case("data: binarized MNIST corrupt", lambda tmp, good: ["train", "--dataset", "binarized-mnist", "--data-path", write_amat(tmp), "--out", tmp / "o"], ("binarized_mnist_train.amat", "checksum")),
    # --- your own data: image folders, CSV tables, arrays --------------------------------------
    Case("own data: path not found", cli("train", "--data", "{tmp}/absent.csv"), ("{tmp}/absent.csv", "not found")),
    Case("own data: unknown format", own_file("data.docx", "1 2 3\n"), ("{tmp}/data.docx", "unknown data format '.docx'")),
    Case("own data: test fraction 1.5", lambda tmp, good: own_file("t.csv", CSV)(tmp, good) + ["--test-fraction", "1.5"], ("test_fraction", "between 0 and 1")),
    Case("folder: an image that does not decode", image_folder(8, 8, junk=True), ("{tmp}/images/im9.png", "not a readable image")),
    Case("folder: images of two sizes", image_folder(8, 8, 6), ("{tmp}/images/im2.png", "6x6", "8x8")),
    Case("folder: no images", image_folder(), ("{tmp}/images", "no image files")),
    Case("folder: images and sub-folders mixed", image_folder(8, 8, subfolder=True), ("{tmp}/images", "both images", "sub-folders")),
    Case("folder: bad resize", lambda tmp, good: image_folder(8, 8)(tmp, good) + ["--resize", "0x8"], ("--resize",)),
    Case("csv: NaN", own_file("t.csv", CSV.replace("3,4", "nan,4")), ("{tmp}/t.csv: row 2 (line 3), column 'a'", "NaN")),
    Case("csv: infinity", own_file("t.csv", CSV.replace("6,0", "inf,0")), ("{tmp}/t.csv: row 3", "column 'b'", "infinite")),
    Case("csv: text in a feature column", own_file("t.csv", CSV.replace("5,6", "five,6")), ("{tmp}/t.csv: row 3", "'five' is not a number")),
    Case("csv: empty cell", own_file("t.csv", CSV.replace("1,2", "1,")), ("{tmp}/t.csv: row 1", "column 'b'", "empty cell")),
    Case("csv: ragged row", own_file("t.csv", CSV + "7,8\n"), ("{tmp}/t.csv: row 4", "missing")),
    Case("csv: empty file", own_file("t.csv", ""), ("{tmp}/t.csv", "empty file")),
    Case("csv: header only", own_file("t.csv", "a,b\n"), ("{tmp}/t.csv", "no data rows")),
    Case("csv: not UTF-8", own_file("t.csv", b"a,b\n\xff\xfe,1\n"), ("{tmp}/t.csv", "UTF-8")),
    Case("csv: unknown label column", lambda tmp, good: own_file("t.csv", CSV)(tmp, good) + ["--label-column", "kind"], ("{tmp}/t.csv", "no column 'kind'")),
    Case("npy: corrupt", own_file("x.npy", b"\x93NUMPY garbage"), ("{tmp}/x.npy", "not a readable .npy/.npz file")),
    Case("npy: pickled objects", own_file("x.npy", npy_bytes(np.array([{"a": 1}, None], dtype=object))), ("{tmp}/x.npy", "not a readable .npy/.npz file")),
    Case("npy: NaN", own_file("x.npy", npy_bytes(np.array([[0.5, np.nan]] * 4, np.float32))), ("{tmp}/x.npy", "NaN")),
    # --- applications of a trained run: anomaly, denoise, encode -------------------------------
    Case("encode: output not .npy or .csv", apply_to("encode", "-o", "{tmp}/codes.txt"), ("codes.txt", ".npy or .csv")),
    Case("anomaly: quantile out of range", apply_to("anomaly", "--threshold-quantile", "1.5"), ("--threshold-quantile", "between 0 and 1")),
    Case("denoise: unknown noise", apply_to("denoise", "--noise", "pink:0.3"), ("pink",)),
    Case("encode: data of another shape", apply_to("encode", "-o", "{tmp}/z.npy", data=("x.npy", npy_bytes(np.zeros((3, 5, 5), np.uint8)))), ("{tmp}/x.npy",)),
    Case("anomaly: corrupt CSV", apply_to("anomaly", data=("new.csv", "a,b\n1\n")), ("{tmp}/new.csv: row 1", "missing")),
    # --- run folders --------------------------------------------------------------------------
    Case("run: no config", on_run(["info"], remove("config.json")), ("{tmp}/run", "not a vaekit run folder")),
    Case("run: config not JSON", on_run(["sample"], lambda run: (run / "config.json").write_text("{")), ("{tmp}/run/config.json", "not valid JSON")),
    Case("run: config from a newer vaekit", on_run(["info"], run_config(lambda c: c.update(version=99))), ("{tmp}/run/config.json", "newer")),
    Case("run: shape not recorded", on_run(["sample"], run_config(lambda c: c["data"].update(shape=None))), ("{tmp}/run/config.json", "shape")),
    Case("run: weights missing", on_run(["sample"], remove("model.safetensors", "checkpoint.safetensors")), ("{tmp}/run", "no weights")),
    Case("run: weights missing, evaluate", on_run(["evaluate"], remove("model.safetensors")), ("{tmp}/run/model.safetensors", "not found")),
    Case("run: weights truncated", on_run(["sample"], truncate("model.safetensors")), ("{tmp}/run/model.safetensors", "not a readable safetensors file")),
    Case("run: weights empty", on_run(["reconstruct"], truncate("model.safetensors", 0)), ("{tmp}/run/model.safetensors", "not a readable safetensors file")),
    Case("run: weights of another shape", on_run(["latent"], run_config(lambda c: c["model"].update(latent_dim=3))), ("{tmp}/run/model.safetensors", "do not match the config")),
    Case("run: weights of another architecture", on_run(["manifold"], run_config(lambda c: c["model"].update(hidden=[8, 8]))), ("{tmp}/run/model.safetensors", "do not match the config")),
    Case("run: weights missing a tensor", on_run(["traverse"], drop_tensor("model.safetensors")), ("{tmp}/run/model.safetensors", "missing")),
    Case("run: NaN weights", on_run(["sample"], nan_weights), ("{tmp}/run/model.safetensors", "NaN")),
    Case("run: pickle as weights", on_run(["sample"], put_pickle("model.safetensors")), ("{tmp}/run/model.safetensors", "pickle", "never unpickles")),
    Case("run: torch.save file as weights", on_run(["info"], put_pickle("model.safetensors", True)), ("{tmp}/run/model.safetensors", "torch.save", "never unpickles")),
    Case("run: pickle as checkpoint", resume(put_pickle("checkpoint.safetensors")), ("{tmp}/run/checkpoint.safetensors", "never unpickles")),
    Case("run: no checkpoint to resume", resume(remove("checkpoint.safetensors")), ("{tmp}/run", "no checkpoint")),
    Case("run: truncated checkpoint", resume(truncate("checkpoint.safetensors", 0.9)), ("{tmp}/run/checkpoint.safetensors", "not a readable safetensors file")),
    Case("run: weights file as checkpoint", resume(weights_as_checkpoint), ("{tmp}/run/checkpoint.safetensors", "not a vaekit training checkpoint")),
    Case("run: checkpoint without RNG state", resume(drop_tensor("checkpoint.safetensors", "rng.")), ("{tmp}/run/checkpoint.safetensors", "rng.cpu")),
    Case("run: checkpoint of another model", resume(run_config(lambda c: c["model"].update(latent_dim=3))), ("{tmp}/run/checkpoint.safetensors", "do not match the config")),
    Case("run: corrupt metrics", on_run(["info"], bad_metrics), ("{tmp}/run/metrics.jsonl:2", "not valid JSON")),
    Case("run: its data folder is gone", on_run(["reconstruct"], data_path_to("/nonexistent/data")), ("/nonexistent/data", "not found")),
    Case("run: a file, not a folder", lambda tmp, good: ["info", config_file(tmp, {})], ("{tmp}/config.json", "is a file, expected a run folder")),
]  # fmt: skip


def write_amat(tmp: Path) -> Path:
    """A binarized-MNIST folder whose three files are well-formed but not the real ones."""
    folder = tmp / "bmnist"
    folder.mkdir()
    line = " ".join(["0"] * 784) + "\n"
    for split in ("train", "valid", "test"):
        (folder / f"binarized_mnist_{split}.amat").write_text(line * 3)
    return folder


# --- the checks -------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` with its modification time and size."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(folder.rglob("*"))
    }


def run_cli(argv: list) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's errors
        return stop.code if isinstance(stop.code, int) else 1


def assert_clean_failure(tmp: Path, argv: list, expect: tuple[str, ...], capsys) -> str:
    """Run argv; exit 2, one stderr line holding every `expect`, nothing on disk changed."""
    capsys.readouterr()
    before = snapshot(tmp)
    code = run_cli(argv)
    out, err = capsys.readouterr()
    after = snapshot(tmp)
    assert "Traceback" not in out + err, err
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vaekit") and ": error: " in lines[0], lines[0]
    for part in expect:
        assert part.replace("{tmp}", str(tmp)) in lines[0], (part, lines[0])
    assert out == "", out
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)}
    return lines[0]


@pytest.fixture
def case_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The case's folder, also the working directory and the cache (so any write shows)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_corpus_is_large_and_distinct():
    names = [case.name for case in CASES]
    assert len(names) >= 30 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case: Case, good: Good, case_dir: Path, capsys):
    argv = case.setup(case_dir, good)
    assert_clean_failure(case_dir, argv, case.expect, capsys)


# --- every command, missing run folder --------------------------------------------------------
# commands that take no run folder (runs: a folder OF runs; completion: a shell name)
NO_RUN_FOLDER = {"compare", "runs", "completion"}
# values for required options, valid on their own ("{tmp}": the case's folder)
DUMMY = {"--from": "0", "--to": "1", "--models": "vae", "-o": "{tmp}/out.npy", "--property": "qed"}


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = make_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sorted(sub.choices.items()))


def missing_run_argv(name: str, parser: argparse.ArgumentParser, missing: Path) -> list | None:
    """argv that points `name` at a missing run folder, or None if it takes none."""
    options = {o for a in parser._actions for o in a.option_strings}
    positionals = [a.dest for a in parser._actions if not a.option_strings]
    if positionals == ["run"]:
        argv = [name, missing]
    elif "--resume" in options:
        argv = [name, "--resume", missing]
    else:
        return None
    for action in parser._actions:
        if action.required and action.option_strings:
            value = DUMMY.get(action.option_strings[0], "1")
            argv += [action.option_strings[0], value.replace("{tmp}", str(missing.parent))]
    return argv


@pytest.mark.parametrize("name", list(command_parsers()))
def test_every_command_with_a_missing_run_folder(name: str, case_dir: Path, capsys):
    argv = missing_run_argv(name, command_parsers()[name], case_dir / "absent")
    if argv is None:
        assert name in NO_RUN_FOLDER, f"{name}: add it to NO_RUN_FOLDER or give it a run case"
        return
    assert_clean_failure(case_dir, argv, ("{tmp}/absent", "run folder not found"), capsys)
