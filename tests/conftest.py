"""Shared fixtures: small synthetic data, a tiny trained run, and the built-in MNIST."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import vaekit
from vaekit.data import Dataset, DataSplits

# Tiny models run fastest on few threads, and CI machines are shared: at most 2.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SYNTH_SHAPE = (1, 8, 8)
RUN_FILES = ("samples.png", "reconstructions.png", "latent.png", "loss_curves.png")


def synthetic_splits(n_train: int = 256, n_test: int = 128, seed: int = 0) -> DataSplits:
    """Images with structure: one of four 8x8 bar patterns per class, plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.zeros(4, *SYNTH_SHAPE)
    prototypes[0, :, 2, :] = 1.0  # horizontal bar
    prototypes[1, :, :, 5] = 1.0  # vertical bar
    prototypes[2, :, range(8), range(8)] = 1.0  # diagonal
    prototypes[3, :, 2:6, 2:6] = 1.0  # square

    def make(n: int, name: str) -> Dataset:
        y = torch.randint(0, 4, (n,), generator=g)
        noise = 0.15 * torch.rand(n, *SYNTH_SHAPE, generator=g)
        x = (prototypes[y] * 0.8 + noise).clamp(0, 1)
        return Dataset(x, y, name)

    return DataSplits(
        make(n_train, "synthetic/train"),
        make(n_test, "synthetic/test"),
        "synthetic",
        "generated in tests/conftest.py",
        ["hbar", "vbar", "diag", "square"],
    )


def tiny_config(**train: object) -> vaekit.RunConfig:
    """A small MLP VAE for the synthetic data: 8 steps of 32 per epoch, 2 epochs."""
    raw = {
        "name": "tiny",
        "model": {"hidden": [16], "latent_dim": 2},
        "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3, "seed": 7, "eval_batch_size": 64}
        | train,
        "n_samples": 16,
    }
    return vaekit.RunConfig.from_dict(raw)


@pytest.fixture(scope="session")
def synth() -> DataSplits:
    return synthetic_splits()


@pytest.fixture(scope="session")
def tiny_run(synth: DataSplits, tmp_path_factory: pytest.TempPathFactory) -> vaekit.Run:
    """A finished tiny run (with its pictures), shared by tests that only read it."""
    path = tmp_path_factory.mktemp("runs") / "tiny"
    return vaekit.train(tiny_config(), path, progress=False, data=synth)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for the module (restored after): tiny GRUs gain nothing from a
    second one, and on cores busy with other work thread hand-offs cost 10-30x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist() -> DataSplits:
    """The full built-in MNIST (loaded once: about 2 s)."""
    return vaekit.load_data(vaekit.DataConfig())


def read_jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
