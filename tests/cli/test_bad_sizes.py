"""Bad inputs of the resource-limit and shape families, run through the CLI like the corpus
in test_bad_inputs.py (same checks: exit 2, one line naming the file or option, no
traceback, nothing on disk changed): sizes from the command line beyond what can be
allocated, files whose headers declare more than they hold or than memory, decompression
bombs, and arrays of shapes or values that do not fit."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import test_bad_inputs as corpus
from PIL import Image
from test_bad_inputs import IMAGES, Case, Good, cli, idx_header, npy_bytes, on_data, own_file

from helpers import SIDE
from vaekit.cli import make_parser
from vaekit.cli.args import MAX_IMAGES, MAX_LAYER, MAX_SEED

good = corpus.good  # the tiny dataset and run the cases break (module-scoped fixture)
case_dir = corpus.case_dir


# --- files the cases write ----------------------------------------------------------------------
def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height greyscale pixels (no real data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def bomb_folder(side: int):
    """`train --data FOLDER` on a folder of one good image and one declaring side x side."""

    def setup(tmp: Path, good: Good) -> list:
        folder = tmp / "images"
        folder.mkdir()
        Image.new("L", (SIDE, SIDE), 7).save(folder / "a.png")
        corpus.write(folder / "bomb.png", png_declaring(side, side))
        return ["train", "--data", folder, "--quiet", "--out", tmp / "o"]

    return setup


def interpolate_bomb(tmp: Path, good: Good) -> list:
    run = corpus.copy_run(tmp, good)
    bomb = corpus.write(tmp / "bomb.png", png_declaring(30000, 30000))
    return ["interpolate", run, "--from", bomb, "--to", "1"]


def gzip_bomb(header: bytes, zeros: int) -> bytes:
    """gzip of `header` and `zeros` zero bytes, compressed piecewise."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0) as f:
        f.write(header)
        for _ in range(zeros >> 20):
            f.write(bytes(1 << 20))
    return out.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    out = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue()


