"""Train MOSES's own VAE (`moses.vae`) for a wall-clock budget, then sample from it.

Runs in the MOSES environment that `benchmarks/moses_env.sh` builds (it does not import
vaekit):

    /work/moses-venv/bin/python benchmarks/moses_baseline.py --minutes 60 --out runs/moses-vae
    /work/moses-venv/bin/python benchmarks/moses_metrics.py runs/moses-vae/samples.smi \\
        --out runs/moses-vae/metrics.json
    /work/moses-venv/bin/python benchmarks/moses_baseline.py --probe 90      # sequences/s only

The model, its loss and its optimiser are MOSES's, unchanged: `moses.vae.VAE` built from
the defaults of `moses/vae/config.py` (GRU encoder 256, 3-layer GRU decoder 512, z 128,
batch 512, Adam at 3e-4, gradients clipped at 50, KL weight ramped linearly from 0 to 0.05
over the 100 epochs of its SGDR schedule) and its data path (`VAETrainer`'s DataLoader and
collate: one tensor per SMILES, built in Python, sorted by length and packed), on MOSES's
training set (1,584,663 molecules). Only the loop is ours: MOSES's `VAETrainer._train`
runs 100 epochs with no budget, so `BudgetVAETrainer` repeats its step
(`VAETrainer._train_epoch`: loss = kl_weight * kl + recon, backward, clip, Adam step) and
stops at the first step that ends past the budget. MOSES validates on the test set after
each epoch; under a budget far shorter than an epoch that never happens, and here neither.

KL weight under a budget (`--kl-schedule`): MOSES sets it per epoch, so for any run
shorter than one epoch (1.58 M sequences) it stays at its start value, 0: the model is
then trained as a plain autoencoder and samples from the prior are whatever that gives.
`moses` (default) keeps that; `budget` maps the same linear 0 -> 0.05 ramp of its 100
epochs onto the wall-clock budget (weight = 0.05 * elapsed / budget, updated every step).

After training it writes, in --out: samples.smi (N samples from the prior, one a line:
MOSES's `VAE.sample` with max_len 100 and temperature 1, its byte mask made bool so that
it runs on current torch), model.pt, vocab.pt and config.pt (the files MOSES's
scripts/sample.py loads), and train.json (sequences/s, steps, epochs seen, the loss curve
against wall-clock minutes, the sampling time).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

from machine import where_measured  # benchmarks/machine.py, a sibling module


def moses_config(batch: int, seed: int):
    """MOSES's VAE defaults (moses/vae/config.py), plus the fields its train script adds."""
    from moses.vae.config import get_parser

    config = get_parser().parse_args([])
    config.n_batch = batch
    config.device = "cpu"
    config.seed = seed
    config.log_file = None
    config.model_save = None
    config.save_frequency = 20
    return config


def make_trainer_class():
    """BudgetVAETrainer, built after moses is imported (it subclasses VAETrainer)."""
    import torch.optim as optim
    from moses.vae.misc import CosineAnnealingLRWithRestart, KLAnnealer
    from moses.vae.trainer import VAETrainer
    from torch.nn.utils import clip_grad_norm_

    class BudgetVAETrainer(VAETrainer):
        """MOSES's VAETrainer with a wall-clock budget instead of 100 epochs.

        The step is VAETrainer._train_epoch's; the KL and learning-rate schedules are
        VAETrainer._train's (per epoch), or with kl_schedule="budget" the KL ramp is
        spread over the budget. `log` is called with a dict every `log_every` seconds.
        """

        def train_for(self, model, train_data, seconds, kl_schedule, log_every, log):
            loader = self.get_dataloader(model, train_data, shuffle=True)
            n_epoch = self._n_epoch()
            optimizer = optim.Adam(self.get_optim_params(model), lr=self.config.lr_start)
            kl_annealer = KLAnnealer(n_epoch, self.config)
            lr_annealer = CosineAnnealingLRWithRestart(optimizer, self.config)
            model.zero_grad()
            model.train()

            n_train = len(train_data)
            steps = sequences = epoch = 0
            window = {"loss": 0.0, "kl": 0.0, "recon": 0.0, "steps": 0, "sequences": 0}
            step_seconds = []
            started = last_log = time.perf_counter()
            deadline = started + seconds
            stopped_by = "budget"

            def emit(now, kl_weight):
                n = max(window["steps"], 1)
                log(
                    {
                        "minutes": round((now - started) / 60, 3),
                        "steps": steps,
                        "sequences": sequences,
                        "epochs": round(sequences / n_train, 5),
                        "loss": window["loss"] / n,
                        "kl": window["kl"] / n,
                        "recon": window["recon"] / n,
                        "kl_weight": kl_weight,
                        "lr": optimizer.param_groups[0]["lr"],
                        "sequences_per_s": window["sequences"] / max(now - last_log, 1e-9),
                    }
                )
                window.update(loss=0.0, kl=0.0, recon=0.0, steps=0, sequences=0)

            kl_weight = kl_annealer(0)
            try:
                while True:
                    if kl_schedule == "moses":
                        kl_weight = kl_annealer(epoch)
                    step_started = time.perf_counter()
                    for input_batch in loader:
                        if kl_schedule == "budget":
                            fraction = min((time.perf_counter() - started) / seconds, 1.0)
                            kl_weight = kl_annealer(fraction * n_epoch)
                        input_batch = tuple(data.to(model.device) for data in input_batch)

                        # VAETrainer._train_epoch's step, unchanged.
                        kl_loss, recon_loss = model(input_batch)
                        loss = kl_weight * kl_loss + recon_loss
                        optimizer.zero_grad()
                        loss.backward()
                        clip_grad_norm_(self.get_optim_params(model), self.config.clip_grad)
                        optimizer.step()

                        steps += 1
                        sequences += len(input_batch)
                        window["loss"] += loss.item()
                        window["kl"] += kl_loss.item()
                        window["recon"] += recon_loss.item()
                        window["steps"] += 1
                        window["sequences"] += len(input_batch)
                        now = time.perf_counter()
                        step_seconds.append(now - step_started)
                        if now - last_log >= log_every:
                            emit(now, kl_weight)
                            last_log = now
                        if now >= deadline:
                            break
                        step_started = time.perf_counter()
                    else:  # a whole epoch done: MOSES's per-epoch schedule moves on
                        lr_annealer.step()
                        epoch += 1
                        continue
                    break
            except KeyboardInterrupt:
                stopped_by = "interrupt"
            now = time.perf_counter()
            if window["steps"]:
                emit(now, kl_weight)
            return {
                "seconds": now - started,
                "steps": steps,
                "sequences": sequences,
                "epochs": sequences / n_train,
                "step_seconds": step_seconds,
                "stopped_by": stopped_by,
                "final_kl_weight": kl_weight,
            }

    return BudgetVAETrainer


