"""Training throughput: vaekit's trainer against a plain DataLoader loop, same model.

Both train the reference config (MLP 784-400-20, batch 128, Adam 1e-3, Bernoulli) on
built-in MNIST. Each contender is built and warmed up once, then they take turns in short
rounds (A B, then B A, ...), each continuing where it stopped, so that drift in this
machine's speed hits all alike; the figure that counts is the median of the per-round ratios.

    python benchmarks/train_throughput.py                 # fp32, 31 rounds of 100 steps
    python benchmarks/train_throughput.py --bf16          # also vaekit with bf16 autocast
    python benchmarks/train_throughput.py --bf16 --elbo   # plus 10-epoch runs: test -ELBO
    python benchmarks/train_throughput.py --careful       # also a careful hand-written loop
    python benchmarks/train_throughput.py --autograd      # also vaekit with train.step autograd
    python benchmarks/train_throughput.py --optimizer-step  # also vaekit via optimizer.step()

vaekit's step on this config is its hand-written one (models/manual.py, train.step "auto");
`--autograd` times the same trainer on autograd's gradients; `--optimizer-step` times it
stepping Adam through `optimizer.step()` instead of vaekit's direct call of the same kernel
(optim.FusedAdamStep).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, TensorDataset

import vaekit
from vaekit.config import RunConfig
from vaekit.data import load_data
from vaekit.models import build_model
from vaekit.training.trainer import Trainer

WARMUP_STEPS = 20
Contender = Callable[[int], float]  # steps -> images per second over those steps


def forever(batches: Callable[[int], Iterator]) -> Iterator:
    """Batches of epoch 0, 1, 2, ... without end."""
    epoch = 0
    while True:
        yield from batches(epoch)
        epoch += 1


def timed(step: Callable[[], int]) -> Contender:
    """A contender from one training step (returning its batch size), warmed up."""
    for _ in range(WARMUP_STEPS):
        step()

    def run(steps: int) -> float:
        started = time.perf_counter()
        images = sum(step() for _ in range(steps))
        return images / (time.perf_counter() - started)

    return run


def vaekit_contender(config: RunConfig, data, optimizer_step: bool = False) -> Contender:
    """vaekit's own training step over its in-memory batch iterator (`optimizer_step`:
    stepping Adam through torch.optim's optimizer.step())."""
    torch.manual_seed(0)
    model = build_model(config.model, data.shape)
    trainer = Trainer(config, model, data, run=None, progress=False)
    if optimizer_step:
        trainer.optimizer_step = trainer.optimizer.step
    batches = forever(trainer.batches.epoch)

    def step() -> int:
        x, _ = next(batches)
        trainer.train_step(x)
        return len(x)

    return timed(step)


def dataloader_contender(config: RunConfig, data) -> Contender:
    """The textbook loop: DataLoader over a TensorDataset, default Adam."""
    torch.manual_seed(0)
    model = build_model(config.model, data.shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    loader = DataLoader(
        TensorDataset(data.train.x, data.train.y), batch_size=config.train.batch_size, shuffle=True
    )
    batches = forever(lambda epoch: loader)

    def step() -> int:
        x, _ = next(batches)
        loss = model.loss(x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return len(x)

    return timed(step)


def careful_contender(config: RunConfig, data) -> Contender:
    """A careful hand-written loop: in-memory index_select batches, fused Adam, autograd,
    no trainer."""
    torch.manual_seed(0)
    model = build_model(config.model, data.shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr, fused=True)
    size, n = config.train.batch_size, len(data.train.x)
    orders = forever(lambda epoch: torch.randperm(n).split(size))

    def step() -> int:
        x = data.train.x.index_select(0, next(orders))
        loss = model.loss(x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        return len(x)

    return timed(step)


def with_changes(config: RunConfig, **train: object) -> RunConfig:
    changed = RunConfig.from_dict(config.to_dict())
    for key, value in train.items():
        setattr(changed.train, key, value)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--steps", type=int, default=100, help="steps per contender per round")
    parser.add_argument("--bf16", action="store_true", help="also time vaekit with bf16")
    parser.add_argument("--elbo", action="store_true", help="train 10 epochs fp32 and bf16")
    parser.add_argument("--careful", action="store_true", help="also time a careful plain loop")
    parser.add_argument(
        "--autograd", action="store_true", help="also time vaekit with train.step autograd"
    )
    parser.add_argument(
        "--optimizer-step", action="store_true", help="also time vaekit via optimizer.step()"
    )
    args = parser.parse_args()

    config = vaekit.preset("reference")
    data = load_data(config.data)
    bf16 = with_changes(config, precision="bf16")
    contenders = {
        "vaekit": vaekit_contender(config, data),
        "dataloader": dataloader_contender(config, data),
    }
    if args.bf16:
        contenders["vaekit-bf16"] = vaekit_contender(bf16, data)
    if args.careful:
        contenders["careful"] = careful_contender(config, data)
    if args.autograd:
        contenders["vaekit-autograd"] = vaekit_contender(
            with_changes(config, step="autograd"), data
        )
    if args.optimizer_step:
        contenders["vaekit-optimizer-step"] = vaekit_contender(config, data, optimizer_step=True)
    others = {
        "ratio": "dataloader",
        "vs_careful": "careful",
        "vs_autograd": "vaekit-autograd",
        "vs_optimizer_step": "vaekit-optimizer-step",
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds of "
        f"{args.steps} steps per contender"
    )
    rows = []
    for round_ in range(args.rounds):
        order = list(contenders)
        if round_ % 2:
            order.reverse()
        rates = {name: contenders[name](args.steps) for name in order}
        for key, other in others.items():  # vaekit's rate over another contender's
            if other in rates:
                rates[key] = rates["vaekit"] / rates[other]
        if "vaekit-bf16" in rates:
            rates["bf16_ratio"] = rates["vaekit-bf16"] / rates["vaekit"]
        rows.append(rates)
        print(f"round {round_ + 1}: " + "  ".join(f"{k} {v:,.2f}" for k, v in rates.items()))
    print(
        "median: " + "  ".join(f"{k} {statistics.median(r[k] for r in rows):,.2f}" for k in rows[0])
    )

    if args.elbo:
        for name, cfg in (("fp32", config), ("bf16", bf16)):
            started = time.perf_counter()
            run = vaekit.train(cfg, f"/tmp/vaekit-bench-{name}-{time.time_ns()}", progress=False)
            final = run.final
            print(
                f"{name}: 10 epochs in {time.perf_counter() - started:.1f} s wall "
                f"({final['train_seconds']:.1f} s training), test -ELBO "
                f"{final['test_neg_elbo']:.2f} nats (recon {final['test_recon']:.2f}, "
                f"KL {final['test_kl']:.2f})"
            )


if __name__ == "__main__":
    main()
