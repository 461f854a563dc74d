"""Padding cost of random against length-bucketed batches (data/batches.py) on MOSES's
training SMILES: token slots the GRUs compute (each batch cut after its longest sequence)
over the real tokens. Counts only, no timing.

    python benchmarks/sequence_padding.py [--batch 128 512] [--seed 0]
"""

from __future__ import annotations

import argparse

import torch

from vaekit.data.batches import length_buckets
from vaekit.data.sequences import read_moses


def padded_cost(batches: list[torch.Tensor]) -> int:
    return sum(len(b) * int(b.max()) for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    texts = read_moses("train").texts
    lengths = torch.tensor([len(s) + 1 for s in texts])  # character tokens and <eos>
    real = int(lengths.sum())
    print(f"{len(lengths):,} SMILES, {real / len(lengths):.2f} tokens each with <eos>")
    generator = torch.Generator().manual_seed(args.seed)
    for batch in args.batch:
        order = torch.randperm(len(lengths), generator=generator)
        plain = [lengths[b] for b in order.split(batch)]
        bucketed = [lengths[b] for b in length_buckets(order, lengths, batch, generator)]
        print(
            f"batch {batch}: random batches compute {padded_cost(plain) / real:.3f}x the real "
            f"tokens, length-bucketed {padded_cost(bucketed) / real:.3f}x"
        )


if __name__ == "__main__":
    main()
