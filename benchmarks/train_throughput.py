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
    python benchmarks/train_throughput.py --compile       # also a torch.compile'd autograd step
    python benchmarks/train_throughput.py --functional-adam  # also Adam via its functional API

vaekit's step on this config is its hand-written one (training/steps.py, train.step "auto");
`--autograd` times the same trainer on autograd's gradients; `--compile` on autograd's
gradients of a `torch.compile`d objective (skipped, with a message, where compiling fails);
`--functional-adam` times vaekit stepping Adam through `torch.optim.adam.adam(fused=True)`
on the optimizer's state instead of `optimizer.step()` (same kernels, no hooks): what
vaekit gives up by keeping the public `optimizer.step()`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.optim.adam import adam
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


def vaekit_contender(
    config: RunConfig, data, change: Callable[[Trainer], Any] | None = None
) -> Contender:
    """vaekit's own training step over its in-memory batch iterator (`change`: applied to
    the Trainer first)."""
    torch.manual_seed(0)
    model = build_model(config.model, data.shape)
    trainer = Trainer(config, model, data, run=None, progress=False)
    if change is not None:
        change(trainer)
    batches = forever(trainer.batches.epoch)

    def step() -> int:
        x, _ = next(batches)
        trainer.train_step(x)
        return len(x)

    return timed(step)


def compile_objective(trainer: Trainer) -> None:
    """The autograd step's objective (the model's loss) through torch.compile."""
    trainer.step.objective = torch.compile(trainer.step.objective, dynamic=False)


def use_functional_adam(trainer: Trainer) -> None:
    """Adam stepped by torch.optim.adam.adam(fused=True) on the optimizer's own state: the
    kernels optimizer.step() calls, without its per-call work (hooks, profiling, grouping)."""
    optimizer = trainer.optimizer
    group, optimizer_step = optimizer.param_groups[0], optimizer.step
    assert len(optimizer.param_groups) == 1 and group["fused"], "plain fused Adam only"

    def step() -> None:
        params = group["params"]
        states = [optimizer.state.get(p) for p in params]
        if not all(states):
            optimizer_step()  # the first step creates the state
            return
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            adam(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                [s["step"] for s in states],
                fused=True,
                decoupled_weight_decay=group.get("decoupled_weight_decay", False),
                amsgrad=False,
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
            )

    optimizer.step = step  # what GradScaler.step calls


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
    train_x = data.train.x  # float32, converted once (Dataset.x converts on each access)
    size, n = config.train.batch_size, len(train_x)
    orders = forever(lambda epoch: torch.randperm(n).split(size))

    def step() -> int:
        x = train_x.index_select(0, next(orders))
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
        "--compile", action="store_true", help="also time a torch.compile'd autograd step"
    )
    parser.add_argument(
        "--functional-adam", action="store_true", help="also time Adam via torch.optim.adam.adam"
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
    autograd = with_changes(config, step="autograd")
    if args.autograd:
        contenders["vaekit-autograd"] = vaekit_contender(autograd, data)
    if args.compile:
        try:  # compiles during the warm-up
            contenders["vaekit-compile"] = vaekit_contender(autograd, data, compile_objective)
        except Exception as error:  # no compiler, an unsupported op, ...
            reason = (str(error).splitlines() or [""])[0]
            print(f"--compile skipped: torch.compile failed ({type(error).__name__}: {reason})")
    if args.functional_adam:
        contenders["vaekit-functional-adam"] = vaekit_contender(config, data, use_functional_adam)
    others = {
        "ratio": "dataloader",
        "vs_careful": "careful",
        "vs_autograd": "vaekit-autograd",
        "vs_compile": "vaekit-compile",
        "vs_functional_adam": "vaekit-functional-adam",
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
