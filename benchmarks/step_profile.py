"""Where vaekit's training step spends its time on the reference config, and the bound set by
its GEMMs alone.

    python benchmarks/step_profile.py             # profile table + GEMM-only images/s
    python benchmarks/step_profile.py --steps 500

Prints torch.profiler's table (self CPU time per operator) for `--steps` steps of the
Trainer, the step's own images/s, and the images/s of the same eleven matrix products
(forward, weight and input gradients of the MLP 784-400-20 VAE at batch 128) with nothing
else, which no training step on this network can beat.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import vaekit
from train_throughput import forever  # this folder: run as `python benchmarks/...`
from vaekit.data import load_data
from vaekit.models import build_model
from vaekit.training.trainer import Trainer


def trainer_steps(steps: int):
    """A function running `steps` training steps of the reference config (warmed up)."""
    torch.manual_seed(0)
    config = vaekit.preset("reference")
    data = load_data(config.data)
    model = build_model(config.model, data.shape)
    trainer = Trainer(config, model, data, run=None, progress=False)
    stream = forever(trainer.batches.epoch)

    def run() -> None:
        for _ in range(steps):
            trainer.train_step(next(stream)[0])

    run()
    print(f"the Trainer's step: {trainer.step.name}")
    return run, config.train.batch_size


def gemm_step(batch: int, sizes=(784, 400, 20)):
    """The step's matrix products alone: encoder D-H-2Z, decoder Z-H-D, their gradients."""
    d, h, z = sizes
    x, g_out, g_stats = torch.rand(batch, d), torch.randn(batch, d), torch.randn(batch, 2 * z)
    w = [torch.randn(h, d), torch.randn(2 * z, h), torch.randn(h, z), torch.randn(d, h)]
    b = [torch.zeros(n) for n in (h, 2 * z, h, d)]

    def step() -> None:
        h1 = torch.addmm(b[0], x, w[0].t())
        stats = torch.addmm(b[1], h1, w[1].t())
        h3 = torch.addmm(b[2], stats[:, :z], w[2].t())
        torch.addmm(b[3], h3, w[3].t())
        g_out.t().mm(h3)  # decoder output layer: weight and input gradients
        g_h3 = g_out.mm(w[3])
        g_h3.t().mm(stats[:, :z])  # decoder hidden layer
        g_h3.mm(w[2])
        g_stats.t().mm(h1)  # encoder head
        g_h1 = g_stats.mm(w[1])
        g_h1.t().mm(x)  # encoder first layer: no input gradient

    return step


def rate(step, repeats: int, batch: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return repeats * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    run, batch = trainer_steps(args.steps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    gemms = gemm_step(batch)
    rate(gemms, 20, batch)
    for round_ in range(3):  # interleaved: the machine's speed drifts
        t = time.perf_counter()
        run()
        step_rate = args.steps * batch / (time.perf_counter() - t)
        print(
            f"round {round_ + 1}: training step {step_rate:,.0f} img/s, "
            f"GEMMs alone {rate(gemms, args.steps, batch):,.0f} img/s"
        )


if __name__ == "__main__":
    main()
