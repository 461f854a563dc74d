"""`vaekit compare`: train several models with one budget and tabulate them."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaekit.cli.args import add_quality_samples_argument, non_negative_int, wrote
from vaekit.cli.train import add_config_arguments, build_train_config
from vaekit.core.errors import ConfigError


def add_compare(sub: argparse._SubParsersAction) -> None:
    from vaekit.apps.compare import VARIANTS

    p = sub.add_parser(
        "compare",
        help="train several models on the same data and budget and compare them",
        description="Train (or reuse) one run per model under OUT from one base config "
        "(--preset/--config and the usual flags), evaluate each on the test set and write "
        "OUT/comparison.md, comparison.json and comparison.png.",
    )
    p.add_argument(
        "--models",
        required=True,
        metavar="NAMES",
        help=f"comma-separated, from: {', '.join(VARIANTS)}",
    )
    p.add_argument("--out", type=Path, default=Path("runs/compare"), help="default runs/compare")
    p.add_argument(
        "--iwae-k",
        type=non_negative_int,
        default=100,
        metavar="K",
        help="importance samples per test image for the NLL bound (0: skip; default 100)",
    )
    add_quality_samples_argument(p, "--quality-samples", "test images")
    p.add_argument("--no-quality", action="store_true", help="skip the sample-quality metrics")
    p.add_argument("--no-probes", action="store_true", help="skip the linear probe")
    add_config_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run_command=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from vaekit.apps.compare import compare

    if args.model is not None:
        raise ConfigError("compare takes --models (a list), not --model")
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    report = compare(
        names,
        args.out,
        build_train_config(args),
        iwae_k=args.iwae_k,
        n_samples=args.quality_samples,
        probes=not args.no_probes,
        quality=not args.no_quality,
        progress=not args.quiet,
    )
    print((args.out / "comparison.md").read_text(), end="")
    print(f"compared {len(names)} models in {report['seconds_total']:.0f} s")
    return wrote(report["files"] + report["trained_runs"])
