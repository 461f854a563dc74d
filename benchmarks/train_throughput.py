"""Training throughput: vaekit's trainer against a plain DataLoader loop, same model.

Both train the reference config (MLP 784-400-20, batch 128, Adam 1e-3, Bernoulli) on
built-in MNIST. They run interleaved (A B, then B A, ...) so that drift in this machine's
speed hits both alike; the figure that counts is the median of the per-round ratios.

    python benchmarks/train_throughput.py                 # fp32, 5 rounds of 1 epoch
    python benchmarks/train_throughput.py --bf16          # also vaekit with bf16 autocast
    python benchmarks/train_throughput.py --bf16 --elbo   # plus 10-epoch runs: test -ELBO
    python benchmarks/train_throughput.py --careful       # also a careful hand-written loop
    python benchmarks/train_throughput.py --autograd      # also vaekit with train.step autograd

vaekit's step on this config is its hand-written one (models/manual.py, train.step "auto");
`--autograd` times the same trainer on autograd's gradients.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import vaekit
from vaekit.config import RunConfig
from vaekit.data import load_data
from vaekit.models import build_model
from vaekit.train import Trainer


def vaekit_rate(config: RunConfig, data, steps: int, warmup: int = 20) -> float:
    """Images/s of vaekit's own training step over its in-memory batch iterator."""
    torch.manual_seed(0)
    model = build_model(config.model, data.shape)
    trainer = Trainer(config, model, data, run=None, progress=False)
    batches = iter(trainer.batches.epoch(0))
    for _ in range(warmup):
        trainer.train_step(next(batches)[0])
    images, started = 0, time.perf_counter()
    for _ in range(steps):
        x, _ = next(batches, (None, None))
        if x is None:
            batches = iter(trainer.batches.epoch(1))
            x, _ = next(batches)
        trainer.train_step(x)
        images += len(x)
    return images / (time.perf_counter() - started)


def dataloader_rate(config: RunConfig, data, steps: int, warmup: int = 20) -> float:
    """Images/s of the textbook loop: DataLoader over a TensorDataset, default Adam."""
    torch.manual_seed(0)
    model = build_model(config.model, data.shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    loader = DataLoader(
        TensorDataset(data.train.x, data.train.y), batch_size=config.train.batch_size, shuffle=True
    )

    def batches():
        while True:
            yield from loader

    stream = batches()
    images, started = 0, None
    for step in range(warmup + steps):
        if step == warmup:
            images, started = 0, time.perf_counter()
        x, _ = next(stream)
        loss = model.loss(x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        images += len(x)
    return images / (time.perf_counter() - started)


def careful_rate(config: RunConfig, data, steps: int, warmup: int = 20) -> float:
    """Images/s of a careful hand-written loop: in-memory index_select batches, fused Adam,
    no trainer (what vaekit's own step is measured against with --careful)."""
    torch.manual_seed(0)
    model = build_model(config.model, data.shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr, fused=True)
    size = config.train.batch_size
    order = torch.randperm(len(data.train.x)).repeat(
        1 + (warmup + steps) * size // len(data.train.x)
    )
    started = None
    for step in range(warmup + steps):
        if step == warmup:
            started = time.perf_counter()
        x = data.train.x.index_select(0, order[step * size : (step + 1) * size])
        loss = model.loss(x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
    return steps * size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=469, help="timed steps per contender")
    parser.add_argument("--bf16", action="store_true", help="also time vaekit with bf16")
    parser.add_argument("--elbo", action="store_true", help="train 10 epochs fp32 and bf16")
    parser.add_argument("--careful", action="store_true", help="also time a careful plain loop")
    parser.add_argument(
        "--autograd", action="store_true", help="also time vaekit with train.step autograd"
    )
    args = parser.parse_args()

    config = vaekit.preset("reference")
    data = load_data(config.data)
    bf16 = RunConfig.from_dict(config.to_dict())
    bf16.train.precision = "bf16"
    autograd = RunConfig.from_dict(config.to_dict())
    autograd.train.step = "autograd"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps/round")
    rows = []
    for round_ in range(args.rounds):
        contenders = [("vaekit", config), ("dataloader", None)]
        if args.bf16:
            contenders.append(("vaekit-bf16", bf16))
        if args.careful:
            contenders.append(("careful", "careful"))
        if args.autograd:
            contenders.append(("vaekit-autograd", autograd))
        if round_ % 2:
            contenders.reverse()
        rates = {}
        for name, cfg in contenders:
            if cfg is None:
                rates[name] = dataloader_rate(config, data, args.steps)
            elif cfg == "careful":
                rates[name] = careful_rate(config, data, args.steps)
            else:
                rates[name] = vaekit_rate(cfg, data, args.steps)
        rates["ratio"] = rates["vaekit"] / rates["dataloader"]
        if args.careful:
            rates["vs_careful"] = rates["vaekit"] / rates["careful"]
        if args.bf16:
            rates["bf16_ratio"] = rates["vaekit-bf16"] / rates["vaekit"]
        if args.autograd:
            rates["vs_autograd"] = rates["vaekit"] / rates["vaekit-autograd"]
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