def vae_sample(model, n_batch: int, max_len: int = 100, temp: float = 1.0) -> list[str]:
    """MOSES's `VAE.sample` (moses/vae/model.py), with its end-of-sequence mask as bool.

    MOSES builds that mask as torch.uint8 and indexes with it; torch stopped accepting
    byte masks for `tensor[mask] = value` (RuntimeError: masked_fill_ only supports
    boolean masks), so `model.sample` fails on the torch installed here. This is the
    same procedure line for line: z from the prior, the decoder's initial state from z,
    z fed at every step, a token drawn from softmax(logits / temp) until <eos> or max_len.
    (With byte masks MOSES also overwrote tokens after <eos>; they were cut off anyway.)
    """
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        z = model.sample_z_prior(n_batch).to(model.device)
        z_0 = z.unsqueeze(1)
        h = model.decoder_lat(z)
        h = h.unsqueeze(0).repeat(model.decoder_rnn.num_layers, 1, 1)
        w = torch.tensor(model.bos, device=model.device).repeat(n_batch)
        x = torch.tensor([model.pad], device=model.device).repeat(n_batch, max_len)
        x[:, 0] = model.bos
        end_pads = torch.tensor([max_len], device=model.device).repeat(n_batch)
        eos_mask = torch.zeros(n_batch, dtype=torch.bool, device=model.device)
        for i in range(1, max_len):
            x_emb = model.x_emb(w).unsqueeze(1)
            x_input = torch.cat([x_emb, z_0], dim=-1)
            o, h = model.decoder_rnn(x_input, h)
            y = model.decoder_fc(o.squeeze(1))
            y = F.softmax(y / temp, dim=-1)
            w = torch.multinomial(y, 1)[:, 0]
            x[~eos_mask, i] = w[~eos_mask]
            i_eos_mask = ~eos_mask & (w == model.eos)
            end_pads[i_eos_mask] = i + 1
            eos_mask = eos_mask | i_eos_mask
        return [model.tensor2string(x[i, : end_pads[i]]) for i in range(x.size(0))]


