"""`vaekit train`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .args import int_list, non_negative_float, non_negative_int, positive_float, positive_int

# --- train ------------------------------------------------------------------------------
# flag -> (section, field) of RunConfig; a flag left unset keeps the preset/config value
TRAIN_OVERRIDES = {
    "dataset": ("data", "name"),
    "data_path": ("data", "path"),
    "binarize": ("data", "binarize"),
    "limit_train": ("data", "limit_train"),
    "limit_test": ("data", "limit_test"),
    "hidden": ("model", "hidden"),
    "latent_dim": ("model", "latent_dim"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "seed": ("train", "seed"),
    "beta": ("train", "beta"),
    "kl_warmup": ("train", "kl_warmup_epochs"),
    "checkpoint_every": ("train", "checkpoint_every_steps"),
    "device": ("train", "device"),
    "threads": ("train", "num_threads"),
    "precision": ("train", "precision"),
    "name": (None, "name"),
    "n_samples": (None, "n_samples"),
}


def add_train(sub: argparse._SubParsersAction) -> None:
    from ..presets import PRESETS

    p = sub.add_parser(
        "train",
        help="train a model (default: the reference VAE on built-in MNIST)",
        description="Train a VAE and write a run folder (config, weights, metrics, pictures). "
        "Values come from --config, then --preset, then the flags given.",
    )
    p.add_argument("--preset", choices=list(PRESETS), help="start from a named configuration")
    p.add_argument("--config", type=Path, help="start from a config.json (e.g. a run's own)")
    p.add_argument(
        "--resume", type=Path, metavar="RUN", help="continue RUN from its last checkpoint"
    )
    p.add_argument("--out", type=Path, help="run folder (default runs/NAME, suffixed if taken)")
    p.add_argument("--name", help="run name (default vae-mnist)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="dataset name: mnist (built in), fashion-mnist")
    g.add_argument("--data-path", help="folder holding the dataset's files")
    g.add_argument(
        "--binarize", choices=["none", "dynamic"], help="dynamic: new Bernoulli draws per batch"
    )
    g.add_argument(
        "--limit-train", type=positive_int, metavar="N", help="use the first N training images"
    )
    g.add_argument(
        "--limit-test", type=positive_int, metavar="N", help="use the first N test images"
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--hidden", type=int_list, metavar="SIZES", help="hidden layer sizes, e.g. 512,256"
    )
    g.add_argument("--latent-dim", type=positive_int, metavar="D", help="latent dimensions")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int)
    g.add_argument("--batch-size", type=positive_int)
    g.add_argument("--lr", type=positive_float, help="Adam learning rate")
    g.add_argument("--seed", type=int)
    g.add_argument("--beta", type=non_negative_float, help="KL weight (beta-VAE); 1 is the ELBO")
    g.add_argument("--kl-warmup", type=non_negative_int, metavar="EPOCHS", help="ramp beta from 0")
    g.add_argument(
        "--checkpoint-every",
        type=non_negative_int,
        metavar="STEPS",
        help="also checkpoint every STEPS batches (0: end of each epoch only)",
    )
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument(
        "--precision", choices=["fp32", "bf16"], help="bf16: autocast the networks (losses in fp32)"
    )
    g.add_argument("--threads", type=non_negative_int, help="CPU threads (0: torch's default)")
    g.add_argument("--n-samples", type=positive_int, help="prior samples in samples.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(run_command=cmd_train)


def build_train_config(args: argparse.Namespace):
    from ..config import RunConfig
    from ..presets import preset

    if args.config:
        config = RunConfig.load(args.config)
    elif args.preset:
        config = preset(args.preset)
    else:
        config = RunConfig()
    if args.config and args.preset:
        raise ConfigError("give --config or --preset, not both")
    raw = config.to_dict()
    for flag, (section, key) in TRAIN_OVERRIDES.items():
        value = getattr(args, flag)
        if value is not None:
            (raw[section] if section else raw)[key] = value
    if args.dataset or args.data_path:
        raw["data"]["shape"] = None  # a different dataset may have another shape
    if args.name is None and args.dataset and raw["name"] == "vae-mnist":
        raw["name"] = f"vae-{args.dataset}"
    return RunConfig.from_dict(raw)


def cmd_train(args: argparse.Namespace) -> int:
    from ..train import train

    if args.resume:
        given = [f for f in TRAIN_OVERRIDES if f != "epochs" and getattr(args, f) is not None]
        if args.config or args.preset or args.out or given:
            raise ConfigError(
                "--resume continues a run with its own config; only --epochs may change"
            )
        config = None
        if args.epochs:
            from ..runs import RunFolder

            config = RunFolder(args.resume).load_config()
            config.train.epochs = args.epochs
        run = train(config, resume=args.resume, progress=not args.quiet)
    else:
        run = train(build_train_config(args), run_dir=args.out, progress=not args.quiet)
    final = run.final
    print(
        f"test -ELBO {final['test_neg_elbo']:.2f} nats per image "
        f"(reconstruction {final['test_recon']:.2f} + KL {final['test_kl']:.2f}; "
        f"{final['test_bits_per_dim']:.4f} bits/dim) after {final['epoch']} epochs"
    )
    if "warning" in final:
        print(f"warning: {final['warning']}")
    print(
        f"run folder: {run.path}  (samples.png, reconstructions.png, latent.png, loss_curves.png)"
    )
    return 0
