"""Fixed binarisation: Bernoulli draws of [0, 1] images made once, from named seeds.

Under dynamic binarisation training draws new binary images every epoch, but every number
reported on held-out data (training's test and validation rows, `vaekit evaluate`, anomaly
scores) is computed on one fixed set of draws, so that numbers are comparable between runs
and commands. `bernoulli_draws` is the one place those draws are made.
"""

from __future__ import annotations

import torch

from vaekit.data.datasets import Dataset, as_float

BINARIZE_TEST_SEED = 12345  # evaluation images: training's test rows, evaluate, anomaly scores
BINARIZE_VALID_SEED = 54321  # the validation split training picks its best epoch on


def bernoulli_draws(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Bernoulli draws of x (probabilities in [0, 1], or uint8 pixels) from a generator
    seeded with `seed`: the same seed always gives the same binary images."""
    return torch.bernoulli(as_float(x), generator=torch.Generator().manual_seed(seed))


def binarize_fixed(data: Dataset, seed: int) -> Dataset:
    """`data` with its images binarised once with `seed` (labels and name kept)."""
    return Dataset(bernoulli_draws(data.x, seed), data.y, data.name)


def binarization_note(dataset: str, binarize: str, likelihood: str = "bernoulli") -> str:
    """Which binarisation the likelihood numbers refer to, in words."""
    if dataset == "binarized-mnist":
        return "static (the fixed binarisation of Larochelle & Murray)"
    if binarize == "dynamic":
        return f"dynamic (evaluation images binarised once, Bernoulli draws with seed {BINARIZE_TEST_SEED})"
    if likelihood == "categorical":  # token sequences: exact probabilities of discrete data
        return "none (token sequences; categorical probabilities, an exact log-likelihood)"
    if likelihood == "bernoulli":
        return (
            "none (grey levels in [0,1]; the Bernoulli term is a cross-entropy, not a likelihood)"
        )
    return f"none (grey levels in [0,1]; {likelihood} densities, comparable only with densities)"


def evaluation_view(x: torch.Tensor, binarize: str) -> torch.Tensor:
    """The examples x as the likelihood sees them in evaluation: binarised once with
    BINARIZE_TEST_SEED under dynamic binarisation, unchanged otherwise."""
    return bernoulli_draws(x, BINARIZE_TEST_SEED) if binarize == "dynamic" else x


def evaluation_set(data: Dataset, binarize: str) -> Dataset:
    """The images likelihoods are computed on: binarised once with a fixed seed under
    dynamic binarisation (the same set training reports its test numbers on)."""
    if binarize != "dynamic":
        return data
    return binarize_fixed(data, BINARIZE_TEST_SEED)
