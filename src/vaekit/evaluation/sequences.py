"""What a sequence run's decoder produces: sampled and reconstructed strings, the exact-match
rate of greedy reconstruction, and (for molecules, with RDKit) the validity of SMILES; and
the way back: strings given on a command line as token ids, codes decoded as strings.

Decoding is batched: every sequence of a batch steps through the decoder together
(`RecurrentDecoder.generate`), and strings are made only from the finished token ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vaekit.config.schema import DataConfig
from vaekit.core.errors import ConfigError
from vaekit.data.batches import BatchIterator
from vaekit.data.datasets import Dataset
from vaekit.data.sequences import (
    MOLECULES_EXTRA,
    Texts,
    Vocabulary,
    encode,
    split_tokens,
    storage_width,
    vocabulary_of,
)
from vaekit.models.batched import model_device

DECODE_BATCH = 500  # sequences decoded together


@torch.no_grad()
def greedy_reconstructions(
    model: nn.Module, data: Dataset, batch_size: int = DECODE_BATCH
) -> torch.Tensor:
    """Greedy decodings (N, L) of the posterior means of every sequence of `data`, CPU."""
    device = model_device(model)
    parts = []
    for x, _ in BatchIterator(data.storage, None, batch_size, shuffle=False):
        z_mean, _ = model.encode(x.to(device))
        parts.append(model.generate(z_mean).cpu())
    return torch.cat(parts)


def exact_matches(originals: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    """Whether each decoded sequence equals its original token for token, <eos> included:
    (N,) bool (both (N, L) ids, padded after <eos>)."""
    return (originals.long() == decoded.long()).all(dim=1)


def exact_match_rate(
    model: nn.Module, data: Dataset, batch_size: int = DECODE_BATCH
) -> dict[str, Any]:
    """The share of `data`'s sequences that greedy decoding of the posterior mean
    reproduces exactly: {"exact_match": fraction, "n_examples": N}."""
    decoded = greedy_reconstructions(model, data, batch_size)
    rate = exact_matches(data.storage, decoded).double().mean().item()
    return {"exact_match": rate, "n_examples": len(data)}


def reconstruction_pairs(
    model: nn.Module, data: Dataset, vocabulary: Vocabulary
) -> tuple[list[tuple[str, str]], float]:
    """(original, greedy decoding) strings of `data`'s sequences, and their exact-match rate."""
    decoded = greedy_reconstructions(model, data)
    rate = exact_matches(data.storage, decoded).double().mean().item()
    pairs = list(zip(vocabulary.decode(data.storage), vocabulary.decode(decoded)))
    return pairs, rate


@torch.no_grad()
def sample_strings(
    model: nn.Module,
    vocabulary: Vocabulary,
    n: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    batch_size: int = DECODE_BATCH,
) -> list[str]:
    """n strings drawn from the model (z ~ p(z), x ~ p(x | z) at `temperature`; 0: greedy),
    decoded with `vocabulary`; the same seed gives the same strings."""
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    strings = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        tokens = model.sample_tokens(count, temperature, top_k, generator)
        strings += vocabulary.decode(tokens)
    return strings


class GivenText(Texts):
    """A string given on the command line: its errors name it, not a file line."""

    def where(self, index: int) -> str:
        return self.source


def tokenize_strings(strings: list[str], config: DataConfig, what: str) -> torch.Tensor:
    """`strings` as stored token ids (N, L) with the run's recorded vocabulary and width;
    an empty string, an unknown token or a string too long is an error naming `what`."""
    parts = []
    for text in strings:
        if not text.strip():
            raise ConfigError(f"{what}: an empty string (give a sequence)")
        texts = GivenText([text], np.ones(1, dtype=np.int64), f"{what} {text[:60]!r}")
        split = split_tokens(texts, config.tokens)
        parts.append(encode(split, vocabulary_of(config), storage_width([split], config)))
    return torch.cat(parts)


@torch.no_grad()
def decode_codes(
    model: nn.Module,
    vocabulary: Vocabulary,
    z: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    batch_size: int = DECODE_BATCH,
) -> list[str]:
    """The strings decoded from codes z (N, latent_dim): greedy (temperature 0) or sampled."""
    device = model_device(model)
    strings = []
    for start in range(0, len(z), batch_size):
        part = z[start : start + batch_size].to(device)
        strings += vocabulary.decode(model.generate(part, temperature, top_k, generator))
    return strings


def sequence_lines(pairs: list[tuple[str, str]]) -> list[str]:
    """'original -> decoded' lines, each marked = (exact) or x (differs)."""
    return [f"{'=' if a == b else 'x'} {a} -> {b}" for a, b in pairs]


def rdkit_chem(purpose: str = "SMILES validity"):
    """RDKit's Chem module, or the one-line error saying `purpose` needs the molecules extra
    (an optional dependency, so imported here rather than at the top)."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        raise ConfigError(
            f"{purpose} needs RDKit, the molecules extra: {MOLECULES_EXTRA}"
        ) from None
    RDLogger.DisableLog("rdApp.*")  # one line per invalid SMILES otherwise
    return Chem


def canonical_smiles(smiles: list[str]) -> list[str | None]:
    """Each SMILES in RDKit's canonical form, None where RDKit reads no molecule (an empty
    string is none): validity, and the key for comparing molecules written differently."""
    chem = rdkit_chem()
    molecules = (chem.MolFromSmiles(s) if s else None for s in smiles)
    return [chem.MolToSmiles(mol) if mol is not None else None for mol in molecules]


def smiles_validity(smiles: list[str]) -> dict[str, Any]:
    """The share of `smiles` that RDKit parses into a molecule (an empty string is not
    one), and how many of the valid ones are distinct after canonicalisation."""
    canonical = [c for c in canonical_smiles(smiles) if c is not None]
    return {
        "valid": len(canonical) / len(smiles) if smiles else 0.0,
        "unique_valid": len(set(canonical)),
        "n_samples": len(smiles),
    }
