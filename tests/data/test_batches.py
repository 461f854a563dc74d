"""Length buckets in BatchIterator: batches of sequences of similar length, every sequence
once per epoch, reproducible and resumable, with far less padding than random batches."""

from __future__ import annotations

import torch

from vaekit.config import RunConfig
from vaekit.data import load_data
from vaekit.data.batches import BUCKET_CHUNK, BatchIterator
from vaekit.data.sequences import EOS, PAD, token_counts
from vaekit.models import build_model
from vaekit.models.registry import configure_model
from vaekit.training.trainer import Trainer


def token_rows(n: int, width: int = 40, seed: int = 0) -> torch.Tensor:
    """(n, width) int8 sequences of random lengths 1..width-1: tokens, <eos>, padding."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width, (n,), generator=generator)
    rows = torch.randint(4, 20, (n, width), generator=generator, dtype=torch.int8)
    position = torch.arange(width)
    rows[position == lengths[:, None]] = EOS
    rows[position > lengths[:, None]] = PAD
    return rows


def padded_tokens(batches) -> int:
    """Token slots the steps compute: each batch cut after its longest sequence."""
    return sum(len(x) * int(token_counts(x).max()) for x, _ in batches)


def test_buckets_hold_every_sequence_once_with_far_less_padding():
    x = token_rows(5000)
    lengths = token_counts(x)
    y = torch.arange(len(x))  # which example each row is
    bucketed = BatchIterator(x, y, 32, seed=1, lengths=lengths)
    plain = BatchIterator(x, y, 32, seed=1)
    batches = list(bucketed.epoch(0))
    assert len(batches) == len(bucketed) == len(list(plain.epoch(0)))
    seen = torch.cat([y for _, y in batches])
    assert torch.equal(seen.sort().values, torch.arange(len(x)))  # each once
    real = int(lengths.sum())
    assert padded_tokens(batches) < 1.1 * real < 0.7 * padded_tokens(plain.epoch(0))
    # the batches come in random order of length, not shortest first
    maxima = torch.tensor([int(token_counts(x).max()) for x, _ in batches], dtype=torch.float)
    assert abs(torch.corrcoef(torch.stack([maxima, torch.arange(len(maxima)) * 1.0]))[0, 1]) < 0.3


def test_buckets_are_reproducible_per_epoch_and_resume_mid_epoch():
    x = token_rows(3000, seed=2)
    make = lambda: BatchIterator(x, None, 16, seed=5, lengths=token_counts(x))  # noqa: E731
    first = [b for b, _ in make().epoch(3)]
    again = [b for b, _ in make().epoch(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    resumed = [b for b, _ in make().epoch(3, start_step=40)]
    assert all(torch.equal(a, b) for a, b in zip(first[40:], resumed, strict=True))
    other = [b for b, _ in make().epoch(4)]
    assert not torch.equal(torch.cat(first), torch.cat(other))


def test_buckets_sort_within_chunks_only():
    """Sequences are grouped with those of their chunk of BUCKET_CHUNK batches: a long
    sequence never waits for the end of the epoch."""
    x = token_rows(BUCKET_CHUNK * 8 * 3, seed=3)
    batches = BatchIterator(x, torch.arange(len(x)), 8, lengths=token_counts(x)).epoch(0)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    chunk_of = torch.empty(len(x), dtype=torch.long)
    chunk_of[order] = torch.arange(len(x)) // (BUCKET_CHUNK * 8)
    assert all(len(set(chunk_of[y].tolist())) == 1 for _, y in batches)


def test_trainer_buckets_sequence_runs_unless_told_not_to(tmp_path):
    lines = ["a" * (1 + i % 9) + "b" * (i % 4) for i in range(200)]
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n")
    for buckets in (True, False):
        config = RunConfig.from_dict(
            {
                "data": {"name": "sequences", "path": str(tmp_path / "t.txt")},
                "model": {"name": "seqvae", "hidden": [8, 8], "latent_dim": 2},
                "train": {"batch_size": 16, "length_buckets": buckets},
            }
        )
        data = load_data(config.data)
        config.data.shape, config.data.kind = list(data.shape), data.train.kind
        configure_model(config.model, data)
        trainer = Trainer(config, build_model(config.model, data.shape), data, progress=False)
        assert (trainer.batches.lengths is not None) == buckets
        if buckets:
            assert torch.equal(trainer.batches.lengths, token_counts(data.train.storage))
