"""The `vaekit` command line: parse, call the Python API, print.

A user mistake (bad path, bad value, corrupt file) prints one line and exits 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError, VaekitError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def int_list(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 512,256, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


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
    "name": (None, "name"),
    "n_samples": (None, "n_samples"),
}


def add_train(sub: argparse._SubParsersAction) -> None:
    from .presets import PRESETS

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
    g.add_argument("--threads", type=non_negative_int, help="CPU threads (0: torch's default)")
    g.add_argument("--n-samples", type=positive_int, help="prior samples in samples.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(run_command=cmd_train)


def build_train_config(args: argparse.Namespace):
    from .config import RunConfig
    from .presets import preset

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
    from .train import train

    if args.resume:
        given = [f for f in TRAIN_OVERRIDES if f != "epochs" and getattr(args, f) is not None]
        if args.config or args.preset or args.out or given:
            raise ConfigError(
                "--resume continues a run with its own config; only --epochs may change"
            )
        config = None
        if args.epochs:
            from .runs import RunFolder

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


# --- sample / reconstruct / info ------------------------------------------------------------
def add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="draw images from the prior of a trained run",
        description="Decode n draws from the prior N(0, I) into a PNG grid.",
    )
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("-n", type=positive_int, default=64, help="number of samples (default 64)")
    p.add_argument("-o", "--output", type=Path, help="PNG file (default RUN/samples-N.png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(run_command=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from . import plots
    from .train import load

    model = load(args.run, device=args.device)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(args.seed)
    output = args.output or args.run / f"samples-{args.n}.png"
    _check_png(output)
    plots.save_grid(model.sample(args.n, generator=generator), output)
    print(f"wrote {output}")
    return 0


def add_reconstruct(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="reconstruct test images with a trained run",
        description="Encode test images, decode their posterior means, and "
        "write originals above reconstructions; prints the reconstruction error.",
    )
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("-n", type=positive_int, default=32, help="images in the picture (default 32)")
    p.add_argument("-o", "--output", type=Path, help="PNG file (default RUN/reconstructions.png)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run_command=cmd_reconstruct)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch

    from . import plots
    from .data import BatchIterator, load_data
    from .runs import RunFolder
    from .train import load

    model = load(args.run, device=args.device)
    device = next(model.parameters()).device
    test = load_data(RunFolder(args.run).load_config().data).test
    output = args.output or args.run / "reconstructions.png"
    _check_png(output)
    originals = test.x[: args.n].to(device)
    plots.save_reconstructions(originals, model.reconstruct(originals), output)
    squared_error = 0.0
    for x, _ in BatchIterator(test.x, None, 1000, shuffle=False):
        x = x.to(device)
        squared_error += (model.reconstruct(x) - x).square().sum().item()
    mse = squared_error / test.x.numel()
    with torch.no_grad():
        print(
            f"reconstruction MSE {mse:.5f} per pixel on [0,1] intensities ({len(test)} test images)"
        )
    print(f"wrote {output}")
    return 0


def add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="summarise a run folder",
        description="Print a run's configuration, size, progress and final metrics.",
    )
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run_command=cmd_info)


def run_summary(path: Path) -> dict[str, Any]:
    from .runs import RunFolder
    from .train import load

    run = RunFolder(path).require()
    config = run.load_config()
    metrics = run.read_metrics()
    model = load(path)
    return {
        "run": str(path),
        "preset": config.preset,
        "dataset": config.data.name,
        "model": f"{config.model.name} ({config.model.arch} {config.model.hidden}, z={config.model.latent_dim})",
        "likelihood": config.model.likelihood,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs_done": len(metrics),
        "epochs_planned": config.train.epochs,
        "final": metrics[-1] if metrics else None,
        "files": sorted(p.name for p in run.path.iterdir() if not p.name.startswith(".")),
    }


def cmd_info(args: argparse.Namespace) -> int:
    summary = run_summary(args.run)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for key in ("run", "preset", "dataset", "model", "likelihood", "parameters"):
        print(f"{key:12} {summary[key]}")
    print(f"{'epochs':12} {summary['epochs_done']}/{summary['epochs_planned']}")
    final = summary["final"]
    if final:
        print(
            f"{'test -ELBO':12} {final['test_neg_elbo']:.2f} nats/image (recon {final['test_recon']:.2f},"
            f" KL {final['test_kl']:.2f}), {final['test_bits_per_dim']:.4f} bits/dim,"
            f" active units {final['active_units']}"
        )
        if "warning" in final:
            print(f"{'warning':12} {final['warning']}")
    print(f"{'files':12} {', '.join(summary['files'])}")
    return 0


def _check_png(path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise ConfigError(f"{path}: output must be a .png file")


# --- entry point ----------------------------------------------------------------------------
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_train,
    add_sample,
    add_reconstruct,
    add_info,
]


def make_parser() -> Parser:
    from . import __version__

    parser = Parser(
        prog="vaekit", description="Train, evaluate and explore Variational Autoencoders."
    )
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    command = getattr(args, "run_command", None)
    if command is None:
        parser.print_help()
        return 2
    try:
        return command(args)
    except VaekitError as err:
        if args.debug:
            raise
        print(f"vaekit: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # disk full, permission denied, ...
        if args.debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"vaekit: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return 130
