"""`vaekit evaluate`: the numbers of a trained run, as a table and as evaluation.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaekit.cli.args import (
    MAX_SAMPLES,
    add_device_argument,
    add_quality_samples_argument,
    add_run_argument,
    comma_ints,
    positive_int,
    seed,
    thread_count,
)


def k_list(text: str) -> list[int]:
    """Importance-sample counts like 1,100,5000, each >= 1."""
    message = f"expected sample counts >= 1 like 1,100,5000, got {text!r}"
    return comma_ints(text, 1, message, message, MAX_SAMPLES)


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="ELBO, IWAE log-likelihood, bits/dim, active units, probes, sample quality",
        description="Evaluate a trained run on its dataset: -ELBO and its terms, the "
        "importance-weighted (IWAE) bound on the negative log-likelihood, bits/dim, KL per "
        "latent dimension and active units, reconstruction MSE, linear-probe and k-NN "
        "accuracy of the latent means, and sample quality (Frechet distance, precision, "
        "recall in the features of a classifier vaekit trains once per dataset). Prints a "
        "table and writes RUN/evaluation.json.",
    )
    add_run_argument(p)
    p.add_argument("--split", default="test", help="train, test, or valid where the data has one")
    p.add_argument(
        "--k",
        type=k_list,
        default=[5000],
        metavar="K[,K...]",
        help="importance samples per example for the IWAE bound; several values share one "
        "pass, e.g. 1,100,1000,5000 (default 5000)",
    )
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the first N examples")
    add_quality_samples_argument(p, "--samples", "evaluated")
    p.add_argument("--no-probes", action="store_true", help="skip the latent probes")
    p.add_argument("--no-quality", action="store_true", help="skip the sample-quality metrics")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report to FILE")
    p.add_argument("--seed", type=seed, default=0, help="seed of the posterior and prior draws")
    add_device_argument(p)
    p.add_argument(
        "--threads",
        type=thread_count,
        default=0,
        help="CPU threads (0: torch's default; 1 is faster on cores busy with other work)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run_command=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from vaekit.evaluation.run import EVALUATION_FILE, evaluate_run, format_report

    if args.threads:
        torch.set_num_threads(args.threads)
    report = evaluate_run(
        args.run,
        split=args.split,
        k=args.k,
        limit=args.limit,
        n_samples=args.samples,
        probes=not args.no_probes,
        quality=not args.no_quality,
        seed=args.seed,
        device=args.device,
        json_path=args.json,
        progress=not args.quiet,
    )
    print(format_report(report))
    written = [str(args.run / EVALUATION_FILE)] + ([str(args.json)] if args.json else [])
    print(f"wrote {', '.join(written)}")
    return 0
