from __future__ import annotations

import torch

from vaekit.data.datasets import Dataset


def binarize_fixed(data: Dataset, seed: int) -> Dataset:
    """Bernoulli draws made once with a fixed seed (the evaluation set for dynamic binarisation)."""
    generator = torch.Generator().manual_seed(seed)
    return Dataset(torch.bernoulli(data.x, generator=generator), data.y, data.name, data.kind)


def binarization_note(dataset: str, binarize: str, likelihood: str = "bernoulli") -> str:
    """Which binarisation the likelihood numbers refer to, in words."""
    if dataset == "binarized-mnist":
        return "static (the fixed binarisation of Larochelle & Murray)"
    if binarize == "dynamic":
        return f"dynamic (evaluation images binarised once, Bernoulli draws with seed {BINARIZE_TEST_SEED})"
    if likelihood == "bernoulli":
        return (
            "none (grey levels in [0,1]; the Bernoulli term is a cross-entropy, not a likelihood)"
        )
    return f"none (grey levels in [0,1]; {likelihood} densities, comparable only with densities)"


def evaluation_set(data: Dataset, binarize: str) -> Dataset:
    """The images likelihoods are computed on: binarised once with a fixed seed under
    dynamic binarisation (the same set training reports its test numbers on)."""
    if binarize != "dynamic":
        return data

    return binarize_fixed(data, seed=BINARIZE_TEST_SEED)


BINARIZE_TEST_SEED = 12345  # the seed train.Trainer binarises the test set with (tests check)