def sample(model, n: int, batch: int, max_len: int) -> tuple[list[str], float]:
    """n SMILES from the prior, in batches, with MOSES's sampler; and the seconds taken."""
    model.eval()
    started = time.perf_counter()
    out: list[str] = []
    while len(out) < n:
        out.extend(vae_sample(model, min(batch, n - len(out)), max_len=max_len))
        print(f"  sampled {len(out)}/{n}", flush=True)
    return out, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--minutes", type=float, help="training budget in wall-clock minutes")
    mode.add_argument(
        "--probe",
        type=float,
        metavar="SECONDS",
        help="only measure training sequences/s for this many seconds (no sampling)",
    )
    parser.add_argument("--out", type=Path, help="run folder (required with --minutes)")
    parser.add_argument("--batch", type=int, default=512, help="batch size (MOSES default 512)")
    parser.add_argument(
        "--n-samples", type=int, default=30000, help="samples to draw (default 30,000)"
    )
    parser.add_argument(
        "--sample-batch", type=int, default=1000, help="sampling batch (default 1000)"
    )
    parser.add_argument("--max-len", type=int, default=100, help="sample length cap (MOSES: 100)")
    parser.add_argument(
        "--kl-schedule",
        choices=["moses", "budget"],
        default="moses",
        help="moses: KL weight per epoch as MOSES does (0 in the first epoch); "
        "budget: its 0 -> 0.05 ramp spread over the budget",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0, as MOSES)")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: torch's, which OMP_NUM_THREADS sets)"
    )
    parser.add_argument(
        "--log-every",
        type=float,
        help="seconds between loss-curve points (default 60; 10 with --probe)",
    )
    args = parser.parse_args(argv)
    if args.minutes is not None and args.out is None:
        parser.error("--minutes needs --out DIR")
    seconds = args.probe if args.probe is not None else args.minutes * 60
    if seconds <= 0:
        parser.error("the budget must be positive")
    log_every = args.log_every or (10.0 if args.probe is not None else 60.0)

    # moses/metrics/utils.py (imported by `import moses`) calls pandas' deprecated append.
    warnings.filterwarnings("ignore", category=FutureWarning)
    import moses
    import torch
    from moses.script_utils import set_seed
    from moses.vae import VAE

    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)
    setup_started = time.perf_counter()
    train_data = moses.get_dataset("train")
    config = moses_config(args.batch, args.seed)
    trainer = make_trainer_class()(config)
    vocab = trainer.get_vocabulary(train_data)
    model = VAE(vocab, config).to(config.device)
    setup_s = time.perf_counter() - setup_started
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"moses.vae.VAE: {n_params:,} parameters, vocabulary {len(vocab)}, batch {args.batch}, "
        f"{len(train_data):,} training SMILES, torch threads {torch.get_num_threads()}; "
        f"setup {setup_s:.1f} s; training for {seconds:.0f} s (KL schedule: {args.kl_schedule})",
        flush=True,
    )

    curve: list[dict] = []

    def log(point: dict) -> None:
        curve.append(point)
        print(
            f"  {point['minutes']:7.2f} min  step {point['steps']:6d}  "
            f"epochs {point['epochs']:.4f}  loss {point['loss']:.4f} "
            f"(kl {point['kl']:.3f}, recon {point['recon']:.4f}, klw {point['kl_weight']:.4f})  "
            f"{point['sequences_per_s']:.1f} seq/s",
            flush=True,
        )

    result = trainer.train_for(model, train_data, seconds, args.kl_schedule, log_every, log)
    step_seconds = result.pop("step_seconds")
    rate = result["sequences"] / result["seconds"]
    # Without the first step (allocator and thread-pool warm-up) where there is more than one.
    later = step_seconds[1:]
    rate_after_first = (
        (result["sequences"] - min(args.batch, result["sequences"])) / sum(later) if later else None
    )
    print(
        f"trained {result['seconds']:.1f} s: {result['steps']} steps, {result['sequences']:,} "
        f"sequences ({result['epochs']:.4f} epochs), {rate:.1f} sequences/s"
        + (f" ({rate_after_first:.1f} after the first step)" if rate_after_first else ""),
        flush=True,
    )

    report = {
        **where_measured(),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "molsets": moses.__version__,
            "torch": torch.__version__,
        },
        "model": "moses.vae.VAE, moses/vae/config.py defaults",
        "config": {k: v for k, v in vars(config).items() if not k.endswith("_save")},
        "parameters": n_params,
        "train_molecules": len(train_data),
        "kl_schedule": args.kl_schedule,
        "budget_s": seconds,
        "setup_s": round(setup_s, 1),
        "train_s": round(result["seconds"], 1),
        "steps": result["steps"],
        "sequences": result["sequences"],
        "epochs": result["epochs"],
        "sequences_per_s": rate,
        "sequences_per_s_after_first_step": rate_after_first,
        "mean_step_s": sum(step_seconds) / len(step_seconds) if step_seconds else None,
        "stopped_by": result["stopped_by"],
        "final_kl_weight": result["final_kl_weight"],
        "loss_curve": curve,
    }

    if args.probe is not None:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "probe.json").write_text(json.dumps(report, indent=2) + "\n")
            print(f"wrote {args.out / 'probe.json'}")
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu")
    torch.save(model.state_dict(), args.out / "model.pt")
    torch.save(vocab, args.out / "vocab.pt")
    torch.save(config, args.out / "config.pt")
    print(f"sampling {args.n_samples} molecules (batch {args.sample_batch})", flush=True)
    samples, sample_s = sample(model, args.n_samples, args.sample_batch, args.max_len)
    (args.out / "samples.smi").write_text("\n".join(samples) + "\n")
    report.update(
        samples=len(samples),
        sample_s=round(sample_s, 1),
        samples_per_s=len(samples) / sample_s,
        samples_file=str(args.out / "samples.smi"),
    )
    (args.out / "train.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"sampled in {sample_s:.1f} s; wrote {args.out}/samples.smi and train.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
