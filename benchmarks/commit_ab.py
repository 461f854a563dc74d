"""The training step of a past commit against today's, interleaved in one process.

The two packages share a name, so the old one is imported under another: copy the old
commit's `src/vaekit` to `DIR/vaekit_old` (its modules must import each other relatively,
as vaekit did up to 452cb8e). Both train the reference config on MNIST; each round times
100 steps of every contender, in alternating order, and the figure that counts is each
contender's median ratio to the same DataLoader loop as `train_throughput.py`.

    git worktree add /tmp/base 452cb8e
    mkdir -p /tmp/oldpkg && cp -r /tmp/base/src/vaekit /tmp/oldpkg/vaekit_old
    python benchmarks/commit_ab.py --old /tmp/oldpkg --rounds 41

The old Trainer is driven through the API it had at 452cb8e (`vaekit_old.train.Trainer`,
`Trainer.train_step(x)`); an older or newer layout needs `old_contender` adjusted.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys

import torch

import train_throughput as bench
from vaekit.config import RunConfig
from vaekit.data import load_data
from vaekit.models import build_model
from vaekit.training.trainer import Trainer


def contender(trainer) -> bench.Contender:
    """100-step timings of `trainer.train_step` over its own batch iterator, warmed up."""
    batches = bench.forever(trainer.batches.epoch)

    def step() -> int:
        x, _ = next(batches)
        trainer.train_step(x)
        return len(x)

    return bench.timed(step)


def new_contender() -> bench.Contender:
    config = RunConfig()
    data = load_data(config.data)
    torch.manual_seed(0)
    model = build_model(config.model, data.shape)
    return contender(Trainer(config, model, data, run=None, progress=False))


def old_contender() -> bench.Contender:
    old = {name: importlib.import_module(f"vaekit_old.{name}") for name in ("config", "data")}
    old_train = importlib.import_module("vaekit_old.train")  # vaekit_old.train is shadowed
    old_models = importlib.import_module("vaekit_old.models")
    config = old["config"].RunConfig()
    data = old["data"].load_data(config.data)
    torch.manual_seed(0)
    model = old_models.build_model(config.model, data.shape)
    return contender(old_train.Trainer(config, model, data, run=None, progress=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="folder holding vaekit_old/")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    sys.path.insert(0, args.old)
    contenders = {
        "old": old_contender(),
        "new": new_contender(),
        "dataloader": bench.dataloader_contender(RunConfig(), load_data(RunConfig().data)),
    }
    names = list(contenders)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        got = {name: contenders[name](args.steps) for name in order}
        for name in names:
            rates[name].append(got[name])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    for name in names:
        ratios = [a / b for a, b in zip(rates[name], rates["dataloader"])]
        print(
            f"{name:10s} median {statistics.median(rates[name]):9,.0f} img/s  "
            f"ratio to dataloader {statistics.median(ratios):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