def npz_declaring(shape: tuple[int, ...]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("x.npy", npy_header(shape))
    return out.getvalue()


def idx_bomb(tmp: Path, good: Good) -> list:
    """`train` on the tiny data whose training images inflate to 64 MB past their header
    (written when the case runs, not when the module is imported)."""
    bomb = gzip_bomb(idx_header(8, (64, SIDE, SIDE)), 64 << 20)
    return corpus.on_data_file(IMAGES, bomb)(tmp, good)


RGB_LAST = np.zeros((64, SIDE, SIDE, 2), np.uint8)
HUGE = str(10**20)

CASES = [
    # --- sizes from the command line ------------------------------------------------------------
    Case("seed of 21 digits", cli("train", "--seed", HUGE), ("--seed", HUGE)),
    Case("negative seed", cli("train", "--seed", "-1"), ("--seed", "-1")),
    Case("seed one past the largest", cli("train", "--seed", str(MAX_SEED + 1)), ("--seed",)),
    Case("sample: seed of 21 digits", cli("sample", "{tmp}/run", "--seed", HUGE), ("--seed",)),
    Case("evaluate: seed 2**64", cli("evaluate", "{tmp}/run", "--seed", str(2**64)), ("--seed",)),
    Case("anomaly: seed of 21 digits", cli("anomaly", "{tmp}/run", "--seed", HUGE), ("--seed",)),
    Case("latent: seed of 21 digits", cli("latent", "{tmp}/run", "--seed", HUGE), ("--seed",)),
    Case("latent dim 2e10", cli("train", "--latent-dim", "20000000000"), ("--latent-dim", "at most")),
    Case("latent dim in exponent notation", cli("train", "--latent-dim", "2e10"), ("--latent-dim", "2e10")),
    Case("hidden layer of 10^11", cli("train", "--hidden", "512,100000000000"), ("--hidden", "at most")),
    Case("channels of 10^9", cli("train", "--arch", "conv", "--channels", "1000000000"), ("--channels", "at most")),
    Case("hvae latent layers of 10^9", cli("train", "--latent-layers", "1000000000,2"), ("--latent-layers", "at most")),
    Case("vamp components of 10^9", cli("train", "--prior-components", "1000000000"), ("--prior-components", "at most")),
    Case("sample -n 1e9", cli("sample", "{tmp}/run", "-n", "1000000000"), ("-n", "at most")),
    Case("reconstruct -n 1e9", cli("reconstruct", "{tmp}/run", "-n", "1000000000"), ("-n", "at most")),
    Case("train --n-samples 1e9", cli("train", "--n-samples", "1000000000"), ("--n-samples", "at most")),
    Case("manifold grid of 10^5", cli("manifold", "{tmp}/run", "--grid", "100000"), ("--grid", "at most")),
    Case("interpolate steps of 10^9", cli("interpolate", "{tmp}/run", "--from", "0", "--to", "1", "--steps", "1000000000"), ("--steps", "at most")),
    Case("traverse steps of 10^9", cli("traverse", "{tmp}/run", "--steps", "1000000000"), ("--steps", "at most")),
    Case("IWAE training with 10^9 samples", cli("train", "--iw-k", "1000000000"), ("--iw-k", "at most")),
    Case("evaluate --k 10^12", cli("evaluate", "{tmp}/run", "--k", "1,1000000000000"), ("--k", "at most")),
    Case("anomaly --samples 10^9", cli("anomaly", "{tmp}/run", "--samples", "1000000000"), ("--samples", "at most")),
    Case("resize to 100000x100000", cli("train", "--resize", "100000x100000"), ("--resize", "at most")),
    Case("threads 10^9", cli("train", "--threads", "1000000000"), ("--threads", "at most")),
    # --- images: decompression bombs ------------------------------------------------------------
    Case("folder: image declaring 30000x30000", bomb_folder(30000), ("{tmp}/images/bomb.png", "too many pixels")),
    Case("folder: image declaring 9000x9000", bomb_folder(9000), ("{tmp}/images/bomb.png", "9000x9000")),
    Case("interpolate from an image declaring 30000x30000", interpolate_bomb, ("{tmp}/bomb.png", "pixels")),
    # --- IDX: declared sizes ----------------------------------------------------------------------
    Case("idx: gzip inflating far past its header", idx_bomb, ("train-images-idx3-ubyte.gz", "trailing bytes")),
    Case("idx: header declaring petabytes", corpus.on_data_file(IMAGES, gzip.compress(idx_header(8, (1 << 20, 1 << 20, 1 << 10)))), ("train-images-idx3-ubyte.gz", "memory")),
    Case("idx: header declaring more than the gzip can hold", corpus.on_data_file(IMAGES, gzip.compress(idx_header(8, (1 << 20, 28, 28)))), ("train-images-idx3-ubyte.gz", "can hold")),
    Case("idx: raw file shorter than its header", corpus.on_data_file(IMAGES, idx_header(8, (1 << 30, 28, 28)) + bytes(64)), ("train-images-idx3-ubyte.gz", "truncated")),
    Case("idx: images with 2 channels last", on_data(**{IMAGES: RGB_LAST}), ("train-images-idx3-ubyte.gz", "channels")),
    # --- .npy / .npz: declared shapes -------------------------------------------------------------
    Case("npy: header declaring 10^9 rows", own_file("x.npy", npy_header((10**9, 784)) + bytes(64)), ("{tmp}/x.npy", "(1000000000, 784)")),
    Case("npy: shorter than its header", own_file("x.npy", npy_header((1000, 8)) + bytes(320)), ("{tmp}/x.npy", "(1000, 8)", "truncated")),
    Case("npz: member declaring terabytes", own_file("x.npz", npz_declaring((10**9, 10**6))), ("{tmp}/x.npz[x]", "declares")),
    # --- shapes and values that do not fit --------------------------------------------------------
    Case("npy: no features", own_file("x.npy", npy_bytes(np.zeros((50, 0), np.float32))), ("{tmp}/x.npy", "no features")),
    Case("npy: complex values", own_file("x.npy", npy_bytes(np.ones((50, 4), np.complex64))), ("{tmp}/x.npy", "complex")),
    Case("npy: images with 5 channels last", own_file("x.npy", npy_bytes(np.zeros((50, 8, 8, 5), np.uint8))), ("{tmp}/x.npy", "channels")),
    Case("npy: pixels 0-255 stored as floats", own_file("x.npy", npy_bytes(np.full((50, 8, 8), 200.0, np.float32))), ("{tmp}/x.npy", "divide by 255")),
]  # fmt: skip


def test_limits_corpus_is_large_and_distinct():
    names = [case.name for case in CASES] + [case.name for case in corpus.CASES]
    assert len(CASES) >= 20 and len(set(names)) == len(names)


def test_limits_are_sane():
    assert MAX_SEED == 2**63 - 1 and MAX_LAYER >= 4096 and MAX_IMAGES >= 1000


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_limit_case(case: Case, good: Good, case_dir: Path, capsys):
    argv = case.setup(case_dir, good)
    corpus.assert_clean_failure(case_dir, argv, case.expect, capsys)


def test_largest_seed_is_accepted():
    args = make_parser().parse_args(["train", "--seed", str(MAX_SEED)])
    assert args.seed == MAX_SEED
