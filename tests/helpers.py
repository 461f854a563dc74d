"""Helpers shared by test modules in several folders (run the CLI in-process, write tiny
image files and datasets); fixtures live in conftest.py."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file

from conftest import synthetic_splits
from vaekit.cli import main
from vaekit.core.errors import VaekitError
from vaekit.data.idx import write_idx
from vaekit.training.trainer import Trainer

SIDE = 8  # the tiny dataset's images are 8x8
TIMING_FIELDS = {"train_seconds"}


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `vaekit ARGS` in-process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as stop:  # argparse exits on --help and on bad values
        code = stop.code if isinstance(stop.code, int) else 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str) -> None:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vaekit") and "error" in lines[0]
    assert "Traceback" not in err


def save_png(path: Path, size=(8, 8), mode: str = "L", seed: int = 0) -> Path:
    """A random image of `size` (height, width) in `mode` (L or RGB)."""
    shape = (*size, 3) if mode == "RGB" else size
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)
    return path


def write_pngs(folder: Path, n: int = 6, seed: int = 0) -> list[Path]:
    """n random 8x8 greyscale images in `folder` (created)."""
    return [save_png(folder / f"img{i:02d}.png", seed=seed + i) for i in range(n)]


def write_data_folder(
    folder: Path,
    n_train: int = 64,
    n_test: int = 32,
    side: int = SIDE,
    classes: int = 4,
    **override,
) -> Path:
    """A tiny MNIST-layout folder (random side x side images, `classes` classes) as four
    gzipped IDX files; `override` swaps any of the arrays."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, classes, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, classes, n_test, dtype=np.uint8),
    } | override
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(folder / f"{stem}.gz", array)
    return folder


def write_bars_and_noise(root: Path, synth) -> Path:
    """data.npz (the synthetic bars, own train/test split) and mix.npz (their test images,
    then 32 uniform-noise images labelled "noise") in `root`."""
    arrays = {"x_train": synth.train.x.numpy(), "y_train": synth.train.y.numpy()}
    arrays |= {"x_test": synth.test.x.numpy(), "y_test": synth.test.y.numpy()}
    np.savez(root / "data.npz", **arrays)
    noise = torch.rand(32, *synth.test.shape, generator=torch.Generator().manual_seed(1))
    labels = [str(k) for k in synth.test.y.tolist()] + ["noise"] * 32
    np.savez(root / "mix.npz", x=torch.cat([synth.test.x, noise]).numpy(), y=np.array(labels))
    return root


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in rows]


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def interrupt_after(monkeypatch, steps: int, how: str) -> None:
    """Make the trainer stop at its `steps`+1-th train_step: like Ctrl-C (SIGINT, the
    trainer saves a checkpoint and stops) or like a crash (nothing saved at that point)."""
    if how == "sigint" and threading.current_thread() is not threading.main_thread():
        pytest.skip("the trainer only handles SIGINT when it runs in the main thread")
    calls = {"n": 0}
    original = Trainer.train_step

    def train_step(self, x):
        calls["n"] += 1
        if calls["n"] > steps and how == "crash":
            raise KeyboardInterrupt
        result = original(self, x)
        if calls["n"] == steps and how == "sigint":
            os.kill(os.getpid(), signal.SIGINT)  # handled by the trainer's stop_requests
        return result

    monkeypatch.setattr(Trainer, "train_step", train_step)


def write_idx_folder(folder: Path) -> Path:
    """The synthetic bar-pattern data as the four MNIST-style files (loads in milliseconds)."""
    splits = synthetic_splits()
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, part in (("train", splits.train), ("t10k", splits.test)):
        pixels = (part.x[:, 0] * 255).round().to(torch.uint8).numpy()
        write_idx(folder / f"{prefix}-images-idx3-ubyte", pixels)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", part.y.numpy().astype(np.uint8))
    return folder


def train_bars_run(root: Path, latent_dim: int = 2) -> Path:
    """A run on the bars (IDX files in root/bars) whose decoder follows z (10 epochs at lr
    0.01, about 2 s; KL about 1.3 nats): opened by path, as `vaekit serve` opens it."""
    data = write_idx_folder(root / "bars")
    run = root / f"bars-z{latent_dim}"
    argv = ["train", "--data-path", data, "--hidden", 32, "--latent-dim", latent_dim]
    argv += ["--epochs", 10, "--batch-size", 32, "--lr", 0.01, "--out", run, "--quiet"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: 2 s on one thread, 13 s on two of a busy machine
    try:
        assert main([str(a) for a in argv]) == 0
    finally:
        torch.set_num_threads(threads)
    return run


# --- fuzzing the readers (tests/data/test_fuzz_readers.py, tests/config/test_fuzz_runs.py)
@st.composite
def corrupted(draw, valid: bytes) -> bytes:
    """`valid` broken one way: truncated, bits flipped, a slice overwritten, junk appended."""
    how = draw(st.sampled_from(["truncate", "flip", "overwrite", "append"]))
    data = bytearray(valid)
    if how == "truncate":
        return bytes(data[: draw(st.integers(0, max(0, len(data) - 1)))])
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if how == "overwrite":
        at = draw(st.integers(0, len(data) - 1))
        junk = draw(st.binary(min_size=1, max_size=16))
        data[at : at + len(junk)] = junk
        return bytes(data)
    return bytes(data) + draw(st.binary(min_size=1, max_size=64))


def check_reads_or_names_file(read: Callable[[Path], object], path: Path, data: bytes) -> None:
    """`read(path)` on a file holding `data`: any result, or a one-line VaekitError naming
    the file; any other exception fails the test (hypothesis shows the bytes)."""
    path.write_bytes(data)
    try:
        read(path)
    except VaekitError as err:
        message = str(err)
        assert str(path) in message, message
        assert "\n" not in message, message


# --- token sequences (tests/data/test_sequences.py, models/test_seqvae.py, cli/...) -------
GRAMMAR_LETTERS = "abcd"


def grammar_lines(n: int = 1000, seed: int = 0) -> list[str]:
    """n strings of 2 to 4 letters drawn uniformly from GRAMMAR_LETTERS (entropy ln 3 +
    3 ln 4 = 5.26 nats each): a decoder that ignores z reproduces few, one that reads z many."""
    g = torch.Generator().manual_seed(seed)
    lines = []
    for _ in range(n):
        length = int(torch.randint(2, 5, (1,), generator=g))
        draws = torch.randint(0, len(GRAMMAR_LETTERS), (length,), generator=g)
        lines.append("".join(GRAMMAR_LETTERS[k] for k in draws))
    return lines


def write_lines(path: Path, lines: list[str]) -> Path:
    """`lines` as a text file, one per line."""
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path
