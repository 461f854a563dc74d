"""What the commands write, and what they say they wrote: exploration never overwrites a
training output, the printed file list is the list of files written, the reconstruction
grid keeps each original above its reconstruction, and a closed pipe ends output quietly."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import assert_one_line_error, run_cli, write_idx_folder
from vaekit.plots import reconstruction_grid


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    """A tiny VAE (z = 3) trained through the CLI on the bar images as an IDX folder."""
    root = tmp_path_factory.mktemp("outputs")
    data = write_idx_folder(root / "bars")
    from vaekit.cli import main

    args = ["train", "--data-path", data, "--epochs", "1", "--hidden", "16", "--latent-dim", "3"]
    assert main([str(a) for a in [*args, "--quiet", "--out", root / "run"]]) == 0
    return root / "run"


def snapshot(root: Path) -> dict[Path, tuple[int, str]]:
    """Every file under root -> its modification time and a hash of its bytes: a file
    rewritten with the same bytes was written too."""
    return {
        p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


EXPLORE = [
    ["sample", "{run}", "-n", "8"],
    ["reconstruct", "{run}", "-n", "8"],
    ["latent", "{run}"],
    ["latent", "{run}", "--method", "pca"],
    ["manifold", "{run}", "--grid", "4"],
    ["interpolate", "{run}", "--from", "0", "--to", "1", "--steps", "3"],
    ["traverse", "{run}", "--steps", "3"],
    ["report", "{run}"],
]


def test_exploration_never_overwrites_a_training_output(image_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for path in image_run.iterdir():
        if path.is_file():
            (run / path.name).write_bytes(path.read_bytes())
    trained = snapshot(run)
    for argv in EXPLORE:
        code, _, err = run_cli([a.format(run=run) for a in argv], capsys)
        assert code == 0, (argv, err)
    after = snapshot(run)
    changed = [p.name for p, digest in trained.items() if after.get(p) != digest]
    assert changed == [], f"exploration overwrote {changed}"
    new = sorted(p.name for p in set(after) - set(trained))
    assert any(n.startswith("latent") for n in new) and any(n.startswith("recon") for n in new)


@pytest.mark.parametrize(
    "argv",
    [
        ["latent", "{run}", "-o", "{run}/latent.png"],
        ["reconstruct", "{run}", "-o", "{run}/reconstructions.png"],
        ["sample", "{run}", "-o", "{run}/samples.png"],
        ["manifold", "{run}", "-o", "{run}/loss_curves.png"],
    ],
)
def test_an_explicit_output_onto_a_training_picture_is_refused(image_run, argv, capsys):
    before = snapshot(image_run)
    code, _, err = run_cli([a.format(run=image_run) for a in argv], capsys)
    assert_one_line_error(code, err)
    assert "training" in err
    assert snapshot(image_run) == before


@pytest.mark.parametrize("count", [1, 5, 16, 20, 33, 40])
def test_the_reconstruction_grid_keeps_originals_above_their_reconstructions(count):
    """Original i black with i+1 white pixels, reconstruction i grey likewise: each
    original's cell is directly above its own reconstruction's, whatever the count."""
    side, pad = 7, 2  # 49 pixels: room for up to 48 marks
    originals = torch.zeros(count, 1, side, side)
    recons = torch.full((count, 1, side, side), 0.5)
    for i in range(count):
        originals[i].view(-1)[: i + 1] = 1.0
        recons[i].view(-1)[: i + 1] = 1.0
    grid = torch.from_numpy(reconstruction_grid(originals, recons, ncols=16)).float() / 255
    cell = side + pad
    cols = (grid.shape[1] - pad) // cell  # at most 16 per row
    assert cols <= 16 and grid.shape[1] == cols * cell + pad

    def cell_at(r: int, c: int) -> torch.Tensor:
        return grid[pad + r * cell : pad + r * cell + side, pad + c * cell : pad + c * cell + side]

    for i in range(count):
        row, col = 2 * (i // cols), i % cols
        top, below = cell_at(row, col), cell_at(row + 1, col)
        assert torch.allclose(top.reshape(-1)[i + 1 :], torch.zeros(1)), (i, "original")
        assert torch.allclose(below.reshape(-1)[i + 1 :], torch.full((1,), 0.5), atol=0.01), i
        assert int((top.reshape(-1) == 1).sum()) == i + 1 == int((below.reshape(-1) == 1).sum())
    assert grid.shape[0] == 2 * -(-count // cols) * cell + pad  # no row left half empty


def printed_paths(out: str) -> set[Path]:
    """The files a command says it wrote: `wrote A, B` lines and `run folder: RUN (a, b)`."""
    paths: set[Path] = set()
    for line in out.splitlines():
        if line.startswith("wrote "):
            paths |= {Path(p) for p in line.removeprefix("wrote ").split(", ")}
        elif line.startswith("run folder: "):
            folder, _, names = line.removeprefix("run folder: ").partition(" (")
            paths |= {Path(folder.strip()) / n for n in names.rstrip(")").split(", ")}
    return paths


def written(before: dict[Path, str], root: Path) -> set[Path]:
    after = snapshot(root)
    return {p for p, digest in after.items() if before.get(p) != digest}


def expand(paths: set[Path]) -> set[Path]:
    """Folders named in a printed list stand for the files in them."""
    files = set()
    for path in paths:
        files |= {p for p in path.rglob("*") if p.is_file()} if path.is_dir() else {path}
    return files


def test_the_printed_file_list_is_the_files_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "work"
    data = write_idx_folder(root / "bars")
    run = root / "run"
    commands = [
        ["train", "--data-path", data, "--epochs", "1", "--hidden", "16", "--latent-dim", "3",
         "--quiet", "--out", run],
        *[[a.format(run=run) for a in argv] for argv in EXPLORE],
        ["interpolate", run, "--from", "0", "--to", "2", "-o", root / "mine.png"],
        ["evaluate", run, "--k", "2", "--json", root / "eval.json", "--quiet"],
        ["encode", run, "-o", root / "codes.npy"],
        ["denoise", run, "--png"],
        ["anomaly", run, "--quiet"],
        ["anomaly", run, "--quiet", "-o", root / "again"],
        ["compare", "--models", "pca,vae", "--data-path", data, "--epochs", "1", "--hidden", "8",
         "--no-quality", "--iwae-k", "2", "--quiet", "--out", root / "cmp"],
    ]  # fmt: skip
    for argv in commands:
        before = snapshot(root)
        code, out, err = run_cli(argv, capsys)
        assert code == 0, (argv, err)
        files = written(before, root)
        assert files, argv
        assert expand(printed_paths(out)) == files, argv[0]


def test_info_json_into_a_closed_pipe_is_quiet(image_run):
    """`vaekit info --json RUN | head -c 0`: the reader has gone before vaekit writes."""
    for argv in (["info", "--json", str(image_run)], ["train", "--help"]):
        child = subprocess.Popen(
            [sys.executable, "-m", "vaekit", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        child.stdout.close()  # long before the child has imported torch
        err = child.stderr.read().decode()
        child.wait(timeout=120)
        assert err == "", err
        assert child.returncode in (0, 141)


def test_info_json_piped_into_head(image_run):
    shell = f"set -o pipefail; {sys.executable} -m vaekit info --json {image_run} | head -n 1"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "{" and result.stderr == ""
